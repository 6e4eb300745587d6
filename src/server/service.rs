//! `FlightCacheService`: the one door of each Flight RPC.
//!
//! The transport ([`crate::transport`]) reads every request off the wire and hands it, as a
//! [`Call`], to exactly one method here: one per RPC, whether the request is well formed or
//! not. A per-request rule (authentication, a memory reservation, an LRU touch, a TTL check,
//! tracing, counters) written in a door therefore applies to every request of its RPC, and no
//! faster path can bypass it. Each door answers a value or the [`Status`] to send. The
//! transport encodes what it is given; two things it does around the doors, on the doors'
//! terms: it drops, unread, the body of a request whose caller [`FlightCacheService::new_call`]
//! refused, and of every Handshake and DoExchange, whose messages no door reads (HTTP/2 then
//! discards what the client sends as it arrives: a stranger costs no memory while the door
//! answers), and it waits out the delay of a failed authentication before it answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_flight::sql::{Command, DoPutUpdateResult};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoResult, CancelStatus, Criteria, Empty, FlightDescriptor,
    FlightInfo, PollInfo, PutResult, SchemaResult, Ticket,
};
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::Status;
use tonic::codegen::http;
use tracing::instrument;

use crate::auth::throttle::failing_address;
use crate::auth::users::{Right, Users};
use crate::auth::{Authenticator, Caller};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::protocol::actions::{
    self, AdvanceClockResult, CacheAction, ClearResult, DropResult, StoreStats,
};
use crate::protocol::credentials::{AUTHORIZATION, AuthProblem, Credentials, SessionToken, WhoAmI};
use crate::protocol::key::{KeyProblem, TableKey};
use crate::protocol::put::PutSummary;
use crate::protocol::rpc::FlightRpc;
use crate::protocol::sql::{
    IngestTarget, SQL_ACTIONS, SQL_CATALOG, SQL_SCHEMA, cancelled_statements, descriptor_command,
    ingest_target, is_sql_action, ticket_command,
};
use crate::protocol::stream::{
    APPEND_HEADER, FOLLOW_HEADER, FROM_HEADER, MAX_AGE_HEADER, MAX_BYTES_HEADER, MAX_ROWS_HEADER,
    ReadFrom, Retention, START_OFFSET_HEADER, parse_flag_header, parse_from_header,
};
use crate::protocol::ttl::{PersistResult, TTL_HEADER, TableMetadata, TtlResult, parse_ttl_header};
use crate::server::call::Call;
use crate::server::config::{ServerConfig, UPLOAD_SLOT_WAIT};
use crate::server::slots::{SlotHolder, UploadSlots};
use crate::server::sql_doors::FlightDataStream;
use crate::server::tls::certificate_user;
use crate::store::budget::UploadAccount;
use crate::store::disk::DataDir;
use crate::store::follow::Follower;
use crate::store::slabs::SlabWriter;
use crate::store::table::schema_difference;
use crate::store::upload::TableUpload;
use crate::store::{AppendRefused, Expiry, StoredTable, TableStore};
use crate::transport::connection::{ConnectionState, client_certificates};
use crate::transport::receive::MessageReader;
use crate::transport::replay::{ReplayMessage, ReplayMessages};

/// The Flight service: a [`TableStore`] plus the limits that protect it.
///
/// Only the transport's router ([`crate::transport::router`]) calls it; it is crate-private so
/// that it cannot be served without the transport it needs.
#[derive(Debug, Clone)]
pub(crate) struct FlightCacheService {
    store: TableStore,
    /// Upload slots, shared fairly between callers.
    upload_slots: Arc<UploadSlots>,
    /// Password checks (argon2: tens of milliseconds of CPU and 19 MiB each) run at once: one
    /// per core, so a flood of sign-ins cannot take the memory or every blocking thread.
    password_checks: Arc<Semaphore>,
    config: Arc<ServerConfig>,
    /// The location every endpoint names (see [`crate::protocol::location`]).
    location: Arc<str>,
    /// Who may do what; `None`: a server without users, open to every caller.
    auth: Option<Arc<Authenticator>>,
    /// Where every table is also kept on disk (`--data-dir`), if anywhere.
    disk: Option<Arc<DataDir>>,
    /// Flight SQL's engine.
    #[cfg(feature = "sql")]
    sql: crate::sql::SqlEngine,
}

/// Where the `do_put` door sends the `PutResult`s of an upload as it goes (see
/// [`FlightCacheService::do_put`]); the transport streams them to the client.
pub(crate) type PutResults = mpsc::Sender<PutResult>;

impl FlightCacheService {
    /// A service over `store` (kept on disk in `disk`, if given), limited by `config`, whose
    /// endpoints name `location`.
    pub fn new(
        mut config: ServerConfig,
        location: String,
        store: TableStore,
        disk: Option<Arc<DataDir>>,
    ) -> Self {
        // The users move to the authenticator, which reloads them: the configuration keeps
        // no copy that a reload would leave stale. Sessions run on the store's clock.
        let clock = store.clock().clone();
        let auth = config.users.take().map(|users: Users| {
            Arc::new(Authenticator::new(
                users,
                config.users_file.clone(),
                config.token_ttl,
                clock.clone(),
            ))
        });
        let location: Arc<str> = location.into();
        Self {
            #[cfg(feature = "sql")]
            sql: crate::sql::SqlEngine::new(
                store.clone(),
                disk.clone(),
                Arc::clone(&location),
                crate::sql::QueryLimits {
                    max_concurrent: config.max_concurrent_queries,
                    timeout: config.query_timeout,
                },
            )
            .expect("DataFusion's runtime builds"),
            store,
            upload_slots: Arc::new(UploadSlots::new(
                config.max_concurrent_puts,
                config.max_puts_per_caller,
                UPLOAD_SLOT_WAIT,
            )),
            password_checks: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
            config: Arc::new(config),
            location,
            auth,
            disk,
        }
    }

