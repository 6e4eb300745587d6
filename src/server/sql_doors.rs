//! The Flight SQL side of the doors: a door of [`service`](crate::server::service) that finds a
//! Flight SQL command in its descriptor, ticket or action (see [`crate::protocol::sql`]) hands
//! it here, after it admitted the caller, and answers what comes back. With the `sql` feature
//! the [`SqlEngine`](crate::sql::SqlEngine) runs it; without it every command is
//! UNIMPLEMENTED.

use arrow_flight::sql::Command;
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo, SchemaResult};
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::server::service::{FlightCacheService, PutResults};
use crate::store::slabs::SlabWriter;
use crate::transport::receive::MessageReader;

/// The Flight messages answering a Flight SQL `DoGet`.
pub(crate) type FlightDataStream = BoxStream<'static, Result<FlightData>>;

#[cfg(feature = "sql")]
impl FlightCacheService {
    /// `GetFlightInfo` (and `PollFlightInfo`) for a Flight SQL command.
    pub(crate) async fn sql_flight_info(
        &self,
        caller: &Caller,
        descriptor: FlightDescriptor,
        command: Command,
    ) -> Result<FlightInfo> {
        self.sql().flight_info(caller, descriptor, command).await
    }

    /// `GetSchema` for a Flight SQL command.
    pub(crate) async fn sql_schema(
        &self,
        caller: &Caller,
        command: Command,
    ) -> Result<SchemaResult> {
        let schema = self.sql().schema(caller, command).await?;
        Ok(SchemaResult {
            schema: crate::sql::schema_ipc(&schema)?,
        })
    }

    /// `DoGet` for a Flight SQL ticket.
    pub(crate) async fn sql_do_get(
        &self,
        caller: &Caller,
        command: Command,
    ) -> Result<FlightDataStream> {
        self.sql().do_get(caller, command).await
    }

    /// `DoAction` for a Flight SQL action.
    pub(crate) async fn sql_action(
        &self,
        caller: &Caller,
        action: Action,
    ) -> Result<Vec<arrow_flight::Result>> {
        let bodies = self
            .sql()
            .action(caller, &action.r#type, &action.body)
            .await?;
        Ok(bodies
            .into_iter()
            .map(|body| arrow_flight::Result { body })
            .collect())
    }

    /// `CancelFlightInfo` of Flight SQL queries (their statement `handles`): the
    /// `CancelFlightInfoResult`.
    pub(crate) fn sql_cancel(
        &self,
        caller: &Caller,
        handles: &[bytes::Bytes],
    ) -> Result<Vec<arrow_flight::Result>> {
        use prost::Message;
        let status = self.sql().cancel(caller, handles)?;
        let result = arrow_flight::CancelFlightInfoResult::new(status);
        Ok(vec![arrow_flight::Result {
            body: result.encode_to_vec().into(),
        }])
    }

    /// Whether a `DoPut` may carry `command`, checked before its first body is received: only
    /// the parameters of a prepared statement issued to `caller`, whose handle it returns.
    pub(crate) fn sql_put_check(&self, caller: &Caller, command: Command) -> Result<Bytes> {
        match command {
            Command::CommandPreparedStatementQuery(prepared) => {
                let handle = prepared.prepared_statement_handle;
                self.sql().check_handle(caller, &handle)?;
                Ok(handle)
            }
            other => Err(Error::SqlUnsupported {
                what: format!(
                    "{} in do_put (bind parameters with CommandPreparedStatementQuery, ingest \
                     with CommandStatementIngest)",
                    other
                        .type_url()
                        .trim_start_matches(crate::protocol::sql::FLIGHT_SQL_TYPE_PREFIX)
                ),
            }),
        }
    }

    /// `DoPut` of the parameters of the prepared statement `handle` (which
    /// [`sql_put_check`](Self::sql_put_check) let through): validated as an upload is (and
    /// charged to the budget while they are read), then bound; the answer is the statement's
    /// new handle.
    pub(crate) async fn sql_put(
        &self,
        caller: &Caller,
        handle: &[u8],
        first: FlightData,
        mut messages: MessageReader,
        memory: SlabWriter,
        results: &PutResults,
    ) -> Result<()> {
        let key =
            crate::protocol::key::TableKey::try_new("flight-sql-parameters").expect("a valid key");
        let mut upload =
            crate::store::upload::TableUpload::new(key, memory, self.config().max_message_bytes);
        // The new handle carries the parameters, and must fit in a request again.
        let limit = self.config().max_request_bytes / 2;
        let mut received = 0;
        let mut next = Some(first);
        while let Some(message) = next {
            received += message.data_header.len() + message.data_body.len();
            if received > limit {
                return Err(Error::SqlStatement {
                    message: format!(
                        "the parameters are larger than {limit} bytes; bind one row of \
                         small values"
                    ),
                });
            }
            upload.push(message)?;
            next = messages.next_message(upload.memory()).await?;
        }
        let parameters = upload.finish()?;
        let handle = self.sql().bind(caller, handle, &parameters)?;
        results
            .send(arrow_flight::PutResult {
                app_metadata: handle,
            })
            .await
            .ok();
        Ok(())
    }
}

#[cfg(not(feature = "sql"))]
impl FlightCacheService {
    /// `GetFlightInfo` for a Flight SQL command: UNIMPLEMENTED without the `sql` feature.
    pub(crate) async fn sql_flight_info(
        &self,
        _caller: &Caller,
        _descriptor: FlightDescriptor,
        _command: Command,
    ) -> Result<FlightInfo> {
        Err(without_sql())
    }

    /// `GetSchema` for a Flight SQL command: UNIMPLEMENTED without the `sql` feature.
    pub(crate) async fn sql_schema(
        &self,
        _caller: &Caller,
        _command: Command,
    ) -> Result<SchemaResult> {
        Err(without_sql())
    }

    /// `DoGet` for a Flight SQL ticket: UNIMPLEMENTED without the `sql` feature.
    pub(crate) async fn sql_do_get(
        &self,
        _caller: &Caller,
        _command: Command,
    ) -> Result<FlightDataStream> {
        Err(without_sql())
    }

    /// `DoAction` for a Flight SQL action: UNIMPLEMENTED without the `sql` feature.
    pub(crate) async fn sql_action(
        &self,
        _caller: &Caller,
        _action: Action,
    ) -> Result<Vec<arrow_flight::Result>> {
        Err(without_sql())
    }

    /// Whether a `DoPut` may carry a Flight SQL command: never without the `sql` feature.
    pub(crate) fn sql_put_check(&self, _caller: &Caller, _command: Command) -> Result<Bytes> {
        Err(without_sql())
    }

    /// `CancelFlightInfo` of Flight SQL queries: UNIMPLEMENTED without the `sql` feature.
    pub(crate) fn sql_cancel(
        &self,
        _caller: &Caller,
        _handles: &[bytes::Bytes],
    ) -> Result<Vec<arrow_flight::Result>> {
        Err(without_sql())
    }

    /// `DoPut` for a Flight SQL command: UNIMPLEMENTED without the `sql` feature.
    pub(crate) async fn sql_put(
        &self,
        _caller: &Caller,
        _handle: &[u8],
        _first: FlightData,
        _messages: MessageReader,
        _memory: SlabWriter,
        _results: &PutResults,
    ) -> Result<()> {
        Err(without_sql())
    }
}

#[cfg(not(feature = "sql"))]
fn without_sql() -> Error {
    Error::SqlUnsupported {
        what: "Flight SQL (this server was built without the `sql` feature)".into(),
    }
}
