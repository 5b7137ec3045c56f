//! The forward protocol's handshake: the server's HELO (a fresh nonce, and a fresh auth salt
//! when users are configured), checking the client's PING (shared-key digest, then username
//! and password digest), and the PONG answer. Owns the message shapes and digests only.

use rmpv::Value;
use sha2::{Digest, Sha512};

/// A user allowed in by the handshake's user/password authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardUser {
    pub username: String,
    pub password: String,
}

pub(crate) struct Handshake {
    nonce: Vec<u8>,
    /// Empty when no user authentication is asked for: HELO then tells clients so.
    auth_salt: Vec<u8>,
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

fn random(n: usize) -> Result<Vec<u8>, getrandom::Error> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)?;
    Ok(b)
}

impl Handshake {
    pub(crate) fn new(user_auth: bool) -> Result<Handshake, getrandom::Error> {
        Ok(Handshake {
            nonce: random(16)?,
            auth_salt: if user_auth { random(16)? } else { Vec::new() },
        })
    }

    #[cfg(test)]
    pub(crate) fn with_salts(nonce: &[u8], auth_salt: &[u8]) -> Handshake {
        Handshake {
            nonce: nonce.to_vec(),
            auth_salt: auth_salt.to_vec(),
        }
    }

    /// `["HELO", {"nonce": <bin>, "auth": <bin>, "keepalive": true}]`
    pub(crate) fn helo(&self) -> Value {
        Value::Array(vec![
            Value::from("HELO"),
            Value::Map(vec![
                (Value::from("nonce"), Value::Binary(self.nonce.clone())),
                (Value::from("auth"), Value::Binary(self.auth_salt.clone())),
                (Value::from("keepalive"), Value::Boolean(true)),
            ]),
        ])
    }

