//! The streams a [`CacheClient`](super::CacheClient) moves tables with: [`TableStream`], a
//! table being downloaded, and [`CancelOnError`], an upload that is cancelled, never ended,
//! when its input fails.

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use futures::channel::oneshot;
use futures::{Stream, StreamExt};

use super::flight_error;
use crate::error::{AnswerProblem, Error, Result};
use crate::protocol::key::TableKey;

/// A table being streamed from the server: its schema, then its batches in order.
pub struct TableStream {
    schema: SchemaRef,
    decoder: FlightDataDecoder,
    /// The key streamed, named in errors; `None` for a query's results.
    key: Option<TableKey>,
    /// The offset of its first row, when the server said.
    start_offset: Option<u64>,
}

impl TableStream {
    pub(super) async fn start(
        mut decoder: FlightDataDecoder,
        key: Option<TableKey>,
    ) -> Result<Self> {
        loop {
            let message = decoder
                .next()
                .await
                .transpose()
                .map_err(|e| flight_error(e, key.as_ref()))?;
            match message.map(|m| m.payload) {
                Some(DecodedPayload::Schema(schema)) => {
                    return Ok(Self {
                        schema,
                        decoder,
                        key,
                        start_offset: None,
                    });
                }
                Some(DecodedPayload::None) => continue,
                Some(DecodedPayload::RecordBatch(_)) => {
                    return Err(broken("a record batch arrived before the schema"));
                }
                None => return Err(broken("do_get ended without a schema")),
            }
        }
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The offset of the stream's first row, as the server said (`x-flightcache-start-offset`)
    /// for a [`read`](super::CacheClient::read); `None` for a plain get or a query.
    pub fn start_offset(&self) -> Option<u64> {
        self.start_offset
    }

    pub(super) fn with_start_offset(self, start_offset: Option<u64>) -> Self {
        Self {
            start_offset,
            ..self
        }
    }
}

impl Stream for TableStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let message = match futures::ready!(self.decoder.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(flight_error(e, self.key.as_ref())))),
                Some(Ok(message)) => message,
            };
            match message.payload {
                DecodedPayload::RecordBatch(batch) => return Poll::Ready(Some(Ok(batch))),
                DecodedPayload::None => continue,
                DecodedPayload::Schema(_) => {
                    return Poll::Ready(Some(Err(broken("the schema changed mid-stream"))));
                }
            }
        }
    }
}

/// Passes `FlightData` through until the first error, which it hands to `failed` and then
/// never yields again: the request neither ends nor continues, and the caller cancels it.
pub(super) struct CancelOnError {
    pub(super) inner: Pin<Box<dyn Stream<Item = Result<FlightData, FlightError>> + Send>>,
    pub(super) failed: Option<oneshot::Sender<FlightError>>,
}

impl Stream for CancelOnError {
    type Item = FlightData;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FlightData>> {
        if self.failed.is_none() {
            return Poll::Pending;
        }
        match futures::ready!(self.inner.poll_next_unpin(cx)) {
            Some(Ok(data)) => Poll::Ready(Some(data)),
            None => Poll::Ready(None),
            Some(Err(err)) => {
                if let Some(failed) = self.failed.take() {
                    failed.send(err).ok();
                }
                Poll::Pending
            }
        }
    }
}

/// A table stream that breaks Flight's rules.
fn broken(problem: &'static str) -> Error {
    Error::UnexpectedAnswer {
        problem: AnswerProblem::BrokenStream(problem),
    }
}
