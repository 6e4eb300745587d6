//! The baselines `flightcache bench` measures Flight against: a JSON-over-TCP table transfer
//! ([`json`]) and a raw-bytes transfer ([`raw`]) over TCP or TLS, each a small socket server
//! plus client.
//!
//! Both speak one framing, kept deliberately plain: a request is `[op: u8][len: u64 LE][len
//! bytes]`, a response is `[server_nanos: u64 LE][len: u64 LE][len bytes]`, where
//! `server_nanos` is the time the server spent encoding or decoding.

pub mod json;
pub mod raw;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    /// Bind 127.0.0.1:0 and serve each connection with `handle` until dropped, on a thread
    /// and runtime of its own: like the Flight server, which runs in a process of its own, it
    /// does not share the benchmark client's runtime threads.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if no port can be bound or no thread started.
    pub(crate) async fn start<H, F>(handle: H) -> Result<Self>
    where
        H: Fn(TcpStream) -> F + Send + Sync + 'static,
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("bench-baseline".into())
            .spawn(move || runtime.block_on(accept_until_stopped(listener, handle, stopped)))?;
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

/// Serve each connection accepted on `listener` with `handle` until `stopped` changes.
async fn accept_until_stopped<H, F>(
    listener: std::net::TcpListener,
    handle: H,
    mut stopped: watch::Receiver<bool>,
) where
    H: Fn(TcpStream) -> F,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
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
}

/// Read one request header; `None` when the peer closed the connection.
pub(crate) async fn read_request(
    socket: &mut (impl AsyncRead + Unpin),
) -> Result<Option<(u8, u64)>> {
    let op = match socket.read_u8().await {
        Ok(op) => op,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = socket.read_u64_le().await?;
    Ok(Some((op, len)))
}

/// Write a request header (not flushed: a payload may follow).
pub(crate) async fn write_request(
    socket: &mut (impl AsyncWrite + Unpin),
    op: u8,
    len: u64,
) -> Result<()> {
    let mut header = [0u8; 9];
    header[0] = op;
    header[1..].copy_from_slice(&len.to_le_bytes());
    socket.write_all(&header).await?;
    Ok(())
}

/// Write a response header (not flushed: a payload may follow).
pub(crate) async fn write_response(
    socket: &mut (impl AsyncWrite + Unpin),
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
pub(crate) async fn read_response(
    socket: &mut (impl AsyncRead + Unpin),
) -> Result<(Duration, u64)> {
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
