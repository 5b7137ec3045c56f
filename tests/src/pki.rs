//! Certificates for the TLS tests, made with the openssl CLI: a CA, and a server and a client
//! certificate it signed, in a directory of the test's own, and the web config file that
//! serves them.

use std::path::{Path, PathBuf};

/// `openssl req`'s arguments for a new unencrypted P-256 key.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA (`ca.crt`), a server certificate for 127.0.0.1 and localhost (`server.crt`,
/// `server.key`) and a client certificate (`client.crt`, `client.key`), all signed by the CA.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let openssl = |args: &[&str]| crate::openssl(dir, args);
        openssl(
            &[
                &["req", "-x509"],
                &NEW_KEY[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test-ca",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
            let (key, csr, subject) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("/CN={name}"),
            );
            openssl(
                &[
                    &["req"],
                    &NEW_KEY[..],
                    &["-keyout", &key, "-out", &csr, "-subj", &subject],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                ext,
            ]);
        }
        Pki {
            dir: dir.to_owned(),
        }
    }

    /// A file's path, as a command-line argument.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A web config file beside the certificates serving TLS with the server certificate,
    /// then `rest` (more `tls_server_config` keys, indented, or other sections).
    pub fn web_config(&self, rest: &str) -> PathBuf {
        let web = self.dir.join("web.yml");
        std::fs::write(
            &web,
            format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{rest}"),
        )
        .unwrap();
        web
    }
}