    /// The data directory, on a server with one.
    pub fn disk(&self) -> Option<&Arc<DataDir>> {
        self.disk.as_ref()
    }

    /// Flight SQL's engine.
    #[cfg(feature = "sql")]
    pub fn sql(&self) -> &crate::sql::SqlEngine {
        &self.sql
    }

    /// The authenticator, on a server with users.
    pub fn authenticator(&self) -> Option<Arc<Authenticator>> {
        self.auth.clone()
    }

    /// Who sent `call`, and its message: every door starts here. A server without users
    /// admits everyone with every right; one with users needs a valid bearer token (a session
    /// token from the Handshake or an API token) or a client certificate naming a user.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] before the message is even looked at; then the message's
    /// own error, if it could not be read.
    fn admit<T>(&self, call: Call<T>) -> Result<(Caller, T)> {
        Ok((call.caller?, call.message?))
    }

    /// The call the HTTP/2 request `parts` makes, carrying `message`, with its caller judged
    /// once from its headers and its connection's client certificate: the router builds
    /// every call here, so that it can leave a refused caller's request unread, and the door
    /// admits or refuses the call on the same judgement.
    pub fn new_call<T>(&self, parts: &http::request::Parts, message: Result<T>) -> Call<T> {
        let caller = match &self.auth {
            None => Ok(Caller::open()),
            Some(auth) => credentials(&parts.headers).and_then(|credentials| {
                let certificate_user = client_certificates(&parts.extensions)
                    .and_then(|chain| certificate_user(&chain));
                auth.authenticate(credentials, certificate_user.as_deref())
            }),
        };
        Call::new(parts, caller, message)
    }

    /// The store the service serves.
    pub fn store(&self) -> &TableStore {
        &self.store
    }

    /// The configuration the service was made with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Count a failure and turn it into the status to send. A failed authentication is
    /// logged with its peer and answered only after its delay (see [`crate::auth::throttle`]):
    /// every door answers through here, so that the delay has one place.
    async fn answer<T>(&self, peer: Option<SocketAddr>, result: Result<T>) -> Result<T, Status> {
        self.answer_sign_in(peer, None, result).await
    }

    /// [`answer`](Self::answer) for a sign-in by `user`, whose wrong passwords count against
    /// the user name and address together.
    async fn answer_sign_in<T>(
        &self,
        peer: Option<SocketAddr>,
        user: Option<&str>,
        result: Result<T>,
    ) -> Result<T, Status> {
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        self.store.record_error();
        if let Error::Unauthenticated { problem } = &err {
            if problem.is_guess() {
                tracing::warn!(?peer, %problem, "authentication failed");
            } else {
                tracing::info!(?peer, %problem, "not authenticated");
            }
            if let Some(auth) = &self.auth {
                let delay = auth.count_failure(problem, user, peer.map(|p| p.ip()));
                tokio::time::sleep(delay).await;
            }
        }
        Err(Status::from(err))
    }

    /// The door of `Handshake`: HTTP basic credentials in, a session token out (pyarrow's
    /// `authenticate_basic_token`). The token goes back in the response's `authorization:
    /// Bearer TOKEN` header; every later call presents it, until the server's token lifetime
    /// (`--token-ttl`, which the response's `x-flightcache-token-ttl` header gives in seconds)
    /// runs out. A server without users has nothing to check: the Handshake
    /// succeeds and issues no token. A wrong password is answered only after a delay that
    /// doubles with each wrong one for the same user name from the same address (see
    /// [`crate::auth::throttle`]; [`answer_sign_in`](Self::answer_sign_in) waits it out).
    #[instrument(skip_all, fields(peer = ?call.peer, user))]
    pub async fn handshake(&self, call: Call<()>) -> Result<Option<SessionToken>, Status> {
        let peer = call.peer;
        let basic = match credentials(&call.headers) {
            Ok(Some(Credentials::Basic { user, password })) => Ok(Some((user, password))),
            Ok(_) => Ok(None),
            Err(err) => Err(err),
        };
        let user = basic
            .as_ref()
            .ok()
            .and_then(|b| b.as_ref())
            .map(|(user, _)| user.clone());
        let result = match (call.message, basic) {
            (Err(err), _) | (_, Err(err)) => Err(err),
            (Ok(()), Ok(basic)) => self.log_in(peer, basic).await,
        };
        self.answer_sign_in(peer, user.as_deref(), result).await
    }

