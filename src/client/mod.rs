//! `CacheClient`: a typed client for a flightcache server, over arrow-flight's `FlightClient`,
//! and the streams it reads and writes tables with.
//!
//! - `session`: the credentials a client and its clones share, and signing in again.
//! - `stream`: [`TableStream`], a table being downloaded; the upload stream that cancels
//!   itself when its input fails.

mod session;
mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightDataDecoder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Criteria, FlightClient, FlightDescriptor, FlightInfo};
use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::{Stream, TryStreamExt};
use serde::de::DeserializeOwned;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use stream::TableStream;

use crate::error::{AnswerProblem, ConnectProblem, Error, Result};
use crate::protocol::DEFAULT_MAX_MESSAGE_BYTES;
use crate::protocol::actions::{CacheAction, ClearResult, DropResult, StoreStats};
use crate::protocol::credentials::{AUTHORIZATION, Credentials, WhoAmI};
use crate::protocol::encode::encode_stream;
use crate::protocol::key::TableKey;
use crate::protocol::put::PutSummary;
use crate::protocol::stream::{
    APPEND_HEADER, FOLLOW_HEADER, FROM_HEADER, MAX_AGE_HEADER, MAX_BYTES_HEADER, MAX_ROWS_HEADER,
    Offsets, ReadFrom, Retention, START_OFFSET_HEADER,
};
use crate::protocol::ttl::{PersistResult, TTL_HEADER, TableMetadata, TtlResult};
use crate::transport::http2::Http2Settings;
use session::{Session, SharedSession};
use stream::CancelOnError;

/// The server a client talks to when none is named: `grpc://127.0.0.1:8815`.
pub const DEFAULT_SERVER_URL: &str = "grpc://127.0.0.1:8815";

/// Client-side settings: transport, TLS and credentials.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Largest single message sent or accepted, in bytes.
    pub max_message_bytes: usize,
    /// HTTP/2 frame and window sizes.
    pub http2: Http2Settings,
    /// TLS settings for `grpc+tls://` URLs.
    pub tls: ClientTls,
    /// Who to authenticate as; `None` for a server without users.
    pub credentials: Option<Credentials>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            http2: Http2Settings::default(),
            tls: ClientTls::default(),
            credentials: None,
        }
    }
}

/// TLS for a `grpc+tls://` server, as PEM.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA that signed the server's certificate; `None`: the system's trusted roots are not
    /// consulted, so a CA is needed for any server.
    pub ca_pem: Option<Vec<u8>>,
    /// This client's certificate chain and private key, for a server that requires client
    /// certificates (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server's certificate against, when it is not the URL's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<certificate and key>"),
            )
            .field("domain", &self.domain)
            .finish()
    }
}

/// What the server knows about one cached table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The table's key.
    pub key: TableKey,
    /// The table's schema, with metadata.
    pub schema: SchemaRef,
    /// Number of rows.
    pub rows: u64,
    /// Arrow bytes held by the server.
    pub bytes: u64,
    /// Where the table can be fetched: the locations of its endpoints.
    pub locations: Vec<String>,
    /// Time left until the table expires, when it has a time to live.
    pub ttl: Option<Duration>,
    /// When it expires, on the server's clock (its endpoints' `expiration_time`).
    pub expires_at: Option<SystemTime>,
    /// Time since its last get or put, when the server reports it.
    pub idle: Option<Duration>,
    /// The offset of the oldest row kept and of the next row to be appended, when the server
    /// reports them (see [`stream`](crate::protocol::stream)).
    pub offsets: Option<Offsets>,
}

/// How to store a table ([`CacheClient::put_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Expire the table this long after it is stored (sent as the `x-flightcache-ttl`
    /// header); `None`: it never expires (or, for an append, keeps the key's time to live).
    pub ttl: Option<Duration>,
    /// Append the batches to the key's table instead of replacing it (`x-flightcache-append`).
    pub append: bool,
    /// For an append: cap the key by this retention (`x-flightcache-max-rows`, `-max-bytes`,
    /// `-max-age`).
    pub retention: Option<Retention>,
}

/// Where a read starts, and whether it follows the key as it grows
/// ([`CacheClient::read`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The first row to read (`x-flightcache-from`).
    pub from: ReadFrom,
    /// Keep the stream open, sending each append as it lands (`x-flightcache-follow`).
    pub follow: bool,
}

