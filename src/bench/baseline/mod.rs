//! The baselines `flightcache bench` measures Flight against: a JSON-over-TCP table transfer
//! ([`json`]) and a raw-bytes TCP transfer ([`raw`]), each a small socket server plus client.
//!
//! Both speak one framing, kept deliberately plain: a request is `[op: u8][len: u64 LE][len
//! bytes]`, a response is `[server_nanos: u64 LE][len: u64 LE][len bytes]`, where
//! `server_nanos` is the time the server spent encoding or decoding.

pub mod json;
pub mod raw;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::Result;

/// Request op: upload the payload.
pub(crate) const OP_PUT: u8 = 1;
/// Request op: download (the payload says what).
pub(crate) const OP_GET: u8 = 2;

/// A baseline socket server on 127.0.0.1 and a free port. Dropping it stops the accept loop
/// and every connection (mini-redis's Listener and Shutdown, reduced to a watch channel).
#[derive(Debug)]
pub struct SocketServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl SocketServer {
    /// Bind 127.0.0.1:0 and serve each connection with `handle` until dropped.
    pub(crate) async fn start<H, F>(handle: H) -> Result<Self>
    where
        H: Fn(TcpStream) -> F + Send + Sync + 'static,
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.changed() => return,
                };
                let Ok((socket, _)) = accepted else { continue };
                socket.set_nodelay(true).ok();
                let connection = handle(socket);
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        result = connection => {
                            if let Err(err) = result {
                                tracing::debug!(error = %err, "baseline connection ended");
                            }
                        }
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(Self { addr, shutdown })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.shutdown.send(true).ok();
    }
}

/// Read one request header; `None` when the peer closed the connection.
pub(crate) async fn read_request(socket: &mut TcpStream) -> Result<Option<(u8, u64)>> {
    let op = match socket.read_u8().await {
        Ok(op) => op,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = socket.read_u64_le().await?;
    Ok(Some((op, len)))
}

/// Write a request header.
pub(crate) async fn write_request(socket: &mut TcpStream, op: u8, len: u64) -> Result<()> {
    socket.write_u8(op).await?;
    socket.write_u64_le(len).await?;
    Ok(())
}

/// Write a response header.
pub(crate) async fn write_response(
    socket: &mut TcpStream,
    server_time: Duration,
    len: u64,
) -> Result<()> {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&(server_time.as_nanos() as u64).to_le_bytes());
    header[8..].copy_from_slice(&len.to_le_bytes());
    socket.write_all(&header).await?;
    Ok(())
}

/// Read a response header: the server's own time and the payload length.
pub(crate) async fn read_response(socket: &mut TcpStream) -> Result<(Duration, u64)> {
    let nanos = socket.read_u64_le().await?;
    let len = socket.read_u64_le().await?;
    Ok((Duration::from_nanos(nanos), len))
}

/// An unexpected op or length from a baseline peer.
pub(crate) fn protocol_error(what: &'static str) -> crate::Error {
    crate::Error::UnexpectedAnswer {
        problem: crate::error::AnswerProblem::Baseline(what),
    }
}
