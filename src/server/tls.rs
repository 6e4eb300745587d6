//! TLS for a server (`serve --tls-cert --tls-key`), mutual TLS (`--tls-client-ca`), and the
//! user a client certificate names.
//!
//! rustls (with ring, as tonic's `tls-ring`) serves the TLS, but the handshakes are ours, not
//! tonic's: tonic gives no hold on a connection's rustls settings, and one of them matters.
//! rustls encrypts at most 64 KiB ahead of the socket by default; with
//! [`TLS_BUFFER_BYTES`] it writes a transfer in 1 MiB batches, 20-25% faster over loopback
//! (benches/RESULTS.md). tonic serves the streams [`tls_incoming`] yields like its own: its
//! `TlsConnectInfo`, with the client's certificates, rides in every request.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};
use crate::server::AbortOnDrop;

/// How much TLS data a connection encrypts ahead of its socket: 1 MiB, where rustls's default
/// of 64 KiB cuts a large transfer into many small socket writes.
pub const TLS_BUFFER_BYTES: usize = 1 << 20;

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

    /// The acceptor of TLS connections with this material: TLS 1.2 and 1.3, HTTP/2 by ALPN,
    /// and, with a client CA, a certificate signed by it required of every client.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] if the PEM holds no usable certificate, key or CA.
    pub fn acceptor(&self) -> Result<TlsAcceptor> {
        let setup = |problem: String| Error::TlsSetup { problem };
        let builder = ServerConfig::builder();
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = root_store(ca).map_err(|e| setup(format!("the client CA: {e}")))?;
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| setup(format!("the client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let chain = certificate_chain(&self.cert_pem)
            .map_err(|e| setup(format!("the certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| setup(format!("the private key: {e}")))?;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| setup(format!("the certificate and key: {e}")))?;
        config.alpn_protocols.push(b"h2".to_vec());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The certificates in `pem`, in order (a chain: leaf first).
pub(crate) fn certificate_chain(
    pem: &[u8],
) -> std::result::Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    let chain = CertificateDer::pem_slice_iter(pem).collect::<std::result::Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(rustls::pki_types::pem::Error::NoItemsFound);
    }
    Ok(chain)
}

/// The certificates in `pem`, as trust anchors.
pub(crate) fn root_store(pem: &[u8]) -> std::result::Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificate_chain(pem).map_err(|e| e.to_string())? {
        roots.add(certificate).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// Let a TLS connection, client or server, encrypt up to [`TLS_BUFFER_BYTES`] ahead of its
/// socket.
pub(crate) fn batch_writes<S>(connection: &mut rustls::ConnectionCommon<S>) {
    connection.set_buffer_limit(Some(TLS_BUFFER_BYTES));
}

/// The TLS streams of the connections `incoming` yields, once `acceptor`'s handshake with each
/// has completed; accepting errors pass through. Each handshake runs on a task of its own as
/// soon as its connection is accepted, up to `concurrency` at once; a failed one is logged and
/// its connection dropped. A client that never finishes its handshake is bounded by its
/// connection's idle timeout, as any client is.
pub(crate) fn tls_incoming<S, IO>(
    incoming: S,
    acceptor: TlsAcceptor,
    concurrency: usize,
) -> impl Stream<Item = io::Result<TlsStream<IO>>>
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    incoming
        .map(move |accepted| {
            let handshake = accepted.map(|connection| {
                let acceptor = acceptor.clone();
                AbortOnDrop(tokio::spawn(async move {
                    let mut stream = acceptor.accept(connection).await?;
                    batch_writes(stream.get_mut().1);
                    Ok::<_, io::Error>(stream)
                }))
            });
            async move {
                match handshake {
                    Err(accept_error) => Some(Err(accept_error)),
                    Ok(mut task) => match (&mut task.0).await {
                        Ok(Ok(stream)) => Some(Ok(stream)),
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "TLS handshake failed");
                            None
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "a TLS handshake task failed");
                            None
                        }
                    },
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(std::future::ready)
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