/// A client for one flightcache server.
///
/// # Example
/// ```no_run
/// # async fn run() -> flightcache::Result<()> {
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::record_batch::RecordBatch;
/// use flightcache::{CacheClient, TableKey};
///
/// let mut client = CacheClient::connect("grpc://127.0.0.1:8815").await?;
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)])?;
/// let key = TableKey::try_new("numbers")?;
/// client.put_batches(&key, batch.schema(), vec![batch]).await?;
/// let (_schema, batches) = client.get_all(&key).await?;
/// assert_eq!(batches[0].num_rows(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CacheClient {
    flight: FlightClient,
    url: String,
    /// The `authorization` header this client's calls carry: its copy of the session's.
    authorization: Option<MetadataValue<Ascii>>,
    /// The session this client and its clones share.
    session: SharedSession,
}

impl Clone for CacheClient {
    /// Another client over the same connection (HTTP/2 multiplexes their calls), in the same
    /// session.
    fn clone(&self) -> Self {
        let mut clone = Self {
            flight: FlightClient::new_from_inner(self.flight.inner().clone()),
            url: self.url.clone(),
            authorization: None,
            session: Arc::clone(&self.session),
        };
        clone.set_authorization(self.authorization.clone());
        clone
    }
}

impl CacheClient {
    /// Connect to the server at `url` (`grpc://host:port`, `grpc+tcp://`, `http://` or
    /// `host:port`) with default settings.
    ///
    /// # Errors
    /// [`Error::Connect`] if the URL is unusable or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ClientConfig::default()).await
    }

    /// Connect to the server at `url` with `config`.
    ///
    /// # Errors
    /// [`Error::Connect`] if the URL is unusable or the server cannot be reached.
    pub async fn connect_with(url: &str, config: &ClientConfig) -> Result<Self> {
        let connect_error = |source: ConnectProblem| Error::Connect {
            addr: url.to_string(),
            source,
        };
        let (uri, tls) =
            transport_uri(url).map_err(|e| connect_error(ConnectProblem::BadUrl(e)))?;
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| connect_error(e.into()))?
            .tcp_nodelay(true)
            .max_frame_size(config.http2.max_frame_bytes)
            .initial_stream_window_size(config.http2.stream_window_bytes)
            .initial_connection_window_size(config.http2.connection_window_bytes);
        if tls {
            endpoint = endpoint
                .tls_config(tls_config(&config.tls))
                .map_err(|e| connect_error(e.into()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect_error(e.into()))?;
        let mut client = Self::from_channel(channel, url, config);
        let session = match &config.credentials {
            Some(Credentials::Bearer(token)) => Session::with_token(token)?,
            Some(basic @ Credentials::Basic { .. }) => {
                Session::with_password(client.flight.inner().clone(), basic.clone()).await?
            }
            None => Session::default(),
        };
        client.set_authorization(session.authorization().cloned());
        client.session = Arc::new(tokio::sync::Mutex::new(session));
        Ok(client)
    }

    fn from_channel(channel: Channel, url: &str, config: &ClientConfig) -> Self {
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes);
        Self {
            flight: FlightClient::new_from_inner(inner),
            url: url.to_string(),
            authorization: None,
            session: SharedSession::default(),
        }
    }

    /// Present `value` (the session's header) on every call from now on.
    fn set_authorization(&mut self, value: Option<MetadataValue<Ascii>>) {
        // FlightClient keeps its own headers for the calls it makes itself.
        let headers = self.flight.metadata_mut();
        match &value {
            Some(value) => headers.insert(AUTHORIZATION, value.clone()),
            None => headers.remove(AUTHORIZATION),
        };
        self.authorization = value;
    }

    /// Take the session's header, signed in again first if the session is near its end (one
    /// clone signs in for all): before any call, so that even an upload, which cannot be sent
    /// twice, finds a valid session. If that sign-in fails, the call goes on with the current
    /// token, which the server accepts for a while yet; a call it refuses signs in again.
    async fn refresh_session(&mut self) {
        let session = Arc::clone(&self.session);
        let mut session = session.lock().await;
        if session.is_due()
            && let Err(err) = session.sign_in(self.flight.inner().clone()).await
        {
            tracing::debug!(%err, "could not sign in again ahead of the session's end");
        }
        let current = session.authorization().cloned();
        drop(session);
        self.set_authorization(current);
    }

    /// Run `call` in a valid session: signed in again first if the session is near its end,
    /// and, if the server no longer knows the session (it restarted, or forgot it), signed in
    /// again and run once more. `call` must be safe to send twice: every call but an upload.
    async fn in_session<T>(
        &mut self,
        call: impl for<'c> Fn(&'c mut Self) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        self.refresh_session().await;
        let refused = match call(self).await {
            Err(err) if err.code() == Code::Unauthenticated => err,
            result => return result,
        };
        let session = Arc::clone(&self.session);
        let mut session = session.lock().await;
        let renewed = session
            .renew_after_refusal(self.authorization.as_ref(), self.flight.inner().clone())
            .await?;
        let current = session.authorization().cloned();
        drop(session);
        self.set_authorization(current);
        if renewed {
            call(self).await
        } else {
            Err(refused)
        }
    }

    /// `request` with this client's credentials.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        request
    }

    /// Who the server takes this client for, and what it may do (the `whoami` action).
    ///
    /// # Errors
    /// [`Error::Rpc`] with UNAUTHENTICATED without valid credentials.
    pub async fn whoami(&mut self) -> Result<WhoAmI> {
        self.action(CacheAction::WhoAmI, None).await
    }

    /// The URL this client was connected with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying arrow-flight client, for calls this type does not wrap. It carries the
    /// session's `authorization` header as of this client's last call, and does not sign in
    /// again by itself.
    pub fn flight_client(&mut self) -> &mut FlightClient {
        &mut self.flight
    }

    /// Upload a stream of batches under `key`, replacing any table there once the upload
    /// completes.
    ///
    /// If `batches` yields an error, the call is cancelled rather than ended, so the server
    /// stores nothing and keeps the old table; that error is returned.
    ///
    /// # Errors
    /// The first error of `batches`; [`Error::Rpc`] with InvalidArgument if the server refused
    /// the data; [`Error::UnexpectedAnswer`] if its answer cannot be read.
    pub async fn put<S>(
        &mut self,
        key: &TableKey,
        schema: SchemaRef,
        batches: S,
    ) -> Result<PutSummary>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + 'static,
    {
        self.put_with(key, schema, batches, &PutOptions::default())
            .await
    }

    /// Upload a stream of batches under `key` as [`put`](Self::put) does, stored as `options`
    /// say (with a time to live, say).
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn put_with<S>(
        &mut self,
        key: &TableKey,
        schema: SchemaRef,
        batches: S,
        options: &PutOptions,
    ) -> Result<PutSummary>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + 'static,
    {
        // An upload cannot be sent twice: the session is renewed before it, if due.
        self.refresh_session().await;
        let messages = encode_stream(&schema, Some(key.to_descriptor()), batches)
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        let (failed, failure) = oneshot::channel();
        let mut request = self.request(CancelOnError {
            inner: Box::pin(messages),
            failed: Some(failed),
        });
        let headers = request.metadata_mut();
        let number = |text: String| text.parse().expect("a number is a valid header value");
        if let Some(ttl) = options.ttl {
            headers.insert(TTL_HEADER, number(ttl.as_secs_f64().to_string()));
        }
        if options.append {
            headers.insert(APPEND_HEADER, number("1".into()));
        }
        if let Some(retention) = options.retention {
            if let Some(rows) = retention.max_rows {
                headers.insert(MAX_ROWS_HEADER, number(rows.to_string()));
            }
            if let Some(bytes) = retention.max_bytes {
                headers.insert(MAX_BYTES_HEADER, number(bytes.to_string()));
            }
            if let Some(age) = retention.max_age() {
                headers.insert(MAX_AGE_HEADER, number(age.as_secs_f64().to_string()));
            }
        }
        let mut inner = self.flight.inner().clone();
        let call = async move {
            let mut results = inner.do_put(request).await?.into_inner();
            let mut last = None;
            while let Some(result) = results.message().await? {
                last = Some(result);
            }
            Ok::<_, tonic::Status>(last)
        };
        // If the input fails, dropping `call` resets the HTTP/2 stream: the server sees a
        // cancelled upload, never a clean end that it would publish.
        let last = tokio::select! {
            result = call => result.map_err(|status| Error::from_status(status, Some(key))),
            Ok(err) = failure => return Err(flight_error(err, Some(key))),
        };
        let last = match last {
            Err(err) if err.code() == Code::Unauthenticated => {
                // The upload is spent; the next call signs in again first.
                let stale = self.authorization.as_ref();
                self.session.lock().await.renew_before_next_call(stale);
                return Err(err);
            }
            result => result?,
        };
        let result = last.ok_or(Error::UnexpectedAnswer {
            problem: AnswerProblem::Missing { rpc: "do_put" },
        })?;
        PutSummary::from_app_metadata(&result.app_metadata).map_err(|source| {
            Error::UnexpectedAnswer {
                problem: AnswerProblem::NotJson {
                    what: "PutResult".into(),
                    source,
                },
            }
        })
    }

    /// Upload `batches` under `key`; see [`put`](Self::put).
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn put_batches(
        &mut self,
        key: &TableKey,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<PutSummary> {
        self.put(
            key,
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        )
        .await
    }

    /// Start streaming the table under `key`.
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table; [`Error::UnexpectedAnswer`] if the
    /// server sends no schema.
    pub async fn get(&mut self, key: &TableKey) -> Result<TableStream> {
        self.read(key, ReadOptions::default()).await
    }

    /// Stream the rows of the table under `key` from where `options` say, following the key
    /// as it grows if they say so; the stream's [`start_offset`](TableStream::start_offset)
    /// is the offset of its first row (each later batch's is that plus the rows before it).
    ///
    /// # Errors
    /// As [`get`](Self::get); [`Error::Rpc`] with OUT_OF_RANGE for a start before the oldest
    /// row kept. A follower of a key that does not exist yet waits for it.
    pub async fn read(&mut self, key: &TableKey, options: ReadOptions) -> Result<TableStream> {
        let key = key.clone();
        self.in_session(move |client| Box::pin(client.read_once(key.clone(), options)))
            .await
    }

    /// [`read`](Self::read), once, in the current session.
    async fn read_once(&mut self, key: TableKey, options: ReadOptions) -> Result<TableStream> {
        let mut request = self.request(key.to_ticket());
        let headers = request.metadata_mut();
        let from = options.from.to_header();
        headers.insert(FROM_HEADER, from.parse().expect("a valid header value"));
        if options.follow {
            headers.insert(
                FOLLOW_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        let response = self
            .flight
            .inner()
            .clone()
            .do_get(request)
            .await
            .map_err(|status| Error::from_status(status, Some(&key)))?;
        let start_offset = response
            .metadata()
            .get(START_OFFSET_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse().ok());
        let messages = response
            .into_inner()
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        let stream = TableStream::start(FlightDataDecoder::new(messages), Some(key)).await?;
        Ok(stream.with_start_offset(start_offset))
    }

    /// Cap the key that grows under `key` by `retention` (no limit set: uncapped), trimming
    /// it at once; its offsets after.
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn retain(&mut self, key: &TableKey, retention: Retention) -> Result<Offsets> {
        self.action(
            CacheAction::Retain {
                key: key.clone(),
                retention,
            },
            Some(key),
        )
        .await
    }

    /// Run the SQL query `sql` through Flight SQL (`CommandStatementQuery`: planned by
    /// `get_flight_info`, run by `do_get` on its ticket) and stream its results.
    ///
    /// # Errors
    /// [`Error::Rpc`] with INVALID_ARGUMENT and the engine's message for a statement that does
    /// not parse or plan; UNIMPLEMENTED from a server without SQL.
    pub async fn query(&mut self, sql: &str) -> Result<TableStream> {
        let sql = sql.to_owned();
        self.in_session(move |client| Box::pin(client.query_once(sql.clone())))
            .await
    }

    /// [`query`](Self::query), once, in the current session.
    async fn query_once(&mut self, sql: String) -> Result<TableStream> {
        use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
        use prost::Message;
        let command = CommandStatementQuery {
            query: sql,
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let info = self
            .flight
            .get_flight_info(descriptor)
            .await
            .map_err(|e| flight_error(e, None))?;
        let ticket = info
            .endpoint
            .into_iter()
            .find_map(|endpoint| endpoint.ticket)
            .ok_or(Error::UnexpectedAnswer {
                problem: AnswerProblem::Missing {
                    rpc: "get_flight_info of a query (an endpoint with a ticket)",
                },
            })?;
        let decoder = self
            .flight
            .do_get(ticket)
            .await
            .map_err(|e| flight_error(e, None))?
            .into_inner();
        TableStream::start(decoder, None).await
    }

    /// Fetch the whole table under `key`.
    ///
    /// # Errors
    /// As [`get`](Self::get), and any error while streaming.
    pub async fn get_all(&mut self, key: &TableKey) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let stream = self.get(key).await?;
        let schema = stream.schema().clone();
        let batches = stream.try_collect().await?;
        Ok((schema, batches))
    }

    /// Describe the table under `key` (`get_flight_info`).
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn info(&mut self, key: &TableKey) -> Result<TableInfo> {
        let key = key.clone();
        self.in_session(move |client| Box::pin(client.info_once(key.clone())))
            .await
    }

    /// [`info`](Self::info), once, in the current session.
    async fn info_once(&mut self, key: TableKey) -> Result<TableInfo> {
        let key = &key;
        let info = self
            .flight
            .get_flight_info(key.to_descriptor())
            .await
            .map_err(|e| flight_error(e, Some(key)))?;
        table_info(info)
    }

    /// The schema of the table under `key` (`get_schema`).
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn schema(&mut self, key: &TableKey) -> Result<SchemaRef> {
        let key = key.clone();
        self.in_session(move |client| Box::pin(client.schema_once(key.clone())))
            .await
    }

    /// [`schema`](Self::schema), once, in the current session.
    async fn schema_once(&mut self, key: TableKey) -> Result<SchemaRef> {
        let key = &key;
        let schema: Schema = self
            .flight
            .get_schema(key.to_descriptor())
            .await
            .map_err(|e| flight_error(e, Some(key)))?;
        Ok(SchemaRef::new(schema))
    }

    /// Describe every table whose key starts with `prefix` ("" for all), sorted by key.
    ///
    /// # Errors
    /// [`Error::Rpc`] if the server refuses the call.
    pub async fn list(&mut self, prefix: &str) -> Result<Vec<TableInfo>> {
        let prefix = prefix.to_string();
        self.in_session(move |client| Box::pin(client.list_once(prefix.clone())))
            .await
    }

    /// [`list`](Self::list), once, in the current session.
    async fn list_once(&mut self, prefix: String) -> Result<Vec<TableInfo>> {
        let criteria = Criteria {
            expression: prefix.as_bytes().to_vec().into(),
        };
        let request = self.request(criteria);
        let mut infos = self
            .flight
            .inner_mut()
            .list_flights(request)
            .await
            .map_err(|s| Error::from_status(s, None))?
            .into_inner();
        let mut tables = Vec::new();
        while let Some(info) = infos
            .message()
            .await
            .map_err(|s| Error::from_status(s, None))?
        {
            tables.push(table_info(info)?);
        }
        Ok(tables)
    }

    /// Remove the table under `key`.
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn drop_table(&mut self, key: &TableKey) -> Result<DropResult> {
        self.action(CacheAction::Drop(key.clone()), Some(key)).await
    }

    /// Remove every table.
    ///
    /// # Errors
    /// [`Error::Rpc`] if the server refuses the call.
    pub async fn clear(&mut self) -> Result<ClearResult> {
        self.action(CacheAction::Clear, None).await
    }

    /// The server's contents, memory and counters.
    ///
    /// # Errors
    /// [`Error::Rpc`] if the server refuses the call.
    pub async fn stats(&mut self) -> Result<StoreStats> {
        self.action(CacheAction::Stats, None).await
    }

    /// Make the table under `key` expire `ttl` from now (the `expire` action).
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn expire(&mut self, key: &TableKey, ttl: Duration) -> Result<TtlResult> {
        let action = CacheAction::Expire {
            key: key.clone(),
            ttl,
        };
        self.action(action, Some(key)).await
    }

    /// Make the table under `key` never expire (the `persist` action).
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn persist(&mut self, key: &TableKey) -> Result<PersistResult> {
        self.action(CacheAction::Persist(key.clone()), Some(key))
            .await
    }

    /// The time to live of the table under `key` (the `ttl` action).
    ///
    /// # Errors
    /// [`Error::TableNotFound`] if there is no such table.
    pub async fn ttl(&mut self, key: &TableKey) -> Result<TtlResult> {
        self.action(CacheAction::Ttl(key.clone()), Some(key)).await
    }

    async fn action<T: DeserializeOwned + Send + 'static>(
        &mut self,
        action: CacheAction,
        key: Option<&TableKey>,
    ) -> Result<T> {
        let key = key.cloned();
        self.in_session(move |client| Box::pin(client.action_once(action.clone(), key.clone())))
            .await
    }

    /// `action`, once, in the current session.
    async fn action_once<T: DeserializeOwned>(
        &mut self,
        action: CacheAction,
        key: Option<TableKey>,
    ) -> Result<T> {
        let key = key.as_ref();
        let name = action.to_action().r#type;
        let bodies: Vec<_> = self
            .flight
            .do_action(action.to_action())
            .await
            .map_err(|e| flight_error(e, key))?
            .try_collect()
            .await
            .map_err(|e| flight_error(e, key))?;
        let body = bodies.first().ok_or(Error::UnexpectedAnswer {
            problem: AnswerProblem::Missing { rpc: "do_action" },
        })?;
        parse_json(body, &name)
    }
}

/// The URI tonic connects to for a flightcache URL, and whether it is TLS.
fn transport_uri(url: &str) -> std::result::Result<(String, bool), &'static str> {
    if let Some(rest) = url
        .strip_prefix("grpc://")
        .or_else(|| url.strip_prefix("grpc+tcp://"))
    {
        return Ok((format!("http://{rest}"), false));
    }
    if let Some(rest) = url.strip_prefix("grpc+tls://") {
        return Ok((format!("https://{rest}"), true));
    }
    if url.starts_with("http://") {
        return Ok((url.to_string(), false));
    }
    if url.starts_with("https://") {
        return Ok((url.to_string(), true));
    }
    if url.contains("://") {
        return Err("unknown URL scheme; use grpc://HOST:PORT or grpc+tls://HOST:PORT");
    }
    Ok((format!("http://{url}"), false))
}

