//! End-to-end benchmark support: a node-exporter-like series generator ([`generator`]) and a
//! remote-write load sender ([`load`]), shared by the `remote_write_load` and `ingest_compare`
//! binaries and the criterion benches. Sends only to loopback targets the caller names.

pub mod generator;
pub mod load;
pub mod log_records;
pub mod peers;
pub mod targets;

/// reqwest is built with `rustls-no-provider` in this workspace (the query crate picks ring for
/// its notifications), so a client panics unless a crypto provider is installed first. Every
/// benchmark binary calls this at the top of `main`.
pub fn install_tls_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Refuses any URL whose host is not a loopback address: load is only ever sent to this machine.
pub fn require_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(loopback, "{url}: load may only target loopback addresses");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_urls_are_accepted() {
        for ok in [
            "http://127.0.0.1:9090/api/v1/write",
            "http://localhost:1/x",
            "http://[::1]:9/w",
            "http://127.5.0.1/",
        ] {
            assert!(super::require_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:9090/api/v1/write",
            "http://example.com/",
            "https://127.0.0.1/",
            "http://192.168.1.1",
        ] {
            assert!(super::require_loopback(bad).is_err(), "{bad}");
        }
    }
}
