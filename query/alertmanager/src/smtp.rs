//! A minimal SMTP client for email notifications: plain SMTP to a relay (EHLO, MAIL, RCPT,
//! DATA), no TLS and no authentication (the config loader rejects settings that need them).
//! Owns the conversation only; the message is rendered by `notify`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::notify::SendError;

pub(crate) async fn send(
    smarthost: &str,
    hello: &str,
    from: &str,
    to: &[String],
    message: &str,
    timeout: Duration,
) -> Result<(), SendError> {
    tokio::time::timeout(timeout, conversation(smarthost, hello, from, to, message))
        .await
        .unwrap_or_else(|_| {
            Err(SendError {
                retry: true,
                msg: format!("SMTP {smarthost}: timed out"),
            })
        })
}

async fn conversation(
    smarthost: &str,
    hello: &str,
    from: &str,
    to: &[String],
    message: &str,
) -> Result<(), SendError> {
    let io = |e: std::io::Error| SendError {
        retry: true,
        msg: format!("SMTP {smarthost}: {e}"),
    };
    let stream = TcpStream::connect(smarthost).await.map_err(io)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    expect(&mut r, 220, smarthost).await?;
    let mut cmds = vec![
        format!("EHLO {hello}"),
        format!("MAIL FROM:<{}>", address(from)),
    ];
    cmds.extend(to.iter().map(|t| format!("RCPT TO:<{}>", address(t))));
    for cmd in cmds {
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .map_err(io)?;
        expect(&mut r, 250, smarthost).await?;
    }
    w.write_all(b"DATA\r\n").await.map_err(io)?;
    expect(&mut r, 354, smarthost).await?;
    // Dot-stuffing: a line starting with '.' gets another.
    let body = message.replace("\r\n.", "\r\n..");
    let body = body
        .strip_prefix('.')
        .map_or(body.clone(), |b| format!("..{b}"));
    w.write_all(body.as_bytes()).await.map_err(io)?;
    w.write_all(b"\r\n.\r\n").await.map_err(io)?;
    expect(&mut r, 250, smarthost).await?;
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// The bare address of `Name <addr>` or `addr`.
fn address(s: &str) -> &str {
    match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s.trim(),
    }
}

/// Reads one (possibly multi-line) reply; a code other than `want` is an error, retried
/// only for 4xx (transient) replies.
async fn expect<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    want: u16,
    host: &str,
) -> Result<(), SendError> {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.map_err(|e| SendError {
            retry: true,
            msg: format!("SMTP {host}: {e}"),
        })?;
        if n == 0 {
            return Err(SendError {
                retry: true,
                msg: format!("SMTP {host}: connection closed"),
            });
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        if code == want {
            return Ok(());
        }
        return Err(SendError {
            retry: (400..500).contains(&code),
            msg: format!("SMTP {host}: unexpected reply {}", line.trim_end()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted SMTP server on a real socket that records what the client sent.
    #[tokio::test]
    async fn speaks_smtp_to_a_relay() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 relay ready\r\n").await.unwrap();
            let mut got = String::new();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                got.push_str(&line);
                let reply: &[u8] = if in_data {
                    if line != ".\r\n" {
                        continue;
                    }
                    in_data = false;
                    b"250 queued\r\n"
                } else if line.starts_with("EHLO") {
                    b"250-relay\r\n250 8BITMIME\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    b"354 go on\r\n"
                } else if line.starts_with("QUIT") {
                    break;
                } else {
                    b"250 ok\r\n"
                };
                w.write_all(reply).await.unwrap();
            }
            got
        });
        let to = vec!["ops@example.org".to_owned()];
        let msg = "Subject: hi\r\n\r\nline\r\n.dot";
        send(
            &addr,
            "nm",
            "Alerts <am@example.org>",
            &to,
            msg,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.msg));
        let got = server.await.unwrap();
        assert!(
            got.starts_with(
                "EHLO nm\r\nMAIL FROM:<am@example.org>\r\nRCPT TO:<ops@example.org>\r\nDATA\r\n"
            ),
            "{got}"
        );
        assert!(got.contains("\r\n..dot\r\n.\r\n"), "dot-stuffed: {got}");
    }
}