    async fn log_in(
        &self,
        peer: Option<SocketAddr>,
        basic: Option<(String, String)>,
    ) -> Result<Option<SessionToken>> {
        let Some(auth) = self.auth.clone() else {
            return Ok(None);
        };
        let Some((user, password)) = basic else {
            return Err(Error::Unauthenticated {
                problem: AuthProblem::HandshakeWithoutBasic,
            });
        };
        tracing::Span::current().record("user", user.as_str());
        // One user name's passwords from one address are checked one at a time, after the
        // last wrong one's delay, within the user name's budget of wrong passwords.
        let turn = auth.sign_in_turn(&user, peer.map(|p| p.ip())).await?;
        // argon2 takes tens of milliseconds of CPU and 19 MiB on purpose: a few at a time,
        // off the runtime's threads. The permit goes with the check, so a client that hangs
        // up cannot leave checks running beyond the limit. (The semaphore is never closed: the
        // result always holds a permit.)
        // The turn goes with the check too: a wrong password is counted even if the client
        // hangs up before its answer, and the user name's next sign-in from the address waits
        // for it.
        let permit = Arc::clone(&self.password_checks).acquire_owned().await;
        let token = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let checked = auth.log_in(&user, &password);
            match &checked {
                Ok(_) => turn.succeed(),
                Err(_) => turn.fail(),
            }
            checked
        })
        .await
        .map_err(|source| Error::TaskFailed {
            task: "password check",
            source,
        })??;
        tracing::info!("authenticated");
        Ok(Some(SessionToken {
            token,
            ttl: self.config.token_ttl,
        }))
    }

    /// The door of `ListFlights`: one `FlightInfo` per table whose key starts with the
    /// criteria's expression (a UTF-8 key prefix; empty for all), sorted by key.
    #[instrument(skip_all, fields(peer = ?call.peer))]
    /// Only the tables the caller may read are listed.
    pub async fn list_flights(&self, call: Call<Criteria>) -> Result<Vec<FlightInfo>, Status> {
        self.answer(
            call.peer,
            self.admit(call).and_then(|(caller, criteria)| {
                let prefix =
                    std::str::from_utf8(&criteria.expression).map_err(|e| Error::InvalidKey {
                        problem: KeyProblem::NotUtf8 {
                            valid_up_to: e.valid_up_to(),
                        },
                    })?;
                Ok(self
                    .store
                    .list(prefix)
                    .into_iter()
                    .filter(|(key, _)| caller.may(Right::Read, key))
                    .map(|(key, stored)| self.flight_info(&key, key.to_descriptor(), &stored))
                    .collect())
            }),
        )
        .await
    }

    /// The door of `GetFlightInfo`: the table's schema, size and the one endpoint whose ticket
    /// `do_get` takes; for a Flight SQL command, its plan's schema and ticket.
    #[instrument(skip_all, fields(peer = ?call.peer, key))]
    pub async fn get_flight_info(
        &self,
        call: Call<FlightDescriptor>,
    ) -> Result<FlightInfo, Status> {
        let peer = call.peer;
        let result = match self.admit(call) {
            Ok((caller, descriptor)) => self.describe(&caller, descriptor).await,
            Err(err) => Err(err),
        };
        self.answer(peer, result).await
    }

    /// The `FlightInfo` a descriptor asks for: a cached table's, or a Flight SQL command's.
    async fn describe(&self, caller: &Caller, descriptor: FlightDescriptor) -> Result<FlightInfo> {
        match descriptor_command(&descriptor) {
            Some(command) => self.sql_flight_info(caller, descriptor, command?).await,
            None => {
                let (key, stored) = self.table_for(caller, &descriptor)?;
                Ok(self.flight_info(&key, descriptor, &stored))
            }
        }
    }

    /// The door of `PollFlightInfo`: a cached table is a query already complete, so the answer
    /// is its whole `FlightInfo`, progress 1.0 and no descriptor to poll again with.
    #[instrument(skip_all, fields(peer = ?call.peer, key))]
    pub async fn poll_flight_info(&self, call: Call<FlightDescriptor>) -> Result<PollInfo, Status> {
        let peer = call.peer;
        let result = match self.admit(call) {
            Ok((caller, descriptor)) => self.describe(&caller, descriptor).await,
            Err(err) => Err(err),
        };
        let result = result.map(|info| PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        });
        self.answer(peer, result).await
    }

    /// The door of `GetSchema`: the table's schema, metadata included.
    #[instrument(skip_all, fields(peer = ?call.peer, key))]
    pub async fn get_schema(&self, call: Call<FlightDescriptor>) -> Result<SchemaResult, Status> {
        let peer = call.peer;
        let result = match self.admit(call) {
            Ok((caller, descriptor)) => match descriptor_command(&descriptor) {
                Some(Ok(command)) => self.sql_schema(&caller, command).await,
                Some(Err(bad)) => Err(bad.into()),
                None => self
                    .table_for(&caller, &descriptor)
                    .map(|(_, stored)| stored.table.schema_result()),
            },
            Err(err) => Err(err),
        };
        self.answer(peer, result).await
    }

    /// The door of `DoGet`: the table the ticket names, for the transport to stream; or a
    /// Flight SQL ticket's answer.
    #[instrument(skip_all, fields(peer = ?call.peer, key))]
    pub async fn do_get(&self, call: Call<Ticket>) -> Result<GetAnswer, Status> {
        let peer = call.peer;
        let reading = ReadRequest::from_headers(&call.headers);
        let (caller, ticket) = match self.admit(call) {
            Ok(admitted) => admitted,
            Err(err) => return self.answer(peer, Err(err)).await,
        };
        if let Some(command) = ticket_command(&ticket) {
            let answer = match command {
                Ok(command) => self.sql_do_get(&caller, command).await,
                Err(bad) => Err(bad.into()),
            };
            if answer.is_ok() {
                self.store.record_get();
            }
            return self.answer(peer, answer.map(GetAnswer::Sql)).await;
        }
        let read = match reading {
            Ok(reading) => self.table_to_read(&caller, &ticket, reading).await,
            Err(err) => Err(err),
        };
        self.answer(
            peer,
            read.inspect(|_| self.store.record_get())
                .map(GetAnswer::Table),
        )
        .await
    }

    /// The rows a plain ticket names, from where `reading` starts, if `caller` may read them
    /// (checked first); a table that came back from disk is checked before it is first
    /// served. A follower waits here for a key that does not exist yet.
    async fn table_to_read(
        &self,
        caller: &Caller,
        ticket: &Ticket,
        reading: ReadRequest,
    ) -> Result<TableRead> {
        let key = TableKey::try_from_ticket(ticket)?;
        tracing::Span::current().record("key", key.as_str());
        caller.require(Right::Read, Some(&key))?;
        let span = tracing::Span::current();
        if reading.follow {
            let mut follower = Follower::new(&self.store, key.clone(), reading.from);
            let (start, stored) = follower.start().await?;
            if let Some(disk) = &self.disk {
                disk.check(&key, &stored).await?;
            }
            tracing::debug!(start, "following");
            let messages = futures::stream::unfold(follower, |mut follower| async move {
                let message = follower.next().await?;
                Some((
                    message.map(ReplayMessage::from).map_err(Status::from),
                    follower,
                ))
            });
            return Ok(TableRead::new(Box::pin(messages), start, span));
        }
        let stored = self
            .store
            .read(&key)
            .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
        if let Some(disk) = &self.disk {
            disk.check(&key, &stored).await?;
        }
        let table = stored.table;
        let start = table
            .start_of(reading.from)
            .map_err(|err| err.for_read(&key))?;
        let messages = table
            .messages_from(start, self.store.budget(), &key)
            .map_err(|err| err.for_read(&key))?;
        tracing::debug!(
            rows = table.rows(),
            bytes = table.bytes(),
            start,
            "streaming table"
        );
        let messages = futures::stream::iter(messages.map(|m| Ok(ReplayMessage::from(m))));
        Ok(TableRead::new(Box::pin(messages), start, span))
    }

    /// The door of `DoPut`: receive one upload and store it, or store nothing.
    ///
    /// Every message that carries `app_metadata` is acknowledged, once received and validated,
    /// by a `PutResult` echoing it on `results`, before the next message is read: clients that
    /// wait for each echo before they send on (Arrow's integration clients, pyarrow's
    /// `write_with_metadata` then `metadata_reader.read()`) can. An upload whose messages carry
    /// no app_metadata is answered instead by one `PutResult` with its [`PutSummary`] as JSON,
    /// once it is stored. Nothing is stored before the stream ends cleanly, echoes or not.
    ///
    /// The request header [`TTL_HEADER`] (`x-flightcache-ttl: SECONDS`) gives the table a time
    /// to live; without it, the table never expires. With [`APPEND_HEADER`]
    /// (`x-flightcache-append: 1`) the upload's batches are appended to the key's table
    /// (created if absent) in one step, its time to live kept unless the header gives one, its
    /// retention set by [`MAX_ROWS_HEADER`], [`MAX_BYTES_HEADER`] and [`MAX_AGE_HEADER`] if
    /// given; the answer's summary then says the offset its first row took. Every byte the upload holds is charged to
    /// the memory budget as it arrives; a charge the budget cannot make room for fails the
    /// upload at once with RESOURCE_EXHAUSTED, and the table under the key stays as it was.
    ///
    /// The upload runs as a task of its own that nothing aborts (see the router): a client
    /// that goes away ends it through its reader, and its failure is counted by
    /// [`answer`](Self::answer) like any other.
    #[instrument(skip_all, fields(peer = ?call.peer, key))]
    pub async fn do_put(
        &self,
        call: Call<MessageReader>,
        results: PutResults,
    ) -> Result<(), Status> {
        let peer = call.peer;
        let request = PutRequest::from_headers(&call.headers);
        let connection = call.connection.clone();
        let result = match (self.admit(call), request) {
            (Ok((caller, messages)), Ok(request)) => {
                self.put(&caller, peer, connection, messages, request, &results)
                    .await
            }
            (Err(err), _) | (_, Err(err)) => Err(err),
        };
        self.answer(peer, result).await
    }

    async fn put(
        &self,
        caller: &Caller,
        peer: Option<SocketAddr>,
        connection: Option<Arc<ConnectionState>>,
        mut messages: MessageReader,
        request: PutRequest,
        results: &PutResults,
    ) -> Result<()> {
        let PutRequest {
            ttl,
            mut append,
            retention,
        } = request;
        // A caller who may write no key at all takes no upload slot (one who may read binds
        // Flight SQL parameters through do_put).
        if !cfg!(feature = "sql") || caller.require(Right::Read, None).is_err() {
            caller.require(Right::Write, None)?;
        }
        let per_connection = self.config.max_puts_per_connection;
        let _connection_slot = match &connection {
            Some(connection) => Some(connection.try_start_upload(per_connection).ok_or(
                Error::TooManyUploadsOnConnection {
                    limit: per_connection,
                },
            )?),
            None => None,
        };
        // Counted against the user, or on a server without users against the address.
        let holder = match (&caller.user, peer) {
            (Some(user), _) => SlotHolder::User(user.clone()),
            (None, Some(peer)) => SlotHolder::Address(failing_address(peer.ip())),
            (None, None) => SlotHolder::Unknown,
        };
        let _slot = self.upload_slots.acquire(holder).await?;
        let idle = self.config.request_idle_timeout;
        let account = UploadAccount::new(self.store.budget());
        let mut memory = SlabWriter::new(self.store.slab_pool(), account);
        // The key is decoded, and the write right on it checked, once: as soon as the first
        // message's descriptor is read, before its body is received or charged to the budget.
        let mut named = None;
        let mut sql = None;
        let mut ingest = None;
        let first = messages
            .next_message_checked(&mut memory, |head| {
                // The first message names its key before its body (as every Flight client
                // writes it), or it is refused before the body is read.
                let descriptor = head
                    .flight_descriptor
                    .as_ref()
                    .ok_or(Error::MissingDescriptor)?;
                match descriptor_command(descriptor).transpose()? {
                    Some(Command::CommandStatementIngest(command)) => {
                        let target = ingest_target(&command, SQL_CATALOG, SQL_SCHEMA)?;
                        let key = TableKey::try_new(target.table.as_str())?;
                        caller.require(Right::Write, None)?;
                        caller.require(Right::Write, Some(&key))?;
                        self.ingest_allowed(&key, &target)?;
                        append = target.append;
                        named = Some(key);
                        ingest = Some(target);
                        return Ok(());
                    }
                    Some(command) => {
                        // Checked before its body is received: a bind of a statement the
                        // caller was issued, nothing else.
                        sql = Some(self.sql_put_check(caller, command)?);
                        return Ok(());
                    }
                    None => {}
                }
                let key = TableKey::try_from_descriptor(descriptor)?;
                caller.require(Right::Write, None)?;
                caller.require(Right::Write, Some(&key))?;
                named = Some(key);
                Ok(())
            })
            .await?;
        if let Some(handle) = sql {
            let first = first.ok_or(Error::MissingDescriptor)?;
            return self
                .sql_put(caller, &handle, first, messages, memory, results)
                .await;
        }
        let (Some(first), Some(key)) = (first, named) else {
            return Err(Error::MissingDescriptor);
        };
        tracing::Span::current().record("key", key.as_str());

        // Under `--durability always`, the table's file is written as the upload arrives (an
        // append's, once it is stored: its offsets are known only then).
        let mut file = match append {
            false => self.disk.as_ref().and_then(|disk| disk.stream_file(&key)),
            true => None,
        };
        if append && let Some(open) = self.store.take_open_slab(&key) {
            memory.resume(open);
        }
        let mut upload = TableUpload::new(key, memory, self.config.max_message_bytes);
        let mut echoed = false;
        // Whether the client still listens for the answer.
        let mut listening = true;
        let mut next = Some(first);
        while let Some(message) = next {
            let tag = message.app_metadata.clone();
            let was_first = upload.schema().is_none();
            upload.push(message)?;
            if append && was_first {
                // Refused at its schema, before its batches are received.
                self.check_append_schema(&upload)?;
            }
            if let (Some(file), Some(disk)) = (&mut file, &self.disk) {
                file.write(upload.messages(), disk).await?;
            }
            if !tag.is_empty() && listening {
                echoed = true;
                // A client that does not read its acknowledgements stalls the upload; it gets
                // the same time as one that sends nothing.
                let echo = PutResult { app_metadata: tag };
                match tokio::time::timeout(idle, results.send(echo)).await {
                    Ok(Ok(())) => {}
                    // The client dropped the call but may still be sending: the upload goes
                    // on unanswered, and is stored if its stream ends cleanly.
                    Ok(Err(_)) => listening = false,
                    Err(_) => {
                        return Err(Error::RequestIdle {
                            rpc: FlightRpc::DoPut,
                            idle,
                        });
                    }
                }
            }
            next = messages
                .next_message(upload.memory())
                .await
                .map_err(|err| err.for_key(upload.key()))?;
        }
        let key = upload.key().clone();
        let (table, open_slab) = match append {
            true => upload.finish_append()?,
            false => (upload.finish()?, None),
        };
        let table = Arc::new(table);
        let mut summary = PutSummary {
            key: key.to_string(),
            rows: table.rows(),
            bytes: table.bytes(),
            batches: table.batches(),
            first_offset: None,
        };
        // An ingest checks again as it stores: another put may have stored or dropped the
        // key since it began.
        if let Some(target) = &ingest {
            self.ingest_allowed(&key, target)?;
        }
        if append {
            let appended = match &self.disk {
                Some(disk) => disk.append(&key, table, ttl, retention).await?,
                None => self.store.append(&key, table, ttl, retention, None),
            };
            let appended = appended.map_err(|refused| match refused {
                AppendRefused::SchemaDiffers(difference) => Error::AppendSchemaMismatch {
                    key: key.clone(),
                    difference,
                },
                AppendRefused::Moved => Error::AppendRaced { key: key.clone() },
            })?;
            summary.first_offset = Some(appended.first_offset);
            if let Some(open) = open_slab {
                self.store.keep_open_slab(&key, appended.table_id, open);
            }
        } else {
            let expiry = ttl.and_then(|ttl| Expiry::after(self.store.clock().now(), ttl));
            match &self.disk {
                Some(disk) => {
                    disk.publish(key, table, expiry, file).await?;
                }
                None => {
                    self.store.insert_with_expiry(key, table, expiry);
                }
            }
        }
        tracing::info!(
            rows = summary.rows,
            bytes = summary.bytes,
            ?ttl,
            "table stored"
        );
        if ingest.is_some() {
            // Flight SQL's answer to an ingest: the rows stored.
            let result = DoPutUpdateResult {
                record_count: i64::try_from(summary.rows).unwrap_or(i64::MAX),
            };
            results
                .send(PutResult {
                    app_metadata: result.encode_to_vec().into(),
                })
                .await
                .ok();
        } else if !echoed {
            let summary = PutResult {
                app_metadata: summary.to_app_metadata(),
            };
            // The table is stored; a client gone meanwhile just misses the summary.
            results.send(summary).await.ok();
        }
        Ok(())
    }

    /// Refuse an append whose schema (its first message, just validated) is not the schema of
    /// the table under its key, if there is one.
    fn check_append_schema(&self, upload: &TableUpload) -> Result<()> {
        let (Some(schema), Some(stored)) = (upload.schema(), self.store.peek(upload.key())) else {
            return Ok(());
        };
        match schema_difference(stored.table.schema(), schema) {
            None => Ok(()),
            Some(difference) => Err(Error::AppendSchemaMismatch {
                key: upload.key().clone(),
                difference,
            }),
        }
    }

    /// Whether an ingest into `target` may store `key` as the cache stands now.
    ///
    /// # Errors
    /// [`Error::TableExists`] for a cached key it may not replace, [`Error::TableNotFound`]
    /// for a missing key it may not create.
    fn ingest_allowed(&self, key: &TableKey, target: &IngestTarget) -> Result<()> {
        match (self.store.peek(key).is_some(), target) {
            (
                true,
                IngestTarget {
                    replace: false,
                    append: false,
                    ..
                },
            ) => Err(Error::TableExists { key: key.clone() }),
            (false, IngestTarget { create: false, .. }) => {
                Err(Error::TableNotFound { key: key.clone() })
            }
            _ => Ok(()),
        }
    }

    /// The door of `DoExchange`, which flightcache does not offer.
    #[instrument(skip_all, fields(peer = ?call.peer))]
    pub async fn do_exchange(&self, call: Call<()>) -> Result<(), Status> {
        self.answer(
            call.peer,
            self.admit(call).and(Err(Error::Unimplemented {
                rpc: FlightRpc::DoExchange,
            })),
        )
        .await
    }

    /// The door of `DoAction`: run one action; its one result (JSON for flightcache's own
    /// actions, protobuf for Flight's standard ones).
    #[instrument(skip_all, fields(peer = ?call.peer, action, key))]
    pub async fn do_action(&self, call: Call<Action>) -> Result<Vec<arrow_flight::Result>, Status> {
        let peer = call.peer;
        let admitted = self.admit(call);
        if let Ok((caller, action)) = &admitted
            && is_sql_action(&action.r#type)
        {
            tracing::Span::current().record("action", action.r#type.as_str());
            let result = self.sql_action(caller, action.clone()).await;
            return self.answer(peer, result).await;
        }
        if let Ok((caller, action)) = &admitted
            && action.r#type == actions::CANCEL_FLIGHT_INFO
            && let Some(handles) = cancelled_statements(&action.body)
        {
            tracing::Span::current().record("action", action.r#type.as_str());
            let result = self.sql_cancel(caller, &handles);
            return self.answer(peer, result).await;
        }
        self.answer(
            peer,
            admitted.and_then(|(caller, action)| {
                tracing::Span::current().record("action", action.r#type.as_str());
                let action = CacheAction::try_from(action)?;
                let (right, key) = action.needs();
                if let Some(right) = right {
                    caller.require(right, key)?;
                }
                let body = self.run_action(&caller, action)?;
                Ok(vec![arrow_flight::Result { body: body.into() }])
            }),
        )
        .await
    }

    /// Run `action` for `caller`, who holds the right it [needs](CacheAction::needs).
    fn run_action(&self, caller: &Caller, action: CacheAction) -> Result<Vec<u8>> {
        let body = match action {
            CacheAction::WhoAmI => serde_json::to_vec(&WhoAmI {
                user: caller.user.clone(),
                proof: caller.proof.as_str().to_string(),
                read: caller
                    .rights
                    .patterns(Right::Read)
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                write: caller
                    .rights
                    .patterns(Right::Write)
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                admin: caller.rights.admin,
            }),
            CacheAction::Drop(key) => {
                tracing::Span::current().record("key", key.as_str());
                let table = self
                    .store
                    .remove(&key)
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                let (rows, bytes) = (table.rows(), table.bytes());
                drop(table); // freed (or pooled) before answering, unless a get still reads it
                serde_json::to_vec(&DropResult {
                    key: key.to_string(),
                    rows,
                    bytes,
                })
            }
            CacheAction::Clear => serde_json::to_vec(&ClearResult {
                tables: self.store.clear(),
            }),
            CacheAction::Stats => serde_json::to_vec(&self.stats()),
            CacheAction::AdvanceClock(by) => {
                if !self.config.test_clock {
                    return Err(Error::TestClockOff);
                }
                let clock = self.store.clock();
                clock.advance(by);
                // Keys past their deadline go now, so the answer finds them gone from `stats`
                // too; the sweep then sleeps until the next deadline on the moved clock.
                self.store.sweep_expired();
                self.store.wake_sweep();
                tracing::warn!(by = ?by, skipped = ?clock.skipped(), "the test clock moved forward");
                serde_json::to_vec(&AdvanceClockResult {
                    skipped_seconds: clock.skipped().as_secs_f64(),
                })
            }
            CacheAction::Expire { key, ttl } => {
                tracing::Span::current().record("key", key.as_str());
                let expiry = self
                    .store
                    .expire(&key, ttl)
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                self.expiry_changed(&key);
                serde_json::to_vec(&ttl_result(&key, Some(expiry), self.store.clock().now()))
            }
            CacheAction::Persist(key) => {
                tracing::Span::current().record("key", key.as_str());
                let had_ttl = self
                    .store
                    .persist(&key)
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                self.expiry_changed(&key);
                serde_json::to_vec(&PersistResult {
                    key: key.to_string(),
                    had_ttl,
                })
            }
            CacheAction::Retain { key, retention } => {
                tracing::Span::current().record("key", key.as_str());
                let offsets = self
                    .store
                    .retain(&key, Some(retention))
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                self.expiry_changed(&key);
                serde_json::to_vec(&offsets)
            }
            CacheAction::Ttl(key) => {
                tracing::Span::current().record("key", key.as_str());
                let stored = self
                    .store
                    .peek(&key)
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                serde_json::to_vec(&ttl_result(&key, stored.expiry, self.store.clock().now()))
            }
            CacheAction::CancelFlightInfo(key) => {
                tracing::Span::current().record("key", key.as_str());
                if self.store.peek(&key).is_none() {
                    return Err(Error::TableNotFound { key });
                }
                let result = CancelFlightInfoResult::new(CancelStatus::NotCancellable);
                return Ok(result.encode_to_vec());
            }
            CacheAction::RenewFlightEndpoint { key, mut endpoint } => {
                tracing::Span::current().record("key", key.as_str());
                let expiry = self
                    .store
                    .renew(&key)
                    .ok_or_else(|| Error::TableNotFound { key: key.clone() })?;
                self.expiry_changed(&key);
                endpoint.expiration_time =
                    expiry.map(|expiry| wall_clock(expiry, self.store.clock()));
                return Ok(endpoint.encode_to_vec());
            }
        };
        Ok(body.expect("action results serialize"))
    }

    /// The cache's contents and counters, the data directory's included.
    pub fn stats(&self) -> StoreStats {
        let mut stats = self.store.stats();
        if let Some(disk) = &self.disk {
            disk.add_to(&mut stats);
        }
        stats
    }

    /// Keep `key`'s new deadline on disk too, if there is a data directory.
    fn expiry_changed(&self, key: &TableKey) {
        if let Some(disk) = &self.disk {
            disk.expiry_changed(key);
        }
    }

    /// The door of `ListActions`: every action `do_action` handles.
    #[instrument(skip_all, fields(peer = ?call.peer))]
    pub async fn list_actions(&self, call: Call<Empty>) -> Result<Vec<ActionType>, Status> {
        self.answer(
            call.peer,
            self.admit(call).map(|(_, Empty {})| {
                let mut types = actions::action_types(self.config.test_clock);
                if cfg!(feature = "sql") {
                    types.extend(SQL_ACTIONS.iter().map(|(name, description)| ActionType {
                        r#type: (*name).to_owned(),
                        description: (*description).to_owned(),
                    }));
                }
                types
            }),
        )
        .await
    }

    /// The `FlightInfo` of `stored` under `key`, reached through `descriptor`: its endpoint
    /// carries the table's expiry as `expiration_time`, and `app_metadata` its
    /// [`TableMetadata`] as JSON.
    fn flight_info(
        &self,
        key: &TableKey,
        descriptor: FlightDescriptor,
        stored: &StoredTable,
    ) -> FlightInfo {
        let clock = self.store.clock();
        let now = clock.now();
        let mut info = stored.table.flight_info(key, descriptor, &self.location);
        let expiration = stored.expiry.map(|expiry| wall_clock(expiry, clock));
        for endpoint in &mut info.endpoint {
            endpoint.expiration_time = expiration;
        }
        let metadata = TableMetadata {
            ttl_seconds: stored.expiry.map(|e| e.remaining(now).as_secs_f64()),
            idle_seconds: now
                .saturating_duration_since(stored.last_used)
                .as_secs_f64(),
            offsets: stored.table.offsets(),
        };
        info.app_metadata = serde_json::to_vec(&metadata)
            .expect("table metadata serializes")
            .into();
        info
    }

    /// The key a descriptor names and the table under it, if `caller` may read it (checked
    /// first: a refusal says nothing about whether the key exists).
    fn table_for(
        &self,
        caller: &Caller,
        descriptor: &FlightDescriptor,
    ) -> Result<(TableKey, StoredTable)> {
        let key = TableKey::try_from_descriptor(descriptor)?;
        tracing::Span::current().record("key", key.as_str());
        caller.require(Right::Read, Some(&key))?;
        match self.store.peek(&key) {
            Some(table) => Ok((key, table)),
            None => Err(Error::TableNotFound { key }),
        }
    }
}

/// What `expire` and `ttl` answer for `key` with `expiry`, at `now`.
fn ttl_result(key: &TableKey, expiry: Option<Expiry>, now: Instant) -> TtlResult {
    TtlResult {
        key: key.to_string(),
        ttl_seconds: expiry.map(|e| e.remaining(now).as_secs_f64()),
    }
}

/// When `expiry`'s deadline (on the store's `clock`) falls on the wall clock, as Flight's
/// timestamps give it: the wall clock moves forward with the store's clock.
fn wall_clock(expiry: Expiry, clock: &Clock) -> prost_types::Timestamp {
    (SystemTime::now() + clock.skipped() + expiry.remaining(clock.now())).into()
}

/// What a `do_get` streams: a cached table, or a Flight SQL ticket's answer.
pub(crate) enum GetAnswer {
    /// A cached table, replayed as stored.
    Table(TableRead),
    /// A query's results or a metadata answer, encoded as they are produced.
    Sql(FlightDataStream),
}

/// The rows a `do_get` streams: a stored table's messages from an offset (the get holds the
/// table, so a replace or drop meanwhile does not disturb it), or a follower's.
pub(crate) struct TableRead {
    /// The messages, schema first.
    pub messages: ReplayMessages,
    /// The response headers: the offset of the first row sent ([`START_OFFSET_HEADER`]).
    pub headers: http::HeaderMap,
    /// The get's span, which the end of the stream is logged in.
    pub span: tracing::Span,
}

impl TableRead {
    fn new(messages: ReplayMessages, start: u64, span: tracing::Span) -> Self {
        let mut headers = http::HeaderMap::new();
        headers.insert(START_OFFSET_HEADER, start.into());
        Self {
            messages,
            headers,
            span,
        }
    }
}

/// What a `do_put` asks besides its messages, in its request headers.
#[derive(Debug, Clone, Copy, Default)]
struct PutRequest {
    /// [`TTL_HEADER`].
    ttl: Option<Duration>,
    /// [`APPEND_HEADER`].
    append: bool,
    /// [`MAX_ROWS_HEADER`], [`MAX_BYTES_HEADER`], [`MAX_AGE_HEADER`].
    retention: Option<Retention>,
}

impl PutRequest {
    fn from_headers(headers: &http::HeaderMap) -> Result<Self> {
        let ttl = headers
            .get(TTL_HEADER)
            .map(|value| parse_ttl_header(value.as_bytes()))
            .transpose()?;
        let append = headers
            .get(APPEND_HEADER)
            .map(|value| parse_flag_header(APPEND_HEADER, value.as_bytes()))
            .transpose()?
            .unwrap_or(false);
        let retention = Retention::from_headers(|name| {
            headers.get(name).map(|value| value.as_bytes().to_vec())
        })?;
        if retention.is_some() && !append {
            let header = [MAX_ROWS_HEADER, MAX_BYTES_HEADER, MAX_AGE_HEADER]
                .into_iter()
                .find(|name| headers.contains_key(*name))
                .unwrap_or(MAX_ROWS_HEADER);
            return Err(Error::RetentionWithoutAppend { header });
        }
        Ok(Self {
            ttl,
            append,
            retention,
        })
    }
}

/// What a plain `do_get` asks besides its ticket, in its request headers: where to start
/// ([`FROM_HEADER`]) and whether to follow ([`FOLLOW_HEADER`]).
#[derive(Debug, Clone, Copy, Default)]
struct ReadRequest {
    from: ReadFrom,
    follow: bool,
}

impl ReadRequest {
    fn from_headers(headers: &http::HeaderMap) -> Result<Self> {
        let from = headers
            .get(FROM_HEADER)
            .map(|value| parse_from_header(value.as_bytes()))
            .transpose()?
            .unwrap_or_default();
        let follow = headers
            .get(FOLLOW_HEADER)
            .map(|value| parse_flag_header(FOLLOW_HEADER, value.as_bytes()))
            .transpose()?
            .unwrap_or(false);
        Ok(Self { from, follow })
    }
}

/// The credentials in a request's `authorization` header, if it has one.
///
/// # Errors
/// [`Error::Unauthenticated`] for a header that is neither basic nor bearer credentials.
fn credentials(headers: &http::HeaderMap) -> Result<Option<Credentials>> {
    headers
        .get(AUTHORIZATION)
        .map(|value| Credentials::from_header(value.as_bytes()))
        .transpose()
        .map_err(|problem| Error::Unauthenticated { problem })
}
