//! SQL over the cached tables, through Flight SQL on the same port as plain Flight
//! (feature `sql`).
//!
//! Flight SQL's commands arrive as protobuf `Any` messages in the descriptors, tickets and
//! actions of the plain Flight RPCs, so they enter through the same doors (the server's
//! [`service`](crate::server)), after the same authentication. [`SqlEngine`] answers them:
//! Apache DataFusion parses, plans and runs the statements over [`catalog`]'s view of the
//! store (only the keys the caller may read), whose scans ([`scan`]) read the stored batches
//! in place ([`decode`]). Statements are read-only queries; prepared statements and query
//! tickets are signed handles bound to their caller ([`handle`]); [`metadata`] answers what
//! SQL tools ask about the server and its tables.

pub(crate) mod catalog;
pub(crate) mod handle;
pub(crate) mod memory;
pub(crate) mod metadata;
pub(crate) mod running;
pub(crate) mod scan;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, DoPutPreparedStatementResult,
    ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{
    CancelStatus, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage,
    SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use datafusion::catalog::MemoryCatalogProviderList;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::auth::Caller;
use crate::auth::users::Right;
use crate::error::{Error, Result};
use crate::protocol::encode::encode_stream;
use crate::protocol::sql::{FLIGHT_SQL_TYPE_PREFIX, SQL_ACTIONS};
use crate::sql::catalog::{CATALOG, CacheCatalog, CallerTables, SCHEMA};
use crate::sql::handle::{HandleSigner, Statement};
use crate::sql::memory::BudgetPool;
use crate::sql::metadata::MetadataCommand;
use crate::sql::running::{Registration, RunningQueries};
use crate::store::TableStore;
use crate::store::decode::MessageDecoder;
use crate::store::disk::DataDir;
use crate::store::table::Segment;

/// A stream of Flight messages answering a Flight SQL `DoGet`.
pub(crate) type FlightDataStream = BoxStream<'static, Result<FlightData>>;

/// What a `GetFlightInfo` or `GetSchema` command asks about.
enum Asked {
    /// A query: a statement's SQL, or a prepared statement.
    Query(Statement),
    /// Anything else (a metadata command, or one flightcache does not run).
    Other(Command),
}

/// How many queries run at once, and for how long each may.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryLimits {
    /// Queries run at once; more are refused.
    pub max_concurrent: usize,
    /// How long one may run from its `DoGet`.
    pub timeout: Duration,
}

/// Plans and runs SQL statements over a store's tables, for callers each limited to what they
/// may read.
#[derive(Debug, Clone)]
pub(crate) struct SqlEngine {
    store: TableStore,
    disk: Option<Arc<DataDir>>,
    signer: HandleSigner,
    /// Where each endpoint of a statement's `FlightInfo` may be fetched.
    location: Arc<str>,
    /// What every session starts from: the configuration, the runtime (the memory pool over
    /// the store's budget, no disk to spill to) and the functions, made once. Shared: the
    /// engine is cloned with the service for every request, and a `SessionState` clone copies
    /// every function's name (about 250 allocations).
    base: Arc<SessionState>,
    limits: QueryLimits,
    /// One permit per query running.
    running: Arc<Semaphore>,
    /// The queries running, for `CancelFlightInfo`.
    queries: Arc<RunningQueries>,
}

