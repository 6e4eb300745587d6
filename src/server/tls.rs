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
    /// Read the PEM files of `serve --tls-cert`, `--tls-key` and `--tls-client-ca`, and
    /// [`check`](Self::check) them.
    ///
    /// # Errors
    /// A message naming the file that cannot be read, that holds no PEM, or a key that does
    /// not belong to the certificate.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, String> {
        let tls = Self {
            cert_pem: read_pem(cert, "certificate")?,
            key_pem: read_pem(key, "private key")?,
            client_ca_pem: client_ca
                .map(|ca| read_pem(ca, "CA certificate"))
                .transpose()?,
        };
        tls.check().map_err(|problem| {
            format!(
                "TLS with `{}` and `{}`: {problem}",
                cert.display(),
                key.display()
            )
        })?;
        Ok(tls)
    }

    /// Check the material as the server will when it starts serving (the certificates and
    /// key parse, and the key belongs to the certificate), so that a server can refuse to
    /// start before it says it listens.
    ///
    /// # Errors
    /// What is wrong, as the TLS library says it.
    pub fn check(&self) -> Result<(), String> {
        tonic::transport::Server::builder()
            .tls_config(self.to_config())
            .map(drop)
            .map_err(|err| {
                let mut message = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    message += &format!(": {cause}");
                    source = cause.source();
                }
                format!("{message} (does the key belong to the certificate?)")
            })
    }

    /// What is wrong with the server certificate's validity at `now`, if anything: it
    /// expired, or is not valid yet. Clients refuse such a certificate; the server still
    /// starts (a renewed certificate may be on its way), so this is a warning to log.
    pub fn validity_problem(&self, now: std::time::SystemTime) -> Option<String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&self.cert_pem).ok()?;
        let certificate = pem.parse_x509().ok()?;
        let validity = certificate.validity();
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|since| i64::try_from(since.as_secs()).ok())?;
        if now > validity.not_after.timestamp() {
            return Some(format!(
                "the server certificate expired on {}: clients will refuse it; renew it",
                validity.not_after
            ));
        }
        if now < validity.not_before.timestamp() {
            return Some(format!(
                "the server certificate is not valid before {}: clients will refuse it until \
                 then (is the clock right?)",
                validity.not_before
            ));
        }
        None
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
