//! TLS for a server (`serve --tls-cert --tls-key`), mutual TLS (`--tls-client-ca`), and the
//! user a client certificate names.

use std::fmt;
use std::path::Path;

use tonic::transport::{Certificate, CertificateDer, Identity, ServerTlsConfig};

/// A server's TLS material, as PEM: its certificate chain and private key, and the CA that
/// must have signed every client's certificate (mutual TLS), if any.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The server's private key.
    pub key_pem: Vec<u8>,
    /// The CA client certificates must chain to; `None`: clients need none.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<secret>")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

impl ServerTls {
    /// Read the PEM files of `serve --tls-cert`, `--tls-key` and `--tls-client-ca`.
    ///
    /// # Errors
    /// A message naming the file that cannot be read, or that holds no PEM.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, String> {
        Ok(Self {
            cert_pem: read_pem(cert, "certificate")?,
            key_pem: read_pem(key, "private key")?,
            client_ca_pem: client_ca
                .map(|ca| read_pem(ca, "CA certificate"))
                .transpose()?,
        })
    }

    /// tonic's configuration for this material.
    pub(crate) fn to_config(&self) -> ServerTlsConfig {
        let config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// The contents of the PEM file at `path`, holding a `what`.
pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the {what} `{}`: {e}", path.display()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!(
            "`{}` holds no PEM {what} (a file starting with -----BEGIN ...)",
            path.display()
        ));
    }
    Ok(pem)
}

/// The user a client certificate chain names: the common name of its leaf's subject.
pub(crate) fn certificate_user(chain: &[CertificateDer<'static>]) -> Option<String> {
    let leaf = chain.first()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let common_name = certificate.subject().iter_common_name().next()?;
    common_name.as_str().ok().map(str::to_string)
}
