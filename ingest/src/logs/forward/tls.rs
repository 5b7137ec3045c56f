//! TLS for the forward listener: loading the PEM certificate chain and private key into a
//! rustls acceptor. Owns the TLS setup only; the protocol above it is unchanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A loaded certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct ForwardTls(pub(super) TlsAcceptor);

impl std::fmt::Debug for ForwardTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardTls")
    }
}

impl ForwardTls {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ForwardTls, TlsError> {
        let pem_err = |path: &Path| {
            let path = path.to_owned();
            move |e: rustls::pki_types::pem::Error| TlsError::Pem {
                path,
                reason: e.to_string(),
            }
        };
        let certs = CertificateDer::pem_file_iter(cert_file)
            .map_err(pem_err(cert_file))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(cert_file))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(cert_file.to_owned()));
        }
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(pem_err(key_file))?;
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        Ok(ForwardTls(TlsAcceptor::from(Arc::new(config))))
    }
}
