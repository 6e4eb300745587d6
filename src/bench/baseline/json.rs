//! The JSON baseline, the traditional way to move a table: the sender serializes it to JSON
//! (one object per row), sends the text over a raw TCP socket with a length prefix, and the
//! receiver parses it back into Arrow, inferring the types as a JSON reader must.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::json::reader::{ReaderBuilder, infer_json_schema_from_seekable};
use arrow::json::writer::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    OP_GET, OP_PUT, SocketServer, protocol_error, read_request, read_response, write_request,
    write_response,
};
use crate::error::{Error, Result};

/// Rows per batch when parsing JSON back into Arrow.
const DECODE_BATCH_ROWS: usize = 8192;

/// The time one JSON transfer spent in each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JsonTimings {
    /// Serializing Arrow to JSON text (sender).
    pub encode: Duration,
    /// Moving the text over the socket.
    pub transfer: Duration,
    /// Parsing JSON text back into Arrow (receiver).
    pub decode: Duration,
}

impl JsonTimings {
    /// The end-to-end time.
    pub fn total(&self) -> Duration {
        self.encode + self.transfer + self.decode
    }
}

/// Serialize batches as newline-delimited JSON objects.
///
/// # Errors
/// [`Error::Arrow`] for a type JSON cannot represent.
pub fn encode_json(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = LineDelimitedWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner())
}

/// Parse newline-delimited JSON back into batches, inferring the schema from the text.
///
/// # Errors
/// [`Error::Arrow`] if the text is not JSON a table can be read from.
pub fn decode_json(text: &[u8]) -> Result<Vec<RecordBatch>> {
    let mut cursor = Cursor::new(text);
    let (schema, _) = infer_json_schema_from_seekable(&mut cursor, None)?;
    let reader = ReaderBuilder::new(Arc::new(schema))
        .with_batch_size(DECODE_BATCH_ROWS)
        .build(cursor)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// Run CPU-heavy JSON work off the async runtime, timing it.
async fn timed_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<(T, Duration)> {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        work().map(|value| (value, start.elapsed()))
    })
    .await
    .map_err(|source| Error::TaskFailed {
        task: "JSON",
        source,
    })?
}

/// Start a JSON baseline server: each connection keeps the last table it was sent and serves
/// it back as JSON on request.
///
/// # Errors
/// [`Error::Io`] if no port can be bound.
pub async fn start_server() -> Result<SocketServer> {
    SocketServer::start(handle).await
}

async fn handle(mut socket: TcpStream) -> Result<()> {
    let mut table: Arc<Vec<RecordBatch>> = Arc::new(Vec::new());
    while let Some((op, len)) = read_request(&mut socket).await? {
        match op {
            OP_PUT => {
                let mut text = vec![0u8; len as usize];
                socket.read_exact(&mut text).await?;
                let (batches, decode) = timed_blocking(move || decode_json(&text)).await?;
                table = Arc::new(batches);
                write_response(&mut socket, decode, 0).await?;
            }
            OP_GET => {
                let batches = Arc::clone(&table);
                let (text, encode) = timed_blocking(move || encode_json(&batches)).await?;
                write_response(&mut socket, encode, text.len() as u64).await?;
                socket.write_all(&text).await?;
            }
            _ => return Err(protocol_error("unknown op")),
        }
    }
    Ok(())
}

/// A client of the JSON baseline server.
pub struct JsonClient {
    socket: TcpStream,
}

impl JsonClient {
    /// Connect to the server at `addr`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be reached.
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        Ok(Self { socket })
    }

    /// Send a table as JSON; the server parses it and keeps it.
    ///
    /// # Errors
    /// [`Error::Arrow`] if the table cannot be JSON; [`Error::Io`] if the socket fails.
    pub async fn put(&mut self, batches: Arc<Vec<RecordBatch>>) -> Result<JsonTimings> {
        let (text, encode) = timed_blocking(move || encode_json(&batches)).await?;
        let start = Instant::now();
        write_request(&mut self.socket, OP_PUT, text.len() as u64).await?;
        self.socket.write_all(&text).await?;
        let (decode, _) = read_response(&mut self.socket).await?;
        let transfer = start.elapsed().saturating_sub(decode);
        Ok(JsonTimings {
            encode,
            transfer,
            decode,
        })
    }

    /// Fetch the table last sent on this connection, as JSON parsed back into Arrow.
    ///
    /// # Errors
    /// [`Error::Arrow`] if the text cannot be parsed; [`Error::Io`] if the socket fails.
    pub async fn get(&mut self) -> Result<(Vec<RecordBatch>, JsonTimings)> {
        let start = Instant::now();
        write_request(&mut self.socket, OP_GET, 0).await?;
        let (encode, len) = read_response(&mut self.socket).await?;
        let mut text = vec![0u8; len as usize];
        self.socket.read_exact(&mut text).await?;
        let transfer = start.elapsed().saturating_sub(encode);
        let (batches, decode) = timed_blocking(move || decode_json(&text)).await?;
        Ok((
            batches,
            JsonTimings {
                encode,
                transfer,
                decode,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};

    #[test]
    fn json_round_trips_numeric_columns() {
        let batch = RecordBatch::try_from_iter([
            (
                "x",
                Arc::new(Float64Array::from(vec![0.5, -1.25, 3.0])) as _,
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
        ])
        .unwrap();
        let text = encode_json(std::slice::from_ref(&batch)).unwrap();
        let back = decode_json(&text).unwrap();
        // JSON keeps values, not column order or nullability: compare columns by name.
        assert_eq!(back.len(), 1);
        for name in ["x", "n"] {
            assert_eq!(
                back[0].column_by_name(name),
                batch.column_by_name(name),
                "{name}"
            );
        }
    }
}