    /// Checks `["PING", client_hostname, shared_key_salt, hex(sha512(salt+hostname+nonce+key)),
    /// username, hex(sha512(auth_salt+username+password))]` and builds `["PONG", ok, reason,
    /// server_hostname, hex(sha512(salt+server_hostname+nonce+key))]`. With `users` empty the
    /// last two fields are ignored, as Fluentd's in_forward does without `user_auth`.
    pub(crate) fn answer(
        &self,
        ping: &Value,
        shared_key: &str,
        users: &[ForwardUser],
        server_hostname: &str,
    ) -> PingOutcome {
        // A refusal names no host and proves no key, as Fluentd's in_forward answers.
        let pong = |ok: bool, reason: &str, salt: &[u8]| {
            let (host, digest) = if ok {
                let digest = hex_sha512(&[
                    salt,
                    server_hostname.as_bytes(),
                    &self.nonce,
                    shared_key.as_bytes(),
                ]);
                (server_hostname, digest)
            } else {
                ("", String::new())
            };
            Value::Array(vec![
                Value::from("PONG"),
                Value::Boolean(ok),
                Value::from(reason),
                Value::from(host),
                Value::from(digest),
            ])
        };
        let reject = |reason: &str, salt: &[u8]| {
            PingOutcome::Rejected(pong(false, reason, salt), reason.to_owned())
        };
        let fields = ping.as_array().map(Vec::as_slice).unwrap_or_default();
        let text = |i: usize| -> Option<&[u8]> {
            match fields.get(i)? {
                Value::String(s) => Some(s.as_bytes()),
                Value::Binary(b) => Some(b),
                _ => None,
            }
        };
        if fields.len() != 6 || text(0) != Some(b"PING".as_slice()) {
            return reject("invalid ping message", b"");
        }
        let (Some(hostname), Some(salt), Some(digest)) = (text(1), text(2), text(3)) else {
            return reject("invalid ping message", b"");
        };
        let expected = hex_sha512(&[salt, hostname, &self.nonce, shared_key.as_bytes()]);
        if digest != expected.as_bytes() {
            return reject("shared_key mismatch", salt);
        }
        if !users.is_empty() {
            let (username, password_digest) = (text(4).unwrap_or(b""), text(5).unwrap_or(b""));
            let known = users.iter().any(|u| {
                u.username.as_bytes() == username
                    && hex_sha512(&[
                        &self.auth_salt,
                        u.username.as_bytes(),
                        u.password.as_bytes(),
                    ])
                    .as_bytes()
                        == password_digest
            });
            if !known {
                return reject("username/password mismatch", salt);
            }
        }
        PingOutcome::Accepted(pong(true, "", salt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(nonce: &[u8], key: &str, user: &str, password_digest: &str) -> Value {
        let digest = hex_sha512(&[b"salt", b"client", nonce, key.as_bytes()]);
        Value::Array(vec![
            Value::from("PING"),
            Value::from("client"),
            Value::from("salt"),
            Value::from(digest),
            Value::from(user),
            Value::from(password_digest),
        ])
    }

    fn users() -> Vec<ForwardUser> {
        vec![
            ForwardUser {
                username: "ann".into(),
                password: "pw1".into(),
            },
            ForwardUser {
                username: "bob".into(),
                password: "pw2".into(),
            },
        ]
    }

    #[test]
    fn a_correct_digest_is_accepted_and_answered_with_the_servers_digest() {
        let h = Handshake::with_salts(b"0123456789abcdef", b"");
        let PingOutcome::Accepted(pong) =
            h.answer(&ping(b"0123456789abcdef", "k", "", ""), "k", &[], "srv")
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
        let h = Handshake::with_salts(b"n", b"");
        let PingOutcome::Rejected(pong, reason) =
            h.answer(&ping(b"n", "wrong", "", ""), "k", &[], "srv")
        else {
            panic!("accepted")
        };
        assert_eq!(reason, "shared_key mismatch");
        let pong = pong.as_array().unwrap();
        assert_eq!(
            (&pong[1], pong[3].as_str(), pong[4].as_str()),
            (&Value::Boolean(false), Some(""), Some(""))
        );
        let PingOutcome::Rejected(_, reason) = h.answer(&Value::from(1), "k", &[], "s") else {
            panic!("accepted")
        };
        assert_eq!(reason, "invalid ping message");
        let mut short = ping(b"n", "k", "", "");
        if let Value::Array(a) = &mut short {
            a.truncate(4);
        }
        assert!(matches!(
            h.answer(&short, "k", &[], "s"),
            PingOutcome::Rejected(_, r) if r == "invalid ping message"
        ));
    }

    #[test]
    fn helo_offers_the_auth_salt_only_when_users_are_configured() {
        let auth = |h: &Handshake| {
            h.helo().as_array().unwrap()[1].as_map().unwrap()[1]
                .1
                .clone()
        };
        assert_eq!(auth(&Handshake::new(false).unwrap()), Value::Binary(vec![]));
        let Value::Binary(salt) = auth(&Handshake::new(true).unwrap()) else {
            panic!("auth is not binary")
        };
        assert_eq!(salt.len(), 16);
    }

    #[test]
    fn users_must_send_sha512_of_auth_salt_username_password() {
        let h = Handshake::with_salts(b"n", b"AS");
        let digest = |u: &str, p: &str| hex_sha512(&[b"AS", u.as_bytes(), p.as_bytes()]);
        for (user, pd, ok) in [
            ("ann", digest("ann", "pw1"), true),
            ("bob", digest("bob", "pw2"), true),
            ("ann", digest("ann", "pw2"), false),
            ("eve", digest("eve", "pw1"), false),
            ("", String::new(), false),
            // The digest is over the salt this server sent, not any other.
            ("ann", hex_sha512(&[b"XX", b"ann", b"pw1"]), false),
        ] {
            let out = h.answer(&ping(b"n", "k", user, &pd), "k", &users(), "srv");
            match out {
                PingOutcome::Accepted(_) => assert!(ok, "{user} accepted"),
                PingOutcome::Rejected(pong, reason) => {
                    assert!(!ok, "{user} rejected: {reason}");
                    assert_eq!(reason, "username/password mismatch");
                    assert_eq!(
                        pong.as_array().unwrap()[2].as_str(),
                        Some("username/password mismatch")
                    );
                }
            }
        }
        // The shared key is checked first, whatever the user sends.
        let out = h.answer(
            &ping(b"n", "bad", "ann", &digest("ann", "pw1")),
            "k",
            &users(),
            "srv",
        );
        assert!(matches!(out, PingOutcome::Rejected(_, r) if r == "shared_key mismatch"));
    }
}
