//! TLS for a `grpc+tls://` server: rustls settings from [`ClientTls`], and the connector
//! tonic's channel dials through.
//!
//! The handshake is ours, not tonic's, for the same reason as the server's
//! ([`crate::server::tls`]): so that a connection encrypts up to
//! [`TLS_BUFFER_BYTES`](crate::server::tls::TLS_BUFFER_BYTES) ahead of its socket.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::codegen::http::Uri;

use super::ClientTls;
use crate::server::tls::{batch_writes, certificate_chain, root_store};

/// rustls's client settings for `tls`: the servers its CA signed (none without one), HTTP/2
/// by ALPN, and its client certificate for mutual TLS.
///
/// # Errors
/// What is wrong with the CA, certificate or key.
pub(crate) fn client_config(tls: &ClientTls) -> Result<ClientConfig, String> {
    let roots = match &tls.ca_pem {
        Some(ca) => root_store(ca).map_err(|e| format!("the CA certificate: {e}"))?,
        None => RootCertStore::empty(),
    };
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain =
                certificate_chain(cert).map_err(|e| format!("the client certificate: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key: {e}"))?
        }
    };
    config.alpn_protocols.push(b"h2".to_vec());
    Ok(config)
}

/// Dials a TLS server for tonic: TCP, then the TLS handshake, checking the server's
/// certificate against `domain` or else the URI's host.
#[derive(Clone)]
pub(crate) struct TlsDialer {
    connector: TlsConnector,
    domain: Option<String>,
}

impl TlsDialer {
    /// A dialer with `config`, checking certificates against `domain` if given.
    pub(crate) fn new(config: ClientConfig, domain: Option<String>) -> Self {
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            domain,
        }
    }
}

impl tower_service::Service<Uri> for TlsDialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        let domain = self.domain.clone();
        Box::pin(async move {
            let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri} names no host")))?;
            // An IPv6 host comes bracketed in a URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = domain.unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name)
                .map_err(|e| invalid(format!("not a server name: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let mut stream = connector.connect(name, tcp).await?;
            batch_writes::<rustls::client::ClientConnectionData>(stream.get_mut().1);
            Ok(TokioIo::new(stream))
        })
    }
}
