//! The forward protocol's shared-key handshake: the server's HELO (a fresh nonce), checking
//! the client's PING digest, and the PONG answer. Owns the message shapes and digests only;
//! user/password authentication is not offered (HELO's `auth` salt is empty).

use rmpv::Value;
use sha2::{Digest, Sha512};

pub(crate) struct Handshake {
    nonce: Vec<u8>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum PingOutcome {
    /// The PONG to send; the connection may carry events.
    Accepted(Value),
    /// The PONG to send (with the reason) before closing.
    Rejected(Value, String),
}

fn hex_sha512(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Handshake {
    pub(crate) fn new() -> Result<Handshake, getrandom::Error> {
        let mut nonce = vec![0u8; 16];
        getrandom::fill(&mut nonce)?;
        Ok(Handshake { nonce })
    }

    #[cfg(test)]
    pub(crate) fn with_nonce(nonce: &[u8]) -> Handshake {
        Handshake {
            nonce: nonce.to_vec(),
        }
    }

    /// `["HELO", {"nonce": <bin>, "auth": <bin>, "keepalive": true}]`
    pub(crate) fn helo(&self) -> Value {
        Value::Array(vec![
            Value::from("HELO"),
            Value::Map(vec![
                (Value::from("nonce"), Value::Binary(self.nonce.clone())),
                (Value::from("auth"), Value::Binary(Vec::new())),
                (Value::from("keepalive"), Value::Boolean(true)),
            ]),
        ])
    }

    /// Checks `["PING", client_hostname, shared_key_salt, hex(sha512(salt+hostname+nonce+key)),
    /// username, password_digest]` and builds `["PONG", ok, reason, server_hostname,
    /// hex(sha512(salt+server_hostname+nonce+key))]`.
    pub(crate) fn answer(
        &self,
        ping: &Value,
        shared_key: &str,
        server_hostname: &str,
    ) -> PingOutcome {
        let pong = |ok: bool, reason: &str, salt: &[u8]| {
            let digest = if ok {
                hex_sha512(&[
                    salt,
                    server_hostname.as_bytes(),
                    &self.nonce,
                    shared_key.as_bytes(),
                ])
            } else {
                String::new()
            };
            Value::Array(vec![
                Value::from("PONG"),
                Value::Boolean(ok),
                Value::from(reason),
                Value::from(server_hostname),
                Value::from(digest),
            ])
        };
        let fields = ping.as_array().map(Vec::as_slice).unwrap_or_default();
        let text = |i: usize| -> Option<&[u8]> {
            match fields.get(i)? {
                Value::String(s) => Some(s.as_bytes()),
                Value::Binary(b) => Some(b),
                _ => None,
            }
        };
        if fields.len() < 4 || text(0) != Some(b"PING".as_slice()) {
            let reason = "expected PING".to_owned();
            return PingOutcome::Rejected(pong(false, &reason, b""), reason);
        }
        let (Some(hostname), Some(salt), Some(digest)) = (text(1), text(2), text(3)) else {
            let reason = "malformed PING".to_owned();
            return PingOutcome::Rejected(pong(false, &reason, b""), reason);
        };
        let expected = hex_sha512(&[salt, hostname, &self.nonce, shared_key.as_bytes()]);
        if digest != expected.as_bytes() {
            let reason = "shared_key mismatch".to_owned();
            return PingOutcome::Rejected(pong(false, &reason, salt), reason);
        }
        PingOutcome::Accepted(pong(true, "", salt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ping(nonce: &[u8], key: &str) -> Value {
        let digest = hex_sha512(&[b"salt", b"client", nonce, key.as_bytes()]);
        Value::Array(vec![
            Value::from("PING"),
            Value::from("client"),
            Value::from("salt"),
            Value::from(digest),
            Value::from(""),
            Value::from(""),
        ])
    }

    #[test]
    fn a_correct_digest_is_accepted_and_answered_with_the_servers_digest() {
        let h = Handshake::with_nonce(b"0123456789abcdef");
        let PingOutcome::Accepted(pong) = h.answer(&ping(b"0123456789abcdef", "k"), "k", "srv")
        else {
            panic!("rejected")
        };
        let a = pong.as_array().unwrap();
        assert_eq!(a[0].as_str(), Some("PONG"));
        assert_eq!(a[1], Value::Boolean(true));
        assert_eq!(a[3].as_str(), Some("srv"));
        let want = hex_sha512(&[b"salt", b"srv", b"0123456789abcdef", b"k"]);
        assert_eq!(a[4].as_str(), Some(want.as_str()));
        assert_eq!(want.len(), 128);
    }

    #[test]
    fn a_wrong_key_or_not_a_ping_is_rejected_with_a_reason() {
        let h = Handshake::with_nonce(b"n");
        let PingOutcome::Rejected(pong, reason) = h.answer(&ping(b"n", "wrong"), "k", "srv") else {
            panic!("accepted")
        };
        assert_eq!(reason, "shared_key mismatch");
        assert_eq!(pong.as_array().unwrap()[1], Value::Boolean(false));
        assert!(matches!(
            h.answer(&Value::from(1), "k", "s"),
            PingOutcome::Rejected(_, _)
        ));
        let helo = h.helo();
        assert_eq!(helo.as_array().unwrap()[0].as_str(), Some("HELO"));
    }
}
