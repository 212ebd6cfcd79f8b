//! TLS trust for a registry with a `ca_file`: the system's roots plus the
//! file's certificates as trust anchors, and — as curl, skopeo and docker
//! accept — a certificate in the file that the server presents as its own
//! (a self-signed certificate made as Docker's documentation shows, with
//! `CA:TRUE`) is trusted as exactly that certificate: pinned by its bytes,
//! still checked against the registry's host name, the handshake still
//! signed by its key. And the words for TLS failures a person can act on.

use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The client config for a registry whose `ca_file` holds `ca_pem`, with
/// an optional client certificate chain and key (PEM). ALPN offers HTTP/2
/// and HTTP/1.1, as reqwest's own config does.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let pinned: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not PEM certificates: {e}"))?;
    if pinned.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots too (a redirect to object storage needs them);
    // ones it cannot parse are skipped, as reqwest does.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for cert in &pinned {
        // A certificate webpki cannot take as an anchor may still be pinned.
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("cannot be used as trust anchors: {e}"))?;
    let verifier = Arc::new(Pinning { inner, pinned });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client_cert is not PEM certificates: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("client_key is not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert/client_key do not go together: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// webpki's verdict, except that a server certificate that is byte for
/// byte one of `pinned` is trusted when it names the host.
#[derive(Debug)]
struct Pinning {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Pinning {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(error)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)
                    .map_err(|_| error.clone())?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(error) => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS failure in an error chain, if there is one.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's source() skips the error it wraps: look inside.
        cause = match error.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => error.source(),
            },
            None => error.source(),
        };
    }
    None
}

/// What went wrong in a TLS handshake, in words with the fix, when the
/// error chain holds a TLS failure; `None` for any other failure.
pub fn tls_problem(error: &(dyn std::error::Error + 'static), registry: &str) -> Option<String> {
    tls_error(error).map(|tls| describe(tls, registry))
}

/// Whether the server spoke TLS and its certificate was refused (so it is
/// no plain-HTTP server to fall back to).
pub fn certificate_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(tls_error(error), Some(rustls::Error::InvalidCertificate(_)))
}

fn describe(error: &rustls::Error, registry: &str) -> String {
    use rustls::CertificateError as C;
    let set = format!("[registries.\"{registry}\"]");
    match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "its TLS certificate is not signed by a CA ferry trusts: set ca_file in {set} to the CA's certificate (or to the registry's own self-signed certificate), or insecure = true if it serves plain HTTP"
        ),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "its TLS certificate has expired: renew it on the registry".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "its TLS certificate is not valid yet (check both clocks)".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("its TLS certificate does not name {registry}: address the registry by a name the certificate lists, or reissue it with that name")
        }
        rustls::Error::InvalidCertificate(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => format!(
            "its TLS certificate is a CA certificate used as the server's own: set ca_file in {set} to exactly that certificate to trust it"
        ),
        rustls::Error::InvalidCertificate(other) => {
            format!("its TLS certificate was refused ({other:?}): check ca_file in {set}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "it does not speak TLS on this port (a plain-HTTP registry?): set insecure = true in {set}"
        ),
        other => format!("the TLS handshake failed: {other}"),
    }
}
