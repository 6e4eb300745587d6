//! `FlightCacheService`: the Arrow Flight RPCs over a [`TableStore`].
//!
//! Each RPC parses its request into a key or action, asks the store, and encodes the answer.
//! Errors are [`Error`]s until the last moment, when [`From<Error> for Status`] picks the code.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
    flight_service_server::FlightService,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::instrument;

use crate::abort::BodyAborted;
use crate::actions::{CacheAction, ClearResult, DropResult};
use crate::error::{Error, Result};
use crate::key::TableKey;
use crate::slab::SlabWriter;
use crate::store::TableStore;
use crate::upload::{PutSummary, TableUpload};

/// A boxed stream of RPC results, the response type of the streaming RPCs.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight service: a [`TableStore`] plus the limits that protect it.
///
/// Serve it through [`make_server`](crate::server::make_server) (or [`serve`](crate::serve)),
/// which wraps it in [`AbortWatch`](crate::abort::AbortWatch): without that wrapper, tonic
/// reports a client's aborted upload as a finished one, and a truncated table would be stored.
#[derive(Debug, Clone)]
pub struct FlightCacheService {
    store: TableStore,
    put_permits: Arc<Semaphore>,
    max_concurrent_puts: usize,
}

impl FlightCacheService {
    /// A service over `store` that accepts at most `max_concurrent_puts` uploads at once.
    pub fn new(store: TableStore, max_concurrent_puts: usize) -> Self {
        Self {
            store,
            put_permits: Arc::new(Semaphore::new(max_concurrent_puts)),
            max_concurrent_puts,
        }
    }

    /// Count a failure and turn it into the status to send.
    fn reply<T>(&self, result: Result<T>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(|err| {
            self.store.record_error();
            Status::from(err)
        })
    }

    fn table_for(
        &self,
        descriptor: &FlightDescriptor,
    ) -> Result<(TableKey, Arc<crate::CachedTable>)> {
        let key = TableKey::try_from_descriptor(descriptor)?;
        tracing::Span::current().record("key", key.as_str());
        match self.store.get(&key) {
            Some(table) => Ok((key, table)),
            None => Err(Error::TableNotFound { key }),
        }
    }

    /// Receive one upload from `messages` and store it; count it as a failed request unless it
    /// ends well. `do_put` through tonic and [`DirectPut`](crate::receive::DirectPut) both
    /// come here.
    ///
    /// # Errors
    /// The status to answer the client with.
    #[instrument(skip_all, fields(key))]
    pub async fn receive_put(&self, messages: impl UploadMessages) -> Result<PutResult, Status> {
        // A client that resets its stream makes hyper drop this future at an `.await`, so a
        // guard, not the code after it, counts the failure.
        let failed = FailedUploadGuard {
            store: &self.store,
            armed: true,
        };
        let result = self.put(messages).await;
        failed.settle(result.is_ok());
        result.map_err(Status::from)
    }

    async fn put(&self, mut messages: impl UploadMessages) -> Result<PutResult> {
        let _permit = Arc::clone(&self.put_permits)
            .try_acquire_owned()
            .map_err(|_| Error::LimitReached {
                limit: format!(
                    "{} uploads in progress (--max-concurrent-puts)",
                    self.max_concurrent_puts
                ),
            })?;
        let first = messages
            .next_message(None)
            .await
            .map_err(inbound_error)?
            .ok_or(Error::MissingDescriptor)?;
        let descriptor = first
            .flight_descriptor
            .as_ref()
            .ok_or(Error::MissingDescriptor)?;
        let key = TableKey::try_from_descriptor(descriptor)?;
        tracing::Span::current().record("key", key.as_str());

        let mut upload = TableUpload::new(key, self.store.slab_pool());
        upload.push(first)?;
        loop {
            let next = messages.next_message(Some(upload.memory())).await;
            match next {
                Ok(Some(message)) => upload.push(message)?,
                Ok(None) => break,
                Err(status) if status.code() == Code::Cancelled => {
                    return Err(Error::UploadCancelled {
                        key: upload.key().clone(),
                    });
                }
                Err(status) => return Err(inbound_error(status)),
            }
        }
        let key = upload.key().clone();
        let table = Arc::new(upload.finish()?);
        let summary = PutSummary {
            key: key.to_string(),
            rows: table.rows(),
            bytes: table.bytes(),
            batches: table.batches(),
        };
        self.store.insert(key, table);
        tracing::info!(rows = summary.rows, bytes = summary.bytes, "table stored");

        let app_metadata =
            Bytes::from(serde_json::to_vec(&summary).expect("PutSummary serializes"));
        Ok(PutResult { app_metadata })
    }

    fn run_action(&self, action: CacheAction) -> Result<Bytes> {
        let body = match action {
            CacheAction::Drop(key) => {
                tracing::Span::current().record("key", key.as_str());
                let table = self
                    .store
                    .remove(&key)
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                serde_json::to_vec(&DropResult {
                    key: key.to_string(),
                    rows: table.rows(),
                    bytes: table.bytes(),
                })
            }
            CacheAction::Clear => serde_json::to_vec(&ClearResult {
                tables: self.store.clear(),
            }),
            CacheAction::Stats => serde_json::to_vec(&self.store.stats()),
        };
        Ok(Bytes::from(body.expect("action results serialize")))
    }
}

