//! `tls_server_config` to a rustls server configuration (ring provider): certificate and key,
//! client certificate policy, versions, TLS 1.2 cipher suites and key exchange groups, with
//! exporter-toolkit's meanings and error texts where Go's TLS has an equivalent.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, NamedGroup, ServerConfig, SignatureScheme};

use super::file::TlsServerConfig;

/// One rustls configuration per ALPN offer: the HTTP listeners offer HTTP/2 only when
/// `http_server_config.http2` (as exporter-toolkit), the gRPC listener always, the Postgres
/// listener `postgresql` (what libpq 17 asks for; older clients ask for none).
#[derive(Clone)]
pub struct TlsConfigs {
    pub http: Arc<ServerConfig>,
    pub grpc: Arc<ServerConfig>,
    pub postgres: Arc<ServerConfig>,
}

/// None when the section turns nothing on (exporter-toolkit's "TLS is disabled").
pub fn build(c: &TlsServerConfig, http2: bool) -> Result<Option<TlsConfigs>, String> {
    if !c.is_enabled() {
        return Ok(None);
    }
    let provider = Arc::new(CryptoProvider {
        cipher_suites: cipher_suites(&c.cipher_suites)?,
        kx_groups: kx_groups(&c.curve_preferences)?,
        ..rustls::crypto::ring::default_provider()
    });
    let versions = versions(c.min_version.as_deref(), c.max_version.as_deref())?;
    let (certs, key) = certificate(c)?;
    let verifier = client_verifier(c, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("failed to load X509KeyPair: {e}"))?;
    config.ignore_client_order = c.prefer_server_cipher_suites.unwrap_or(true);
    let mut grpc = config.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let mut postgres = config.clone();
    postgres.alpn_protocols = vec![b"postgresql".to_vec()];
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Some(TlsConfigs {
        http: Arc::new(config),
        grpc: Arc::new(grpc),
        postgres: Arc::new(postgres),
    }))
}

fn pem_text(inline: &str, file: &Path, key: &str) -> Result<Vec<u8>, String> {
    if file.as_os_str().is_empty() {
        return Ok(inline.as_bytes().to_vec());
    }
    std::fs::read(file).map_err(|e| format!("failed to read {key} ({}): {e}", file.display()))
}

fn certificate(
    c: &TlsServerConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if c.cert.is_empty() && c.cert_file.as_os_str().is_empty() {
        return Err("missing one of cert or cert_file".to_owned());
    }
    if c.key.is_empty() && c.key_file.as_os_str().is_empty() {
        return Err("missing one of key or key_file".to_owned());
    }
    let cert_pem = pem_text(&c.cert, &c.cert_file, "cert_file")?;
    let key_pem = pem_text(&c.key, &c.key_file, "key_file")?;
    let bad = |e: rustls::pki_types::pem::Error| format!("failed to load X509KeyPair: {e}");
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(
            "failed to load X509KeyPair: tls: failed to find any PEM data in certificate input"
                .to_owned(),
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(bad)?;
    Ok((certs, key))
}

fn client_verifier(
    c: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let has_ca = !c.client_ca.is_empty() || !c.client_ca_file.as_os_str().is_empty();
    let roots = || -> Result<Arc<rustls::RootCertStore>, String> {
        let pem = pem_text(&c.client_ca, &c.client_ca_file, "client_ca_file")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("client CA: {e}"))?;
            roots.add(cert).map_err(|e| format!("client CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err("client CA: no certificate found".to_owned());
        }
        Ok(Arc::new(roots))
    };
    let verify = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        if !has_ca {
            return Err(format!(
                "client_auth_type {} needs client_ca_file (or client_ca)",
                c.client_auth_type
            ));
        }
        let b = WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build().map_err(|e| e.to_string())
    };
    let any = |mandatory: bool| -> Arc<dyn ClientCertVerifier> {
        Arc::new(AnyClientCert {
            mandatory,
            provider: provider.clone(),
        })
    };
    match c.client_auth_type.as_str() {
        "" | "NoClientCert" if has_ca => {
            Err("client CA's have been configured without a Client Auth Policy".to_owned())
        }
        "" | "NoClientCert" => Ok(WebPkiClientVerifier::no_client_auth()),
        "RequestClientCert" => Ok(any(false)),
        // The second name is exporter-toolkit's older spelling, still accepted there.
        "RequireAnyClientCert" | "RequireClientCert" => Ok(any(true)),
        "VerifyClientCertIfGiven" => verify(true),
        "RequireAndVerifyClientCert" => verify(false),
        other => Err(format!("invalid ClientAuth: {other}")),
    }
}