/// tonic's TLS settings for `tls`.
fn tls_config(tls: &ClientTls) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &tls.ca_pem {
        config = config.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    config
}

/// The [`Error`] for an arrow-flight client error about `key`: a status from the server maps
/// as [`Error::from_status`], our own errors passed through arrow-flight come back unchanged.
pub(crate) fn flight_error(err: FlightError, key: Option<&TableKey>) -> Error {
    match err {
        FlightError::Tonic(status) => Error::from_status(*status, key),
        FlightError::Arrow(e) => Error::Arrow(e),
        FlightError::ExternalError(e) => match e.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::UnexpectedAnswer {
                problem: AnswerProblem::Flight(Box::new(FlightError::ExternalError(other))),
            },
        },
        other => Error::UnexpectedAnswer {
            problem: AnswerProblem::Flight(Box::new(other)),
        },
    }
}

fn table_info(info: FlightInfo) -> Result<TableInfo> {
    let descriptor = info
        .flight_descriptor
        .as_ref()
        .ok_or(Error::UnexpectedAnswer {
            problem: AnswerProblem::NoDescriptor,
        })?;
    let key = TableKey::try_from_descriptor(descriptor)?;
    let schema = info.clone().try_decode_schema()?;
    let locations = info
        .endpoint
        .iter()
        .flat_map(|endpoint| endpoint.location.iter().map(|l| l.uri.clone()))
        .collect();
    let expires_at = info
        .endpoint
        .iter()
        .find_map(|endpoint| endpoint.expiration_time)
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok());
    // Another server's metadata, or none, is no error: only what it does not say is missing.
    let metadata: Option<TableMetadata> = serde_json::from_slice(&info.app_metadata).ok();
    Ok(TableInfo {
        key,
        schema: SchemaRef::new(schema),
        rows: u64::try_from(info.total_records).unwrap_or(0),
        bytes: u64::try_from(info.total_bytes).unwrap_or(0),
        locations,
        ttl: metadata
            .as_ref()
            .and_then(|m| m.ttl_seconds)
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        expires_at,
        idle: metadata
            .as_ref()
            .and_then(|m| Duration::try_from_secs_f64(m.idle_seconds).ok()),
        offsets: metadata.map(|m| m.offsets),
    })
}

fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| Error::UnexpectedAnswer {
        problem: AnswerProblem::NotJson {
            what: what.to_string(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_urls_become_http_uris() {
        let uri = |url: &str| transport_uri(url).unwrap();
        assert_eq!(
            uri("grpc://127.0.0.1:8815"),
            ("http://127.0.0.1:8815".to_string(), false)
        );
        assert_eq!(uri("grpc+tcp://h:1"), ("http://h:1".to_string(), false));
        assert_eq!(
            uri("localhost:1"),
            ("http://localhost:1".to_string(), false)
        );
        assert_eq!(uri("grpc+tls://h:1"), ("https://h:1".to_string(), true));
        assert_eq!(uri("https://h:1"), ("https://h:1".to_string(), true));
        assert!(transport_uri("ftp://h:1").is_err());
    }
}
