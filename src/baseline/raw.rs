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

/// Size of the reusable buffer the server reads uploads into and discards.
const READ_CHUNK_BYTES: usize = 4 << 20;

/// Start a raw-bytes server: uploads are read and discarded, downloads are served from a
/// buffer allocated once per connection.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) if no port can be bound.
pub async fn start_server() -> Result<SocketServer> {
    SocketServer::start(handle).await
}

async fn handle(mut socket: TcpStream) -> Result<()> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut download: Vec<u8> = Vec::new();
    while let Some((op, len)) = read_request(&mut socket).await? {
        match op {
            OP_PUT => {
                let mut left = len as usize;
                while left > 0 {
                    let n = socket
                        .read(&mut chunk[..left.min(READ_CHUNK_BYTES)])
                        .await?;
                    if n == 0 {
                        return Err(protocol_error("upload ended early"));
                    }
                    left -= n;
                }
                write_response(&mut socket, Duration::ZERO, 0).await?;
            }
            OP_GET => {
                let wanted = socket.read_u64_le().await? as usize;
                download.resize(wanted, 0x5a);
                write_response(&mut socket, Duration::ZERO, wanted as u64).await?;
                socket.write_all(&download).await?;
            }
            _ => return Err(protocol_error("unknown op")),
        }
    }
    Ok(())
}

/// A client of the raw-bytes server.
pub struct RawClient {
    socket: TcpStream,
    upload: Vec<u8>,
    download: Vec<u8>,
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
            upload: Vec::new(),
            download: Vec::new(),
        })
    }

    /// Send `bytes` bytes and wait for the server's acknowledgement; the elapsed time.
    /// The buffer is allocated and touched before the clock starts.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the socket fails.
    pub async fn put(&mut self, bytes: usize) -> Result<Duration> {
        self.upload.resize(bytes, 0xa5);
        let start = Instant::now();
        write_request(&mut self.socket, OP_PUT, bytes as u64).await?;
        self.socket.write_all(&self.upload).await?;
        read_response(&mut self.socket).await?;
        Ok(start.elapsed())
    }

    /// Ask for `bytes` bytes and read them all; the elapsed time.
    /// The buffer is allocated and touched before the clock starts.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the socket fails.
    pub async fn get(&mut self, bytes: usize) -> Result<Duration> {
        self.download.resize(bytes, 0);
        let start = Instant::now();
        write_request(&mut self.socket, OP_GET, 8).await?;
        self.socket.write_u64_le(bytes as u64).await?;
        let (_, len) = read_response(&mut self.socket).await?;
        if len as usize != bytes {
            return Err(protocol_error("download has the wrong length"));
        }
        self.socket.read_exact(&mut self.download).await?;
        Ok(start.elapsed())
    }
}
