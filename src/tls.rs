//! TLS client settings shared by everything p2p connects to over TLS: the
//! relay (wss://), NATS (tls://) and TURN servers (turns:).

use std::path::Path;
use std::sync::Arc;

/// The web's root certificates, plus those of `ca_file` (PEM) if given:
/// how a server with a self-signed certificate is trusted.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |e: &dyn std::fmt::Display| {
            format!("bad certificate in --ca-file {}: {e}", path.display())
        };
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
        for cert in certs {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
