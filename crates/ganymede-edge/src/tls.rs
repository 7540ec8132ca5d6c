//! TLS for the edge's public port: PEM certificate chain and key, ALPN h2 and
//! http/1.1, and a reload (SIGHUP) that swaps the configuration for new handshakes
//! while connections already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read a private key from {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Loads and checks the files into a server configuration.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: files.cert.clone(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|err| cert_error(err.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|err| cert_error(err.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| TlsError::Key {
        path: files.key.clone(),
        message: err.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| TlsError::Config(err.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current configuration; workers take it per handshake.
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    pub fn new(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = load(&files)?;
        Ok(Tls {
            files,
            current: ArcSwap::new(config),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Re-reads the files; on error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.files)?;
        self.current.store(config);
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }
}
