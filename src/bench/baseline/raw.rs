//! The raw-bytes baseline: the same number of bytes as the table, sent over a plain TCP socket
//! with no serialization at all. Nothing that moves a table over TCP can be faster on this
//! machine, so it is the ceiling the other transfers are compared with.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    OP_GET, OP_PUT, SocketServer, protocol_error, read_request, read_response, write_request,
    write_response,
};
use crate::error::Result;

/// Size of the buffer each side reuses for every transfer: bytes stream through it, so a
/// multi-GiB transfer needs no multi-GiB buffer, and its pages are touched once, before timing.
const CHUNK_BYTES: usize = 64 << 20;

/// Start a raw-bytes server: uploads are read into a reused buffer and discarded, downloads are
/// sent from one.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) if no port can be bound.
pub async fn start_server() -> Result<SocketServer> {
    SocketServer::start(handle).await
}

async fn handle(mut socket: TcpStream) -> Result<()> {
    let mut chunk = vec![0x5a_u8; CHUNK_BYTES];
    while let Some((op, len)) = read_request(&mut socket).await? {
        match op {
            OP_PUT => {
                read_discarding(&mut socket, &mut chunk, len as usize).await?;
                write_response(&mut socket, Duration::ZERO, 0).await?;
            }
            OP_GET => {
                let wanted = socket.read_u64_le().await? as usize;
                write_response(&mut socket, Duration::ZERO, wanted as u64).await?;
                write_repeating(&mut socket, &chunk, wanted).await?;
            }
            _ => return Err(protocol_error("unknown op")),
        }
    }
    Ok(())
}

/// Read exactly `len` bytes through `chunk`, keeping none of them.
async fn read_discarding(socket: &mut TcpStream, chunk: &mut [u8], mut len: usize) -> Result<()> {
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

/// Write `len` bytes by sending `chunk` over and over.
async fn write_repeating(socket: &mut TcpStream, chunk: &[u8], mut len: usize) -> Result<()> {
    while len > 0 {
        let n = len.min(chunk.len());
        socket.write_all(&chunk[..n]).await?;
        len -= n;
    }
    Ok(())
}

/// A client of the raw-bytes server.
pub struct RawClient {
    socket: TcpStream,
    chunk: Vec<u8>,
}

impl RawClient {
    /// Connect to the server at `addr`.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if it cannot be reached.
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        Ok(Self {
            socket,
            chunk: vec![0xa5; CHUNK_BYTES],
        })
    }

    /// Send `bytes` bytes and wait for the server's acknowledgement; the elapsed time.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the socket fails.
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
    /// [`Error::Io`](crate::Error::Io) if the socket fails.
    pub async fn get(&mut self, bytes: usize) -> Result<Duration> {
        let start = Instant::now();
        write_request(&mut self.socket, OP_GET, 8).await?;
        self.socket.write_u64_le(bytes as u64).await?;
        let (_, len) = read_response(&mut self.socket).await?;
        if len as usize != bytes {
            return Err(protocol_error("download has the wrong length"));
        }
        read_discarding(&mut self.socket, &mut self.chunk, bytes).await?;
        Ok(start.elapsed())
    }
}
