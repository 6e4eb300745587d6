//! The `do_action` vocabulary: action names, how an `Action` parses, and what each returns.
//!
//! `list_actions` and `do_action` both read [`ACTIONS`], so an advertised action is always one
//! that is handled. flightcache's own actions answer JSON; Flight's standard actions
//! (`CancelFlightInfo`) answer the protobuf messages the Flight protocol defines.

use arrow_flight::{Action, ActionType, CancelFlightInfoRequest, FlightInfo};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{ClientText, Error, Result};
use crate::protocol::key::TableKey;

/// Remove one table. Body: the key as UTF-8. Result: a [`DropResult`] as JSON.
pub const DROP: &str = "drop";
/// Remove every table. Body: empty. Result: a [`ClearResult`] as JSON.
pub const CLEAR: &str = "clear";
/// Report contents and counters. Body: empty. Result: a [`StoreStats`] as JSON.
pub const STATS: &str = "stats";
/// Flight's standard action to cancel the query behind a `FlightInfo`. Body: a serialized
/// `CancelFlightInfoRequest`. Result: a serialized `CancelFlightInfoResult`: a cached table is
/// no query in flight, so `NOT_CANCELLABLE`.
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Every action, with the description `list_actions` gives.
pub const ACTIONS: [(&str, &str); 4] = [
    (
        DROP,
        "Remove one table. Body: the key (UTF-8). Result: JSON {\"key\", \"rows\", \"bytes\"}.",
    ),
    (
        CLEAR,
        "Remove every table. Body: empty. Result: JSON {\"tables\"}, how many were removed.",
    ),
    (
        STATS,
        "Report JSON {\"tables\", \"rows\", \"bytes\", \"puts\", \"gets\", \"errors\", \"freed_bytes\"}. Body: empty.",
    ),
    (
        CANCEL_FLIGHT_INFO,
        "Flight's CancelFlightInfo. Body: a serialized CancelFlightInfoRequest. Result: a serialized CancelFlightInfoResult, NOT_CANCELLABLE for a cached table (nothing is in flight).",
    ),
];

/// The names of every action, in [`ACTIONS`] order.
pub fn action_names() -> Vec<&'static str> {
    ACTIONS.iter().map(|(name, _)| *name).collect()
}

/// A parsed `do_action` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheAction {
    /// Remove the table under this key.
    Drop(TableKey),
    /// Remove every table.
    Clear,
    /// Report contents and counters.
    Stats,
    /// Cancel the query behind the `FlightInfo` of this table.
    CancelFlightInfo(TableKey),
}

impl TryFrom<Action> for CacheAction {
    type Error = Error;

    /// # Errors
    /// [`Error::UnknownAction`] (InvalidArgument) for an unknown action, whose message lists
    /// the valid ones; [`Error::InvalidKey`] for a `drop` whose body is not a key;
    /// [`Error::InvalidActionBody`] for a `CancelFlightInfo` whose body names no table.
    fn try_from(action: Action) -> Result<Self> {
        match action.r#type.as_str() {
            DROP => Ok(CacheAction::Drop(TableKey::try_from_bytes(&action.body)?)),
            CLEAR => Ok(CacheAction::Clear),
            STATS => Ok(CacheAction::Stats),
            CANCEL_FLIGHT_INFO => Ok(CacheAction::CancelFlightInfo(cancelled_key(&action.body)?)),
            other => Err(Error::UnknownAction {
                name: ClientText::new(other.as_bytes()),
            }),
        }
    }
}

impl CacheAction {
    /// The `Action` that asks for this.
    pub fn to_action(&self) -> Action {
        match self {
            CacheAction::Drop(key) => Action::new(DROP, key.as_str().as_bytes().to_vec()),
            CacheAction::Clear => Action::new(CLEAR, ""),
            CacheAction::Stats => Action::new(STATS, ""),
            CacheAction::CancelFlightInfo(key) => {
                let info = FlightInfo::new().with_descriptor(key.to_descriptor());
                let request = CancelFlightInfoRequest::new(info);
                Action::new(CANCEL_FLIGHT_INFO, request.encode_to_vec())
            }
        }
    }
}

