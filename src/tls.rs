//! TLS on the HTTP and gRPC ports (rustls with ring; no OpenSSL), with
//! optional client certificates (mutual TLS), and certificates re-read
//! when their files change, so that a rotation needs no restart.
//!
//! The certificate and key are held behind an `ArcSwap` that every
//! handshake reads; a thread looks at the files' modification times every
//! two seconds and swaps in the new pair once it loads (a pair that does
//! not load is logged and the old one kept). The client CA of mutual TLS
//! is read at start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
    /// The metrics port too (`--tls-metrics`), with the same certificate
    /// and client CA.
    pub metrics: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The acceptors of both ports, sharing one certificate.
#[derive(Clone)]
pub struct Tls {
    pub http: tokio_rustls::TlsAcceptor,
    pub grpc: tokio_rustls::TlsAcceptor,
}

struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("the private key {} cannot sign: {e}", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(pair)
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Tls {
    /// Loads the certificate (failing start-up with a message naming the
    /// file when it does not load) and starts watching its files.
    pub fn new(settings: &TlsSettings) -> Result<Tls, TlsError> {
        let pair = load(&settings.cert, &settings.key).map_err(TlsError)?;
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(pair),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, TlsError> {
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError(e.to_string()))?;
            let builder = match &settings.client_ca {
                None => builder.with_no_client_auth(),
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(ca)
                        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            TlsError(format!("cannot read the client CA {}: {e}", ca.display()))
                        })?;
                    for c in certs {
                        roots
                            .add(c)
                            .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
                    }
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
                    builder.with_client_cert_verifier(verifier)
                }
            };
            let mut config = builder.with_cert_resolver(resolver.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        let tls = Tls {
            http: tokio_rustls::TlsAcceptor::from(config(&[b"h2", b"http/1.1"])?),
            grpc: tokio_rustls::TlsAcceptor::from(config(&[b"h2"])?),
        };
        watch(Arc::downgrade(&resolver), settings.clone());
        Ok(tls)
    }
}

/// Re-reads the certificate and key when either file changes; ends when
/// the acceptors are gone.
fn watch(resolver: Weak<Resolver>, settings: TlsSettings) {
    let spawned = std::thread::Builder::new()
        .name("tls-watch".into())
        .spawn(move || {
            let paths = [settings.cert.as_path(), settings.key.as_path()];
            let mut seen = modified(&paths);
            loop {
                std::thread::sleep(Duration::from_secs(2));
                let Some(resolver) = resolver.upgrade() else {
                    return;
                };
                let now = modified(&paths);
                if now == seen {
                    continue;
                }
                match load(&settings.cert, &settings.key) {
                    Ok(pair) => {
                        resolver.current.store(Arc::new(pair));
                        seen = now;
                        tracing::info!(cert = %settings.cert.display(), "TLS certificate reloaded");
                    }
                    // Half-written (a key and its certificate are rarely
                    // replaced at the same instant): tried again next time.
                    Err(reason) => {
                        tracing::warn!(%reason, "TLS certificate changed but does not load; keeping the current one")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the TLS certificate for changes");
    }
}