/// Where an upload's Flight messages come from: tonic's decoder (for compressed uploads), or
/// [`MessageReader`](crate::receive::MessageReader), which receives each body straight into the
/// upload's table memory.
pub trait UploadMessages: Send {
    /// The next message, or `None` once the client ended the stream cleanly. `memory` is the
    /// table memory of the upload, once there is one (from the second message on): a body
    /// received into memory reserved there is not copied again.
    ///
    /// # Errors
    /// The gRPC status of a broken stream: CANCELLED if the client aborted it.
    fn next_message<'a>(
        &'a mut self,
        memory: Option<&'a mut SlabWriter>,
    ) -> impl Future<Output = Result<Option<FlightData>, Status>> + Send + 'a;
}

/// An upload's messages as tonic decodes them, with the flag that tells a body the client
/// aborted from one it finished (see [`AbortWatch`](crate::abort::AbortWatch)).
struct TonicMessages {
    messages: Streaming<FlightData>,
    aborted: Option<BodyAborted>,
}

impl UploadMessages for TonicMessages {
    async fn next_message(
        &mut self,
        _memory: Option<&mut SlabWriter>,
    ) -> Result<Option<FlightData>, Status> {
        match self.messages.message().await? {
            None if self.aborted.as_ref().is_some_and(BodyAborted::is_aborted) => {
                Err(Status::cancelled("the client aborted the upload"))
            }
            next => Ok(next),
        }
    }
}

/// Counts an upload as a failed request unless it ended well, including when its handler is
/// dropped mid-upload because the client went away.
struct FailedUploadGuard<'a> {
    store: &'a TableStore,
    armed: bool,
}

impl FailedUploadGuard<'_> {
    fn settle(mut self, succeeded: bool) {
        self.armed = !succeeded;
    }
}

impl Drop for FailedUploadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.record_error();
            tracing::debug!("upload failed or abandoned; nothing stored");
        }
    }
}

/// An error from the client's upload stream. tonic reports an over-large message as
/// OutOfRange; gRPC peers (pyarrow) expect ResourceExhausted and a hint at the limit. Any other
/// status goes back unchanged.
fn inbound_error(status: Status) -> Error {
    if status.code() == Code::OutOfRange && status.message().contains("too large") {
        return Error::LimitReached {
            limit: format!(
                "{}; raise --max-message-size on the server or send smaller batches",
                status.message()
            ),
        };
    }
    Error::from_status(status, None)
}

/// A response stream of exactly one item.
fn one<T: Send + 'static>(item: T) -> ResponseStream<T> {
    Box::pin(stream::once(async move { Ok(item) }))
}

#[tonic::async_trait]
impl FlightService for FlightCacheService {
    type HandshakeStream = ResponseStream<HandshakeResponse>;
    type ListFlightsStream = ResponseStream<FlightInfo>;
    type DoGetStream = ResponseStream<FlightData>;
    type DoPutStream = ResponseStream<PutResult>;
    type DoActionStream = ResponseStream<arrow_flight::Result>;
    type ListActionsStream = ResponseStream<ActionType>;
    type DoExchangeStream = ResponseStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.reply(Err(Error::Unimplemented { rpc: "handshake" }))
    }

    #[instrument(skip_all)]
    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let result = std::str::from_utf8(&request.get_ref().expression)
            .map_err(|_| Error::InvalidKey {
                reason: "the list_flights criteria (a key prefix) is not UTF-8".into(),
            })
            .map(|prefix| {
                let infos: Vec<_> = self
                    .store
                    .list(prefix)
                    .into_iter()
                    .map(|(key, table)| Ok(table.flight_info(&key, key.to_descriptor())))
                    .collect();
                Box::pin(stream::iter(infos)) as Self::ListFlightsStream
            });
        self.reply(result)
    }

    #[instrument(skip_all, fields(key))]
    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let result = self
            .table_for(&descriptor)
            .map(|(key, table)| table.flight_info(&key, descriptor));
        self.reply(result)
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.reply(Err(Error::Unimplemented {
            rpc: "poll_flight_info",
        }))
    }

    #[instrument(skip_all, fields(key))]
    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let result = self
            .table_for(request.get_ref())
            .map(|(_, table)| table.schema_result());
        self.reply(result)
    }

    #[instrument(skip_all, fields(key))]
    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let result = TableKey::try_from_ticket(request.get_ref()).and_then(|key| {
            tracing::Span::current().record("key", key.as_str());
            let table = self.store.get(&key).ok_or(Error::TableNotFound { key })?;
            self.store.record_get();
            // The stream owns an Arc of the table: a concurrent replace or drop does not
            // disturb a get that has started.
            let count = table.flight_messages().len();
            let messages =
                stream::iter(0..count).map(move |i| Ok(table.flight_messages()[i].clone()));
            Ok(Box::pin(messages) as Self::DoGetStream)
        });
        self.reply(result)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let aborted = request.extensions().get::<BodyAborted>().cloned();
        let messages = TonicMessages {
            messages: request.into_inner(),
            aborted,
        };
        let result = self.receive_put(messages).await?;
        Ok(Response::new(one(result)))
    }

    #[instrument(skip_all, fields(action, key))]
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        tracing::Span::current().record("action", action.r#type.as_str());
        let result = CacheAction::try_from(action)
            .and_then(|action| self.run_action(action))
            .map(|body| one(arrow_flight::Result { body }));
        self.reply(result)
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let types = crate::actions::action_types().into_iter().map(Ok);
        self.reply(Ok(Box::pin(stream::iter(types)) as Self::ListActionsStream))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.reply(Err(Error::Unimplemented { rpc: "do_exchange" }))
    }
}