fn version(name: &str) -> Result<u8, String> {
    match name {
        "TLS12" => Ok(2),
        "TLS13" => Ok(3),
        "TLS10" | "TLS11" => Err(format!(
            "TLS version {name} is not supported by novamon (TLS12 and TLS13 are)"
        )),
        other => Err(format!("unknown TLS version: {other}")),
    }
}

/// Go's defaults: TLS 1.2 to 1.3.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let min = min.map(version).transpose()?.unwrap_or(2);
    let max = max.map(version).transpose()?.unwrap_or(3);
    let out: Vec<_> = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();
    if out.is_empty() {
        return Err("min_version is above max_version".to_owned());
    }
    Ok(out)
}

/// As Go: the list restricts TLS 1.2's suites only; TLS 1.3's are always offered.
fn cipher_suites(names: &[String]) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let all = rustls::crypto::ring::default_provider().cipher_suites;
    if names.is_empty() {
        return Ok(all);
    }
    let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    for n in names {
        if !all.iter().any(|s| &name(s) == n) {
            return Err(format!("unknown cipher: {n} (or not supported by novamon)"));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| s.tls13().is_some() || names.contains(&name(s)))
        .collect())
}

fn kx_groups(
    names: &[String],
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, String> {
    let all = rustls::crypto::ring::default_provider().kx_groups;
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            let group = match n.as_str() {
                "X25519" => NamedGroup::X25519,
                "CurveP256" => NamedGroup::secp256r1,
                "CurveP384" => NamedGroup::secp384r1,
                "CurveP521" => return Err("curve CurveP521 is not supported by novamon".to_owned()),
                other => return Err(format!("unknown curve: {other}")),
            };
            all.iter()
                .find(|g| g.name() == group)
                .copied()
                .ok_or_else(|| format!("curve {n} is not supported by novamon"))
        })
        .collect()
}

/// Go's RequestClientCert and RequireAnyClientCert: a client certificate is asked for (and
/// for the latter required) but not verified against any CA; the handshake signature still
/// proves the client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_suites_and_client_auth_are_checked() {
        assert_eq!(versions(None, None).unwrap().len(), 2);
        assert_eq!(versions(Some("TLS13"), None).unwrap().len(), 1);
        assert_eq!(
            versions(Some("TLS14"), None).unwrap_err(),
            "unknown TLS version: TLS14"
        );
        assert!(versions(Some("TLS10"), None)
            .unwrap_err()
            .contains("not supported"));
        assert!(versions(Some("TLS13"), Some("TLS12")).is_err());
        let only = cipher_suites(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()]).unwrap();
        assert_eq!(
            only.iter().filter(|s| s.tls13().is_none()).count(),
            1,
            "one TLS 1.2 suite"
        );
        assert!(only.iter().any(|s| s.tls13().is_some()));
        assert!(cipher_suites(&["TLS_RSA_WITH_RC4_128_SHA".to_owned()])
            .unwrap_err()
            .starts_with("unknown cipher: TLS_RSA_WITH_RC4_128_SHA"));
        assert_eq!(kx_groups(&["X25519".to_owned()]).unwrap().len(), 1);
        assert!(kx_groups(&["P999".to_owned()]).is_err());

        let mut c = TlsServerConfig {
            client_ca_file: "/x".into(),
            ..Default::default()
        };
        let p = Arc::new(rustls::crypto::ring::default_provider());
        assert_eq!(
            client_verifier(&c, &p).unwrap_err(),
            "client CA's have been configured without a Client Auth Policy"
        );
        c.client_auth_type = "Sometimes".into();
        assert_eq!(
            client_verifier(&c, &p).unwrap_err(),
            "invalid ClientAuth: Sometimes"
        );
        c.client_ca_file = "".into();
        c.client_auth_type = "RequireAndVerifyClientCert".into();
        assert!(client_verifier(&c, &p)
            .unwrap_err()
            .contains("needs client_ca_file"));
        c.client_auth_type = "RequireAnyClientCert".into();
        assert!(client_verifier(&c, &p).unwrap().client_auth_mandatory());
    }

    #[test]
    fn cert_and_key_are_required_and_read() {
        let c = TlsServerConfig {
            client_auth_type: "NoClientCert".into(),
            ..Default::default()
        };
        assert_eq!(
            build(&c, true).err().unwrap(),
            "missing one of cert or cert_file"
        );
        let c = TlsServerConfig {
            cert_file: "/nonexistent/c.pem".into(),
            key_file: "/nonexistent/k.pem".into(),
            ..Default::default()
        };
        assert!(build(&c, true)
            .err()
            .unwrap()
            .starts_with("failed to read cert_file (/nonexistent/c.pem): "));
        assert!(build(&TlsServerConfig::default(), true).unwrap().is_none());
    }
}
