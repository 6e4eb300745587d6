//! The raw-bytes baseline: the same number of bytes as the table, sent over a plain TCP socket
//! with no serialization at all. Nothing that moves a table over TCP can be faster on this
//! machine, so it is the ceiling the other transfers are compared with.
//!
//! Over TLS ([`start_tls_server`], [`RawClient::connect_tls`]) it is the ceiling of Flight over
//! TLS: the same rustls, crypto provider and cipher suite as tonic's TLS, with nothing of
//! Flight, gRPC or HTTP/2 around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{
    OP_GET, OP_PUT, SocketServer, protocol_error, read_request, read_response, write_request,
    write_response,
};
use crate::bench::certificates::CertificateAuthority;
use crate::error::{Error, Result};

/// Size of the buffer each side reuses for every transfer: bytes stream through it, so a
/// multi-GiB transfer needs no multi-GiB buffer, and its pages are touched once, before timing.
const CHUNK_BYTES: usize = 64 << 20;

/// Start a raw-bytes server: uploads are read into a reused buffer and discarded, downloads are
/// sent from one.
///
/// # Errors
/// [`Error::Io`] if no port can be bound.
pub async fn start_server() -> Result<SocketServer> {
    SocketServer::start(serve).await
}

/// Start a raw-bytes server that speaks TLS, configured as tonic configures a Flight server's
/// TLS, with a certificate for 127.0.0.1 (rcgen's default key, as `bench --tls` gives its
/// Flight server) signed by a CA made for it; the server and that CA's certificate (PEM).
///
/// # Errors
/// [`Error::Io`] if no port can be bound or no certificate can be made.
pub async fn start_tls_server() -> Result<(SocketServer, String)> {
    let ca = CertificateAuthority::new("flightcache bench raw TLS CA").map_err(tls_setup_error)?;
    let identity = ca.issue_server(&["127.0.0.1"]).map_err(tls_setup_error)?;
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(tls_setup_error)?;
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(tls_setup_error)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_setup_error)?;
    // ALPN as tonic's server offers it, so that the handshake is the same as Flight's.
    config.alpn_protocols.push(b"h2".to_vec());
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let server = SocketServer::start(move |socket| {
        let acceptor = acceptor.clone();
        async move { serve(acceptor.accept(socket).await?).await }
    })
    .await?;
    Ok((server, ca.cert_pem()))
}

/// A certificate that cannot be made or used (PEM that holds none, say), as an I/O error.
fn tls_setup_error(err: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the raw TLS baseline cannot set up its certificate: {err}"),
    ))
}

/// Answer requests on `socket` until the peer hangs up.
async fn serve(mut socket: impl AsyncRead + AsyncWrite + Unpin) -> Result<()> {
    let mut chunk = vec![0x5a_u8; CHUNK_BYTES];
    while let Some((op, len)) = read_request(&mut socket).await? {
        match op {
            OP_PUT => {
                read_discarding(&mut socket, &mut chunk, len as usize).await?;
                write_response(&mut socket, Duration::ZERO, 0).await?;
                socket.flush().await?;
            }
            OP_GET => {
                let wanted = socket.read_u64_le().await? as usize;
                write_response(&mut socket, Duration::ZERO, wanted as u64).await?;
                // The payload follows at once; write_repeating flushes both.
                write_repeating(&mut socket, &chunk, wanted).await?;
            }
            _ => return Err(protocol_error("unknown op")),
        }
    }
    Ok(())
}

/// Read exactly `len` bytes through `chunk`, keeping none of them.
async fn read_discarding(
    socket: &mut (impl AsyncRead + Unpin),
    chunk: &mut [u8],
    mut len: usize,
) -> Result<()> {
    while len > 0 {
        let want = len.min(chunk.len());
        let n = socket.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(protocol_error("transfer ended early"));
        }
        len -= n;
    }
    Ok(())
}

/// Write `len` bytes by sending `chunk` over and over, and flush them.
async fn write_repeating(
    socket: &mut (impl AsyncWrite + Unpin),
    chunk: &[u8],
    mut len: usize,
) -> Result<()> {
    while len > 0 {
        let n = len.min(chunk.len());
        socket.write_all(&chunk[..n]).await?;
        len -= n;
    }
    socket.flush().await?;
    Ok(())
}

/// A client of the raw-bytes server, over TCP or (`S` a TLS stream) TLS.
pub struct RawClient<S = TcpStream> {
    socket: S,
    chunk: Vec<u8>,
}

impl RawClient {
    /// Connect to the server at `addr`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be reached.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        Ok(Self::over(socket))
    }
}

/// A client of the raw TLS server ([`start_tls_server`]).
pub type RawTlsClient = RawClient<tokio_rustls::client::TlsStream<TcpStream>>;

impl RawTlsClient {
    /// Connect to the TLS server at `addr` ([`start_tls_server`]), trusting the CA `ca_pem`,
    /// as tonic's client connects to a Flight server.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be reached, or its certificate is not
    /// signed by `ca_pem` for `addr`'s IP address.
    pub async fn connect_tls(addr: SocketAddr, ca_pem: &[u8]) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(certificate.map_err(tls_setup_error)?)
                .map_err(tls_setup_error)?;
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // ALPN as tonic's client asks for it, so that the handshake is the same as Flight's.
        config.alpn_protocols.push(b"h2".to_vec());
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let socket = TlsConnector::from(Arc::new(config))
            .connect(name, socket)
            .await?;
        Ok(Self::over(socket))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    fn over(socket: S) -> Self {
        Self {
            socket,
            chunk: vec![0xa5; CHUNK_BYTES],
        }
    }

    /// Send `bytes` bytes and wait for the server's acknowledgement; the elapsed time.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails.
    pub async fn put(&mut self, bytes: usize) -> Result<Duration> {
        let start = Instant::now();
        write_request(&mut self.socket, OP_PUT, bytes as u64).await?;
        write_repeating(&mut self.socket, &self.chunk, bytes).await?;
        read_response(&mut self.socket).await?;
        Ok(start.elapsed())
    }

    /// Ask for `bytes` bytes and read them all; the elapsed time.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails.
    pub async fn get(&mut self, bytes: usize) -> Result<Duration> {
        let start = Instant::now();
        write_request(&mut self.socket, OP_GET, 8).await?;
        self.socket.write_u64_le(bytes as u64).await?;
        self.socket.flush().await?;
        let (_, len) = read_response(&mut self.socket).await?;
        if len as usize != bytes {
            return Err(protocol_error("download has the wrong length"));
        }
        read_discarding(&mut self.socket, &mut self.chunk, bytes).await?;
        Ok(start.elapsed())
    }
}
