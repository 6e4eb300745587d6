//! Flight SQL on the wire: its commands travel as protobuf `Any` messages in the `cmd` of a
//! CMD descriptor, in tickets and in action bodies; everything else there is a plain key.
//!
//! A descriptor or ticket is taken as Flight SQL when its bytes decode as an `Any` whose type
//! URL is one of Flight SQL's (`type.googleapis.com/arrow.flight.protocol.sql.…`). A key
//! whose bytes happen to be such a message is therefore not reachable as a key; no key
//! written as text can be (its first byte would have to be a protobuf tag, `\n`).

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::sql::{
    Any, Command, CommandStatementIngest, TableExistsOption, TableNotExistOption,
};
use arrow_flight::{FlightDescriptor, Ticket};
use prost::Message;

/// The catalog every key is a table in.
pub const SQL_CATALOG: &str = "flightcache";
/// The schema every key is a table in.
pub const SQL_SCHEMA: &str = "public";

/// The prefix of every Flight SQL message's type URL.
pub const FLIGHT_SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight SQL actions flightcache takes, and what each does, as `list_actions` gives them.
pub const SQL_ACTIONS: [(&str, &str); 2] = [
    (
        "CreatePreparedStatement",
        "Flight SQL: prepare a query; the handle is bound to you",
    ),
    (
        "ClosePreparedStatement",
        "Flight SQL: close a prepared statement (the server keeps nothing for it)",
    ),
];

/// A Flight SQL message that does not decode as the type its URL names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Flight SQL message {type_url} does not decode: {problem}")]
pub struct BadSqlMessage {
    /// Its type URL.
    pub type_url: String,
    /// What the decoder said.
    pub problem: String,
}

/// The Flight SQL command `bytes` carry, or `None` if they are not a Flight SQL message.
pub fn sql_command(bytes: &[u8]) -> Option<Result<Command, BadSqlMessage>> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(FLIGHT_SQL_TYPE_PREFIX) {
        return None;
    }
    let type_url = any.type_url.clone();
    Some(Command::try_from(any).map_err(|err| BadSqlMessage {
        type_url,
        problem: err.to_string(),
    }))
}

/// The Flight SQL command a descriptor carries (CMD descriptors only).
pub fn descriptor_command(descriptor: &FlightDescriptor) -> Option<Result<Command, BadSqlMessage>> {
    match DescriptorType::try_from(descriptor.r#type) {
        Ok(DescriptorType::Cmd) => sql_command(&descriptor.cmd),
        _ => None,
    }
}

/// The Flight SQL command a ticket carries.
pub fn ticket_command(ticket: &Ticket) -> Option<Result<Command, BadSqlMessage>> {
    sql_command(&ticket.ticket)
}

/// Where a bulk ingest (`CommandStatementIngest`, ADBC's `adbc_ingest`) stores its table, and
/// what it does when the key is cached already, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestTarget {
    /// The key: the ingest's table name.
    pub table: String,
    /// Replace a cached table (`true`), or fail with ALREADY_EXISTS.
    pub replace: bool,
    /// Append to a cached table (ADBC's `append` and `create_append` modes): the rows are
    /// added as an append (`x-flightcache-append`) adds them.
    pub append: bool,
    /// Create the key if it is not cached (`true`), or fail with NOT_FOUND.
    pub create: bool,
}

/// An ingest flightcache does not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestProblem {
    /// A temporary table.
    #[error("temporary tables (every cached table is visible to every reader with the right)")]
    Temporary,
    /// An ingest inside a transaction.
    #[error("transactions")]
    Transaction,
    /// A catalog or schema other than flightcache's one.
    #[error(
        "tables outside catalog `flightcache` and schema `public` (ingest was for {0}); leave \
         them unset"
    )]
    Elsewhere(String),
}

/// The target of `ingest`. Unspecified options create a missing key and refuse to replace a
/// cached one, as SQL's `CREATE TABLE` does.
///
/// # Errors
/// [`IngestProblem`] for what flightcache does not do.
pub fn ingest_target(
    ingest: &CommandStatementIngest,
    catalog: &str,
    schema: &str,
) -> Result<IngestTarget, IngestProblem> {
    if ingest.temporary {
        return Err(IngestProblem::Temporary);
    }
    if ingest.transaction_id.is_some() {
        return Err(IngestProblem::Transaction);
    }
    let elsewhere =
        |given: &Option<String>, ours: &str| given.as_deref().is_some_and(|g| g != ours);
    if elsewhere(&ingest.catalog, catalog) || elsewhere(&ingest.schema, schema) {
        return Err(IngestProblem::Elsewhere(format!(
            "{}.{}",
            ingest.catalog.as_deref().unwrap_or(catalog),
            ingest.schema.as_deref().unwrap_or(schema)
        )));
    }
    let options = ingest.table_definition_options.unwrap_or_default();
    let (replace, append) = match options.if_exists() {
        TableExistsOption::Replace => (true, false),
        TableExistsOption::Append => (false, true),
        TableExistsOption::Fail | TableExistsOption::Unspecified => (false, false),
    };
    let create = !matches!(options.if_not_exist(), TableNotExistOption::Fail);
    Ok(IngestTarget {
        table: ingest.table.clone(),
        replace,
        append,
        create,
    })
}

/// The statement handles of the Flight SQL query tickets in a `CancelFlightInfo` action's body
/// (a `CancelFlightInfoRequest`), or `None` if it names no Flight SQL query (a cached table:
/// the plain action answers it).
pub fn cancelled_statements(body: &[u8]) -> Option<Vec<bytes::Bytes>> {
    let request = arrow_flight::CancelFlightInfoRequest::decode(body).ok()?;
    let handles: Vec<_> = request
        .info?
        .endpoint
        .iter()
        .filter_map(|endpoint| endpoint.ticket.as_ref())
        .filter_map(|ticket| match ticket_command(ticket) {
            Some(Ok(Command::TicketStatementQuery(query))) => Some(query.statement_handle),
            _ => None,
        })
        .collect();
    (!handles.is_empty()).then_some(handles)
}

/// Whether `action_type` is one of Flight SQL's actions that flightcache takes.
pub fn is_sql_action(action_type: &str) -> bool {
    SQL_ACTIONS.iter().any(|(name, _)| *name == action_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};

    #[test]
    fn text_keys_are_not_flight_sql_and_commands_are() {
        for key in [
            "trips",
            "nyc/trips",
            "",
            "\u{1}x",
            "type.googleapis.com/arrow",
        ] {
            assert!(sql_command(key.as_bytes()).is_none(), "{key:?}");
        }
        let query = CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        };
        let bytes = query.as_any().encode_to_vec();
        match sql_command(&bytes) {
            Some(Ok(Command::CommandStatementQuery(decoded))) => assert_eq!(decoded, query),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flight_sql_url_with_a_broken_message_is_an_error() {
        let any = Any {
            type_url: format!("{FLIGHT_SQL_TYPE_PREFIX}CommandStatementQuery"),
            value: bytes::Bytes::from_static(b"\xff\xff"),
        };
        assert!(matches!(sql_command(&any.encode_to_vec()), Some(Err(_))));
    }
}