/// The table a `CancelFlightInfo` body's `FlightInfo` describes: its descriptor's key, or the
/// key of its first endpoint's ticket.
fn cancelled_key(body: &[u8]) -> Result<TableKey> {
    let invalid = || Error::InvalidActionBody {
        action: CANCEL_FLIGHT_INFO,
        expected: "a serialized CancelFlightInfoRequest whose FlightInfo names a table",
    };
    let request = CancelFlightInfoRequest::decode(body).map_err(|_| invalid())?;
    let info = request.info.ok_or_else(invalid)?;
    if let Some(descriptor) = &info.flight_descriptor {
        return TableKey::try_from_descriptor(descriptor);
    }
    let ticket = info
        .endpoint
        .iter()
        .find_map(|endpoint| endpoint.ticket.as_ref())
        .ok_or_else(invalid)?;
    TableKey::try_from_ticket(ticket)
}

/// The `ActionType` list that `list_actions` returns.
pub fn action_types() -> Vec<ActionType> {
    ACTIONS
        .iter()
        .map(|(name, description)| ActionType {
            r#type: name.to_string(),
            description: description.to_string(),
        })
        .collect()
}

/// What `drop` returns: the table that was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropResult {
    /// The key that was dropped.
    pub key: String,
    /// Rows the table had.
    pub rows: u64,
    /// Arrow bytes the table held.
    pub bytes: u64,
}

/// What `clear` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearResult {
    /// How many tables were removed.
    pub tables: u64,
}

/// What `stats` returns: the cache's contents and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Tables cached now.
    pub tables: u64,
    /// Rows in all cached tables.
    pub rows: u64,
    /// Arrow bytes held by all cached tables.
    pub bytes: u64,
    /// Completed puts since the server started.
    pub puts: u64,
    /// Gets started since the server started.
    pub gets: u64,
    /// Requests that failed since the server started.
    pub errors: u64,
    /// Memory freed by dropped or replaced tables that the server keeps for the next uploads;
    /// it goes back to the system once it has waited the reuse window.
    #[serde(default)]
    pub freed_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_action_parses() {
        let key = TableKey::try_new("k").unwrap();
        for action_type in action_types() {
            let body = match action_type.r#type.as_str() {
                DROP => b"k".to_vec(),
                CANCEL_FLIGHT_INFO => CacheAction::CancelFlightInfo(key.clone())
                    .to_action()
                    .body
                    .to_vec(),
                _ => Vec::new(),
            };
            let action = Action::new(action_type.r#type.clone(), body);
            assert!(
                CacheAction::try_from(action).is_ok(),
                "{}",
                action_type.r#type
            );
        }
    }

    #[test]
    fn actions_round_trip_through_to_action() {
        for action in [
            CacheAction::Drop(TableKey::try_new("t").unwrap()),
            CacheAction::Clear,
            CacheAction::Stats,
            CacheAction::CancelFlightInfo(TableKey::try_new("t").unwrap()),
        ] {
            assert_eq!(CacheAction::try_from(action.to_action()).unwrap(), action);
        }
    }

    #[test]
    fn unknown_action_lists_the_valid_ones() {
        let err = CacheAction::try_from(Action::new("flush", "")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`flush`"), "{message}");
        assert!(
            message.contains("drop, clear, stats, CancelFlightInfo"),
            "{message}"
        );
    }

    #[test]
    fn cancel_flight_info_names_its_table_by_descriptor_or_ticket() {
        let by_ticket = FlightInfo::new().with_endpoint(
            arrow_flight::FlightEndpoint::new().with_ticket(arrow_flight::Ticket::new("t")),
        );
        let action = Action::new(
            CANCEL_FLIGHT_INFO,
            CancelFlightInfoRequest::new(by_ticket).encode_to_vec(),
        );
        assert_eq!(
            CacheAction::try_from(action).unwrap(),
            CacheAction::CancelFlightInfo(TableKey::try_new("t").unwrap())
        );
        for body in [
            b"\xff\xff".to_vec(),
            CancelFlightInfoRequest::default().encode_to_vec(),
            CancelFlightInfoRequest::new(FlightInfo::new()).encode_to_vec(),
        ] {
            assert!(matches!(
                CacheAction::try_from(Action::new(CANCEL_FLIGHT_INFO, body)),
                Err(Error::InvalidActionBody { .. })
            ));
        }
    }

    #[test]
    fn drop_without_a_key_is_invalid() {
        assert!(matches!(
            CacheAction::try_from(Action::new(DROP, "")),
            Err(Error::InvalidKey { .. })
        ));
    }
}
