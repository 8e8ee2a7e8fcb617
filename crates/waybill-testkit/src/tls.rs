//! TLS for test servers: a throwaway certificate authority that issues a
//! server certificate for the loopback address (and client certificates),
//! and a router served over TLS with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A test certificate authority, written to a directory of its own so a
/// process under test can be given file paths (`ca.pem`, `server.pem`,
/// `client.pem` and their `-key.pem`).
pub struct TestCa {
    /// The CA's certificate.
    pub ca_pem: String,
    /// A server certificate for `127.0.0.1` and `localhost`.
    pub server: Pair,
    /// A client certificate (`CN=waybill-test-client`).
    pub client: Pair,
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA with its server and client certificates.
    pub fn new() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Waybill test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca)?;
            Ok::<_, rcgen::Error>(Pair {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        };
        let server = issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "localhost",
        )?;
        let client = issue(
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            "waybill-test-client",
        )?;
        let dir = tempfile::tempdir()?;
        let ca = Self {
            ca_pem: ca.pem(),
            server,
            client,
            dir,
        };
        for (name, text) in [
            ("ca.pem", &ca.ca_pem),
            ("server.pem", &ca.server.cert_pem),
            ("server-key.pem", &ca.server.key_pem),
            ("client.pem", &ca.client.cert_pem),
            ("client-key.pem", &ca.client.key_pem),
        ] {
            std::fs::write(ca.dir.path().join(name), text)?;
        }
        Ok(ca)
    }

    /// The path of one of the files named in [`TestCa`]'s description.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server configuration with the server certificate, offering HTTP/2
    /// and HTTP/1.1; with `client_auth`, a client must present a
    /// certificate of this CA.
    pub fn server_config(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        let chain = vec![
            CertificateDer::from_pem_slice(self.server.cert_pem.as_bytes())
                .expect("the server certificate is PEM"),
        ];
        let key = PrivateKeyDer::from_pem_slice(self.server.key_pem.as_bytes())
            .expect("the server key is PEM");
        let builder = rustls::ServerConfig::builder();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(
                    CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
                        .expect("the CA certificate is PEM"),
                )
                .expect("the CA certificate is valid");
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("the server certificate matches its key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Serves `app` over TLS on `bind` until the token is cancelled; HTTP/1.1
/// or HTTP/2 as the client's ALPN says. A handshake that fails (an
/// unknown CA, a missing client certificate) closes that connection only.
pub async fn spawn(
    bind: SocketAddr,
    app: Router,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<(SocketAddr, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = until.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
            };
            let (acceptor, app, until) = (acceptor.clone(), app.clone(), until.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let service = hyper_util::service::TowerToHyperService::new(app);
                tokio::select! {
                    _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service) => {}
                    () = until.cancelled() => {}
                }
            });
        }
    });
    Ok((addr, stop))
}