impl SqlEngine {
    /// An engine over `store`'s tables (kept on disk in `disk`), whose endpoints name
    /// `location`, running queries within `limits` and their memory within the store's budget.
    ///
    /// # Errors
    /// [`Error::SqlStatement`] if DataFusion's runtime cannot be built (a bug).
    pub fn new(
        store: TableStore,
        disk: Option<Arc<DataDir>>,
        location: Arc<str>,
        limits: QueryLimits,
    ) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(BudgetPool::new(store.budget())))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(sql_error)?;
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false);
        let base = SessionContext::new_with_config_rt(config, runtime);
        // Functions whose output a caller sizes at will, allocated outside the memory pool:
        // `SELECT generate_series(1e10)` would take the process's memory.
        for name in UNBOUNDED_FUNCTIONS {
            base.deregister_udf(name);
            base.deregister_udtf(name);
        }
        Ok(Self {
            store,
            disk,
            signer: HandleSigner::new(),
            location,
            base: Arc::new(base.state()),
            limits,
            running: Arc::new(Semaphore::new(limits.max_concurrent)),
            queries: Arc::new(RunningQueries::default()),
        })
    }

    fn tables(&self, caller: &Caller) -> CallerTables {
        CallerTables::new(
            self.store.clone(),
            self.disk.clone(),
            Arc::new(caller.clone()),
        )
    }

    /// A session whose one catalog holds what `caller` may read.
    ///
    /// Built from a state made once (configuration, runtime, functions), with a catalog list of
    /// its own: a session's catalog is never another caller's.
    fn session(&self, caller: &Caller) -> SessionContext {
        let state = SessionStateBuilder::new_from_existing(SessionState::clone(&self.base))
            .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
            .build();
        let context = SessionContext::new_with_state(state);
        context.register_catalog(CATALOG, Arc::new(CacheCatalog::new(self.tables(caller))));
        context
    }

    /// `statement` planned for `caller`, its parameters bound.
    async fn plan(&self, caller: &Caller, statement: &Statement) -> Result<DataFrame> {
        // Queries only: no DDL (`CREATE EXTERNAL TABLE` would read the server's files), no
        // DML, no `SET`.
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self
            .session(caller)
            .sql_with_options(&statement.sql, options)
            .await
            .map_err(sql_error)?;
        match &statement.parameters {
            Some(ipc) => frame
                .with_param_values(parameter_values(ipc)?)
                .map_err(sql_error),
            None => Ok(frame),
        }
    }

    /// The statement a handle or ticket carries, if this server issued it to `caller`.
    fn open(&self, caller: &Caller, handle: &[u8]) -> Result<Statement> {
        self.signer.open(handle, caller.user.as_deref())
    }

    /// The answer to `GetFlightInfo` for a Flight SQL `command`.
    ///
    /// # Errors
    /// [`Error::SqlStatement`] for a statement that does not plan; [`Error::SqlHandle`] for a
    /// prepared statement not issued to `caller`; [`Error::SqlUnsupported`] for commands
    /// other than queries and metadata.
    pub async fn flight_info(
        &self,
        caller: &Caller,
        descriptor: FlightDescriptor,
        command: Command,
    ) -> Result<FlightInfo> {
        // A caller who may read no key has no table to query: it plans nothing.
        caller.require(Right::Read, None)?;
        let (schema, ticket) = match self.statement_of(caller, command)? {
            Asked::Query(statement) => self.statement_info(caller, &statement).await?,
            Asked::Other(other) => {
                let metadata = metadata_command(other)?;
                let ticket = metadata_ticket(&metadata);
                (metadata.schema(), ticket)
            }
        };
        let endpoint = FlightEndpoint::new()
            .with_ticket(ticket)
            .with_location(self.location.as_ref());
        Ok(FlightInfo::new()
            .try_with_schema(&schema)?
            .with_descriptor(descriptor)
            .with_endpoint(endpoint)
            .with_ordered(true))
    }

    /// The schema a Flight SQL `command` answers with, for `GetSchema`.
    ///
    /// # Errors
    /// As [`flight_info`](Self::flight_info).
    pub async fn schema(&self, caller: &Caller, command: Command) -> Result<SchemaRef> {
        caller.require(Right::Read, None)?;
        match self.statement_of(caller, command)? {
            Asked::Query(statement) => Ok(result_schema(&self.plan(caller, &statement).await?)),
            Asked::Other(other) => Ok(metadata_command(other)?.schema()),
        }
    }

    /// The statement a query command describes (a statement's SQL, or a prepared statement
    /// issued to `caller`), or any other command as it is.
    ///
    /// # Errors
    /// [`Error::SqlHandle`] for a prepared statement not issued to `caller`;
    /// [`Error::SqlUnsupported`] for a statement in a transaction.
    fn statement_of(&self, caller: &Caller, command: Command) -> Result<Asked> {
        match command {
            Command::CommandStatementQuery(query) => {
                if query.transaction_id.is_some() {
                    return Err(unsupported("transactions"));
                }
                Ok(Asked::Query(Statement::new(caller, query.query)))
            }
            Command::CommandPreparedStatementQuery(prepared) => Ok(Asked::Query(
                self.open(caller, &prepared.prepared_statement_handle)?,
            )),
            other => Ok(Asked::Other(other)),
        }
    }

    async fn statement_info(
        &self,
        caller: &Caller,
        statement: &Statement,
    ) -> Result<(SchemaRef, Ticket)> {
        let frame = self.plan(caller, statement).await?;
        // Each ticket its own: CancelFlightInfo then stops this query, not every run of the
        // same SQL by the same user.
        let statement = statement.clone().unique();
        let ticket = TicketStatementQuery {
            statement_handle: self.signer.sign(&statement),
        };
        Ok((
            result_schema(&frame),
            Ticket::new(ticket.as_any().encode_to_vec()),
        ))
    }

    /// The answer to `DoGet` for a Flight SQL ticket: a query's results, or a metadata
    /// command's one batch, as Flight messages.
    ///
    /// # Errors
    /// [`Error::SqlHandle`] for a ticket not issued to `caller`; [`Error::SqlStatement`] if
    /// the statement no longer plans (a table it reads was dropped since).
    pub async fn do_get(&self, caller: &Caller, command: Command) -> Result<FlightDataStream> {
        caller.require(Right::Read, None)?;
        match command {
            Command::TicketStatementQuery(ticket) => {
                let statement = self.open(caller, &ticket.statement_handle)?;
                self.run(caller, &statement, ticket.statement_handle).await
            }
            // A prepared statement's own command as a ticket (what some servers hand out).
            Command::CommandPreparedStatementQuery(prepared) => {
                let statement = self.open(caller, &prepared.prepared_statement_handle)?;
                self.run(caller, &statement, prepared.prepared_statement_handle)
                    .await
            }
            other => {
                let metadata = metadata_command(other)?;
                let schema = metadata.schema();
                let batch = metadata.answer(&self.tables(caller))?;
                let stream = futures::stream::once(async move { Ok(batch) });
                Ok(encode_batches(schema, stream.boxed()))
            }
        }
    }

    /// Run `statement` (whose signed handle is `handle`) for `caller`: its results as Flight
    /// messages, produced as the client reads them. The query holds one of the running
    /// permits until its stream ends or is dropped; it ends with [`Error::QueryTimeout`] once
    /// it has run for the time limit, and with [`Error::QueryCancelled`] when a
    /// `CancelFlightInfo` names it.
    ///
    /// # Errors
    /// [`Error::TooManyQueries`] when as many queries run as the limit allows.
    async fn run(
        &self,
        caller: &Caller,
        statement: &Statement,
        handle: Bytes,
    ) -> Result<FlightDataStream> {
        let permit =
            Arc::clone(&self.running)
                .try_acquire_owned()
                .map_err(|_| Error::TooManyQueries {
                    limit: self.limits.max_concurrent,
                })?;
        let timeout = self.limits.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let registration = self.queries.register(handle);
        // Planned and started within the same limits; a failure here is the DoGet's answer.
        let messages = tokio::select! {
            biased;
            () = registration.cancel().cancelled() => return Err(Error::QueryCancelled),
            () = tokio::time::sleep_until(deadline) => {
                return Err(Error::QueryTimeout { limit: timeout });
            }
            started = self.start(caller, statement) => started?,
        };
        // The query runs as a task of its own that owns its place, its registration and its
        // deadline, and hands the response at most QUERY_MESSAGES_BUFFERED messages ahead of
        // what the client has read: a client that stops reading still sees its query end at
        // its deadline or cancellation, and its place freed.
        let (sender, receiver) = mpsc::channel(QUERY_MESSAGES_BUFFERED);
        let outcome = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(produce(
            messages,
            sender,
            Arc::clone(&outcome),
            registration,
            permit,
            deadline,
            timeout,
        ));
        let stream = futures::stream::unfold((receiver, outcome), |(mut receiver, outcome)| {
            async move {
                match receiver.recv().await {
                    Some(message) => Some((message, (receiver, outcome))),
                    // The task has ended: with the error that stopped it, if one did.
                    None => {
                        let stopped = outcome
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take();
                        stopped.map(|err| (Err(err), (receiver, outcome)))
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    /// `statement` planned and started for `caller`: its result's messages.
    async fn start(&self, caller: &Caller, statement: &Statement) -> Result<FlightDataStream> {
        let frame = self.plan(caller, statement).await?;
        let schema = result_schema(&frame);
        let batches = frame.execute_stream().await.map_err(sql_error)?;
        Ok(encode(schema, batches))
    }

    /// Run the Flight SQL action `action_type` with body `body`; its results' bodies.
    ///
    /// # Errors
    /// [`Error::InvalidActionBody`] for a body that is not the action's message;
    /// [`Error::SqlStatement`] for a statement that does not plan.
    pub async fn action(
        &self,
        caller: &Caller,
        action_type: &str,
        body: &[u8],
    ) -> Result<Vec<Bytes>> {
        let Some(&(action_type, _)) = SQL_ACTIONS.iter().find(|(name, _)| *name == action_type)
        else {
            return Err(unsupported(&format!("the action {action_type}")));
        };
        caller.require(Right::Read, None)?;
        let any = Any::decode(body).map_err(|_| Error::InvalidActionBody {
            action: action_type,
            expected: "a Flight SQL request message (protobuf Any)",
        })?;
        match action_type {
            "CreatePreparedStatement" => {
                let request: ActionCreatePreparedStatementRequest =
                    unpack(&any, action_type, "an ActionCreatePreparedStatementRequest")?;
                if request.transaction_id.is_some() {
                    return Err(unsupported("transactions"));
                }
                let statement = Statement::new(caller, request.query).unique();
                let frame = self.plan(caller, &statement).await?;
                let parameter_schema = parameter_schema(&frame)?;
                let result = ActionCreatePreparedStatementResult {
                    prepared_statement_handle: self.signer.sign(&statement),
                    dataset_schema: schema_ipc(&result_schema(&frame))?,
                    parameter_schema: schema_ipc(&parameter_schema)?,
                };
                Ok(vec![result.as_any().encode_to_vec().into()])
            }
            "ClosePreparedStatement" => {
                let request: ActionClosePreparedStatementRequest =
                    unpack(&any, action_type, "an ActionClosePreparedStatementRequest")?;
                self.open(caller, &request.prepared_statement_handle)?;
                Ok(Vec::new())
            }
            other => Err(unsupported(&format!("the action {other}"))),
        }
    }

    /// Cancel the running queries of the statements `handles` (from a `CancelFlightInfo`):
    /// `CANCELLED` if any was running, `NOT_CANCELLABLE` if none is (they finished, or never
    /// started).
    ///
    /// # Errors
    /// [`Error::SqlHandle`] for a handle not issued to `caller`.
    pub fn cancel(&self, caller: &Caller, handles: &[Bytes]) -> Result<CancelStatus> {
        let mut cancelled = 0;
        for handle in handles {
            self.open(caller, handle)?;
            cancelled += self.queries.cancel(handle);
        }
        Ok(if cancelled > 0 {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        })
    }

    /// Whether `handle` is a statement this server issued to `caller`, who may read.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] for a caller who may read nothing; [`Error::SqlHandle`].
    pub fn check_handle(&self, caller: &Caller, handle: &[u8]) -> Result<()> {
        caller.require(Right::Read, None)?;
        self.open(caller, handle).map(drop)
    }

    /// Bind `parameters` (one row) to the prepared statement `handle`: the handle to execute
    /// it with from now on, as `DoPut`'s answer carries it.
    ///
    /// # Errors
    /// [`Error::SqlHandle`] for a handle not issued to `caller`; [`Error::SqlStatement`] for
    /// parameters that are not one row.
    pub fn bind(&self, caller: &Caller, handle: &[u8], uploaded: &Segment) -> Result<Bytes> {
        let mut statement = self.open(caller, handle)?;
        let mut decoder = MessageDecoder::new(Arc::clone(uploaded.schema()), None)?;
        let mut parameters = Vec::new();
        for message in uploaded.messages() {
            parameters.extend(decoder.decode(message)?);
        }
        let rows: usize = parameters.iter().map(RecordBatch::num_rows).sum();
        statement.parameters = match (rows, parameters.first()) {
            (0, _) | (_, None) => None,
            (1, Some(first)) => {
                let mut ipc = Vec::new();
                let mut writer = StreamWriter::try_new(&mut ipc, first.schema_ref())?;
                for batch in &parameters {
                    writer.write(batch)?;
                }
                writer.finish()?;
                Some(Bytes::from(ipc))
            }
            (rows, _) => {
                return Err(Error::SqlStatement {
                    message: format!(
                        "a query takes one row of parameters, not {rows}; \
                         execute it once per row"
                    ),
                });
            }
        };
        // Encoded as itself, not in an `Any` (as the Go, Java and Rust clients read it).
        let result = DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.signer.sign(&statement)),
        };
        Ok(result.encode_to_vec().into())
    }
}

/// Functions removed from every session: their output is as large as their arguments ask, and
/// is not allocated through the memory pool.
const UNBOUNDED_FUNCTIONS: [&str; 6] = [
    "generate_series",
    "range",
    "repeat",
    "lpad",
    "rpad",
    "array_repeat",
];

/// Messages of a query's result produced ahead of what its client has read.
const QUERY_MESSAGES_BUFFERED: usize = 2;

/// Pull `messages` into `sender` while there is room, until they end, the client goes away
/// (`sender` closed), the query is cancelled or its deadline passes; the error that stopped
/// it goes in `outcome` for the response to end with. Dropping `messages` stops DataFusion's
/// work; dropping `permit` and `registration` frees the query's place.
async fn produce(
    mut messages: FlightDataStream,
    sender: mpsc::Sender<Result<FlightData>>,
    outcome: Arc<std::sync::Mutex<Option<Error>>>,
    registration: Registration,
    permit: OwnedSemaphorePermit,
    deadline: tokio::time::Instant,
    timeout: Duration,
) {
    let stopped = loop {
        let slot = tokio::select! {
            biased;
            () = registration.cancel().cancelled() => break Some(Error::QueryCancelled),
            () = tokio::time::sleep_until(deadline) => {
                break Some(Error::QueryTimeout { limit: timeout });
            }
            slot = sender.reserve() => match slot {
                Ok(slot) => slot,
                Err(_) => break None, // the client went away
            },
        };
        let next = tokio::select! {
            biased;
            () = registration.cancel().cancelled() => break Some(Error::QueryCancelled),
            () = tokio::time::sleep_until(deadline) => {
                break Some(Error::QueryTimeout { limit: timeout });
            }
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => slot.send(Ok(message)),
            Some(Err(err)) => break Some(err),
            None => break None,
        }
    };
    drop(messages);
    if let Some(err) = stopped {
        *outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err);
    }
    drop((permit, registration));
}

/// The Flight SQL error for `what`, which flightcache does not do.
fn unsupported(what: &str) -> Error {
    Error::SqlUnsupported {
        what: what.to_owned(),
    }
}

/// The action body `any` as `M`.
fn unpack<M: ProstMessageExt>(
    any: &Any,
    action: &'static str,
    expected: &'static str,
) -> Result<M> {
    any.unpack::<M>()
        .ok()
        .flatten()
        .ok_or_else(|| Error::InvalidActionBody { action, expected })
}

/// The metadata command `command` is, or the error for a command flightcache does not run.
fn metadata_command(command: Command) -> Result<MetadataCommand> {
    Ok(match command {
        Command::CommandGetSqlInfo(c) => MetadataCommand::SqlInfo(c),
        Command::CommandGetCatalogs(c) => MetadataCommand::Catalogs(c),
        Command::CommandGetDbSchemas(c) => MetadataCommand::DbSchemas(c),
        Command::CommandGetTables(c) => MetadataCommand::Tables(c),
        Command::CommandGetTableTypes(c) => MetadataCommand::TableTypes(c),
        Command::CommandGetXdbcTypeInfo(c) => MetadataCommand::XdbcTypeInfo(c),
        Command::CommandGetPrimaryKeys(c) => MetadataCommand::PrimaryKeys(c),
        Command::CommandStatementUpdate(_) | Command::CommandPreparedStatementUpdate(_) => {
            return Err(unsupported(
                "updates (the cache is read-only through SQL; put tables with do_put)",
            ));
        }
        other => {
            return Err(unsupported(
                other.type_url().trim_start_matches(FLIGHT_SQL_TYPE_PREFIX),
            ));
        }
    })
}

/// The ticket of a metadata command: the command itself.
fn metadata_ticket(command: &MetadataCommand) -> Ticket {
    let any = match command {
        MetadataCommand::SqlInfo(c) => c.as_any(),
        MetadataCommand::Catalogs(c) => c.as_any(),
        MetadataCommand::DbSchemas(c) => c.as_any(),
        MetadataCommand::Tables(c) => c.as_any(),
        MetadataCommand::TableTypes(c) => c.as_any(),
        MetadataCommand::XdbcTypeInfo(c) => c.as_any(),
        MetadataCommand::PrimaryKeys(c) => c.as_any(),
    };
    Ticket::new(any.encode_to_vec())
}

/// The Arrow schema of a planned statement's results.
fn result_schema(frame: &DataFrame) -> SchemaRef {
    Arc::new(frame.schema().as_arrow().clone())
}

/// The parameters a planned statement takes, `$1`, `$2`… in order, as a schema.
fn parameter_schema(frame: &DataFrame) -> Result<SchemaRef> {
    let types = frame
        .logical_plan()
        .get_parameter_types()
        .map_err(sql_error)?;
    let mut named: Vec<_> = types.into_iter().collect();
    named.sort_by_key(|(name, _)| {
        name.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let fields = named.into_iter().map(|(name, data_type)| {
        arrow::datatypes::Field::new(
            name,
            data_type.unwrap_or(arrow::datatypes::DataType::Null),
            true,
        )
    });
    Ok(Arc::new(arrow::datatypes::Schema::new(
        fields.collect::<Vec<_>>(),
    )))
}

/// A schema as the IPC message Flight SQL's answers carry.
pub fn schema_ipc(schema: &arrow::datatypes::Schema) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

/// One row of parameters (an IPC stream) as DataFusion's parameter values: by position, or
/// by name where the columns are not named `$1`, `$2`…
fn parameter_values(ipc: &[u8]) -> Result<ParamValues> {
    let reader = arrow::ipc::reader::StreamReader::try_new(ipc, None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let batch = arrow::compute::concat_batches(&schema, &batches)?;
    let mut values = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let value = ScalarValue::try_from_array(column, 0).map_err(sql_error)?;
        values.push((field.name().clone(), value));
    }
    let positional = values
        .iter()
        .all(|(name, _)| name.trim_start_matches('$').parse::<usize>().is_ok());
    Ok(if positional {
        values.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<usize>().unwrap_or(0));
        ParamValues::from(values.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
    } else {
        ParamValues::from(values)
    })
}

/// A query's results as Flight messages: the schema exactly as planned, then each batch
/// (dictionaries sent before the batches that use them, again when they change), split into
/// messages of about 2 MiB.
fn encode(schema: SchemaRef, batches: SendableRecordBatchStream) -> FlightDataStream {
    let batches = batches.map_err(sql_error).boxed();
    encode_batches(schema, batches)
}

fn encode_batches(
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> FlightDataStream {
    // flightcache's own encoder, not arrow-flight's `FlightDataEncoder`, which rewrites some
    // schemas on the way out (a large list is sent as a list in arrow-flight 59).
    encode_stream(&schema, None, batches).boxed()
}

/// A DataFusion error as flightcache's: the caller's mistakes (syntax, names, types) are
/// INVALID_ARGUMENT with DataFusion's message; memory the pool refused is
/// RESOURCE_EXHAUSTED; an error of flightcache's own (a corrupt table file) stays itself.
fn sql_error(err: DataFusionError) -> Error {
    match err.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(Error::CorruptTable { key }) => Error::CorruptTable { key: key.clone() },
            Some(Error::TaskFailed { .. }) => Error::SqlInternal {
                message: err.to_string(),
            },
            _ => Error::SqlStatement {
                message: err.to_string(),
            },
        },
        DataFusionError::ResourcesExhausted(message) => Error::SqlOutOfMemory {
            message: message.clone(),
        },
        DataFusionError::NotImplemented(message) => unsupported(message),
        DataFusionError::Internal(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_) => Error::SqlInternal {
            message: err.to_string(),
        },
        _ => Error::SqlStatement {
            message: err.to_string(),
        },
    }
}
