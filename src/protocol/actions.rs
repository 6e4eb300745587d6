//! The `do_action` vocabulary: action names, how an `Action` parses, and what each returns.
//!
//! `list_actions` and `do_action` both read [`ACTIONS`], so an advertised action is always one
//! that is handled. flightcache's own actions answer JSON; Flight's standard actions
//! (`CancelFlightInfo`) answer the protobuf messages the Flight protocol defines.

use std::time::Duration;

use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, FlightEndpoint, FlightInfo,
    RenewFlightEndpointRequest,
};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::protocol::key::KeyProblem;
use crate::protocol::key::TableKey;
use crate::protocol::rights::Right;
use crate::protocol::stream::{RetainRequest, Retention};
use crate::protocol::text::ClientText;
use crate::protocol::ttl::InvalidTtl;
use crate::protocol::ttl::{ExpireRequest, ttl_from_seconds};

/// Remove one table. Body: the key as UTF-8. Result: a [`DropResult`] as JSON.
pub const DROP: &str = "drop";
/// Remove every table. Body: empty. Result: a [`ClearResult`] as JSON.
pub const CLEAR: &str = "clear";
/// Report contents and counters. Body: empty. Result: a [`StoreStats`] as JSON.
pub const STATS: &str = "stats";
/// Give a table a time to live. Body: JSON `{"key": "k", "seconds": 600}`. Result: a
/// [`TtlResult`](crate::protocol::ttl::TtlResult) as JSON.
pub const EXPIRE: &str = "expire";
/// Remove a table's time to live. Body: the key as UTF-8. Result: a
/// [`PersistResult`](crate::protocol::ttl::PersistResult) as JSON.
pub const PERSIST: &str = "persist";
/// A table's time to live. Body: the key as UTF-8. Result: a
/// [`TtlResult`](crate::protocol::ttl::TtlResult) as JSON.
pub const TTL: &str = "ttl";
/// Cap a key that grows (or uncap it). Body: JSON `{"key": "k", "max_rows": 1000}` (also
/// `max_bytes`, `max_age_ms`; none: uncapped). Result: the key's
/// [`Offsets`](crate::protocol::stream::Offsets) as JSON, after trimming.
pub const RETAIN: &str = "retain";
/// Who the caller is and what it may do. Body: empty. Result: a
/// [`WhoAmI`](crate::protocol::credentials::WhoAmI) as JSON.
pub const WHOAMI: &str = "whoami";
/// Flight's standard action to cancel the query behind a `FlightInfo`. Body: a serialized
/// `CancelFlightInfoRequest`. Result: a serialized `CancelFlightInfoResult`: a cached table is
/// no query in flight, so `NOT_CANCELLABLE`.
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// Flight's standard action to extend an endpoint's expiration. Body: a serialized
/// `RenewFlightEndpointRequest`. Result: the serialized `FlightEndpoint` with its new
/// `expiration_time`: the table's time to live starts again from now.
pub const RENEW_FLIGHT_ENDPOINT: &str = "RenewFlightEndpoint";

/// Move the server's clock forward, for tests: keys' and sessions' times to live run out as
/// if that much time had passed. Only a server started with `--test-clock` takes it, and only
/// from an admin. Body: JSON `{"seconds": 60}`. Result: an [`AdvanceClockResult`] as JSON.
pub const ADVANCE_CLOCK: &str = "advance-clock";

/// How [`ADVANCE_CLOCK`] is listed by a server started with `--test-clock` (others do not list it).
pub const ADVANCE_CLOCK_DESCRIPTION: &str = "For tests (serve --test-clock): move the server's clock forward, so that times to live of keys and sessions run out without waiting. Admin only. Body: JSON {\"seconds\"}. Result: JSON {\"skipped_seconds\"}, how far it was moved in all.";

/// Every action, with the description `list_actions` gives.
pub const ACTIONS: [(&str, &str); 10] = [
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
        "Report the cache's contents, memory and counters as JSON (tables, rows, bytes, puts, gets, errors, memory_budget, memory_used, memory_tables, memory_uploads, freed_bytes, evictions, expirations, rejected_uploads, trimmed_rows, pressure_trims). Body: empty.",
    ),
    (
        EXPIRE,
        "Give a table a time to live. Body: JSON {\"key\", \"seconds\"}. Result: JSON {\"key\", \"ttl_seconds\"}.",
    ),
    (
        PERSIST,
        "Remove a table's time to live. Body: the key (UTF-8). Result: JSON {\"key\", \"had_ttl\"}.",
    ),
    (
        TTL,
        "A table's time to live. Body: the key (UTF-8). Result: JSON {\"key\", \"ttl_seconds\"}, null if it never expires.",
    ),
    (
        RETAIN,
        "Cap a key that grows by appends (trimming its oldest appends at once), or uncap it. Body: JSON {\"key\", \"max_rows\", \"max_bytes\", \"max_age_ms\"}, each limit optional (none: uncapped). Result: JSON {\"earliest_offset\", \"next_offset\", \"retention\"}.",
    ),
    (
        WHOAMI,
        "Who the caller is and what it may do. Body: empty. Result: JSON {\"user\", \"proof\", \"read\", \"write\", \"admin\"}.",
    ),
    (
        CANCEL_FLIGHT_INFO,
        "Flight's CancelFlightInfo. Body: a serialized CancelFlightInfoRequest. Result: a serialized CancelFlightInfoResult, NOT_CANCELLABLE for a cached table (nothing is in flight).",
    ),
    (
        RENEW_FLIGHT_ENDPOINT,
        "Flight's RenewFlightEndpoint. Body: a serialized RenewFlightEndpointRequest. Result: the serialized FlightEndpoint with its new expiration_time; the table's time to live starts again from now.",
    ),
];

/// The names of every action, in [`ACTIONS`] order.
pub fn action_names() -> Vec<&'static str> {
    ACTIONS.iter().map(|(name, _)| *name).collect()
}

/// A parsed `do_action` request.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheAction {
    /// Remove the table under this key.
    Drop(TableKey),
    /// Remove every table.
    Clear,
    /// Report contents and counters.
    Stats,
    /// Give the table under `key` a time to live of `ttl` from now.
    Expire {
        /// The table's key.
        key: TableKey,
        /// Its new time to live.
        ttl: Duration,
    },
    /// Remove this table's time to live.
    Persist(TableKey),
    /// Report this table's time to live.
    Ttl(TableKey),
    /// Report who the caller is and what it may do.
    WhoAmI,
    /// Cancel the query behind the `FlightInfo` of this table.
    CancelFlightInfo(TableKey),
    /// Move the server's clock forward by this much (a test server only).
    AdvanceClock(Duration),
    /// Cap the key by this retention (uncapped if it sets no limit).
    Retain {
        /// The key.
        key: TableKey,
        /// Its retention.
        retention: Retention,
    },
    /// Extend the expiration of this endpoint, whose ticket names `key`.
    RenewFlightEndpoint {
        /// The table its ticket names.
        key: TableKey,
        /// The endpoint, as the client sent it.
        endpoint: FlightEndpoint,
    },
}

impl TryFrom<Action> for CacheAction {
    type Error = ActionProblem;

    /// # Errors
    /// [`ActionProblem::Unknown`] for an unknown action; [`ActionProblem::Key`] for a body
    /// that should be a key and is not; [`ActionProblem::Body`] for an `expire`,
    /// `CancelFlightInfo` or `RenewFlightEndpoint` body that is not what the action takes;
    /// [`ActionProblem::Ttl`] for an `expire` of no positive number of seconds. The server
    /// answers each InvalidArgument.
    fn try_from(action: Action) -> Result<Self, ActionProblem> {
        match action.r#type.as_str() {
            DROP => Ok(CacheAction::Drop(TableKey::try_from_bytes(&action.body)?)),
            CLEAR => Ok(CacheAction::Clear),
            STATS => Ok(CacheAction::Stats),
            EXPIRE => {
                let request: ExpireRequest =
                    serde_json::from_slice(&action.body).map_err(|_| ActionProblem::Body {
                        action: EXPIRE,
                        expected: "JSON {\"key\": \"k\", \"seconds\": 600}",
                    })?;
                Ok(CacheAction::Expire {
                    key: TableKey::try_new(request.key.as_str())?,
                    ttl: ttl_from_seconds(request.seconds)?,
                })
            }
            PERSIST => Ok(CacheAction::Persist(TableKey::try_from_bytes(
                &action.body,
            )?)),
            TTL => Ok(CacheAction::Ttl(TableKey::try_from_bytes(&action.body)?)),
            WHOAMI => Ok(CacheAction::WhoAmI),
            CANCEL_FLIGHT_INFO => Ok(CacheAction::CancelFlightInfo(cancelled_key(&action.body)?)),
            RENEW_FLIGHT_ENDPOINT => {
                let invalid = || ActionProblem::Body {
                    action: RENEW_FLIGHT_ENDPOINT,
                    expected: "a serialized RenewFlightEndpointRequest whose endpoint has a ticket",
                };
                let request =
                    RenewFlightEndpointRequest::decode(&action.body[..]).map_err(|_| invalid())?;
                let endpoint = request.endpoint.ok_or_else(invalid)?;
                let ticket = endpoint.ticket.as_ref().ok_or_else(invalid)?;
                Ok(CacheAction::RenewFlightEndpoint {
                    key: TableKey::try_from_ticket(ticket)?,
                    endpoint,
                })
            }
            ADVANCE_CLOCK => {
                let invalid = || ActionProblem::Body {
                    action: ADVANCE_CLOCK,
                    expected: "JSON {\"seconds\": 60}, a positive number of seconds",
                };
                let request: AdvanceClockRequest =
                    serde_json::from_slice(&action.body).map_err(|_| invalid())?;
                let by = ttl_from_seconds(request.seconds).map_err(|_| invalid())?;
                Ok(CacheAction::AdvanceClock(by))
            }
            RETAIN => {
                let request: RetainRequest =
                    serde_json::from_slice(&action.body).map_err(|_| ActionProblem::Body {
                        action: RETAIN,
                        expected: "JSON {\"key\": \"k\", \"max_rows\": 1000} (or max_bytes, \
                                   max_age_ms; none: uncapped)",
                    })?;
                if !request.retention.is_usable() {
                    return Err(ActionProblem::Body {
                        action: RETAIN,
                        expected: "JSON {\"key\": \"k\", \"max_rows\": 1000} with limits over \
                                   0 (max_rows, max_bytes, max_age_ms up to 100 years; none: \
                                   uncapped)",
                    });
                }
                Ok(CacheAction::Retain {
                    key: TableKey::try_new(request.key.as_str())?,
                    retention: request.retention,
                })
            }
            other => Err(ActionProblem::Unknown {
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
            CacheAction::Expire { key, ttl } => {
                let request = ExpireRequest {
                    key: key.to_string(),
                    seconds: ttl.as_secs_f64(),
                };
                let body = serde_json::to_vec(&request).expect("an ExpireRequest serializes");
                Action::new(EXPIRE, body)
            }
            CacheAction::Persist(key) => Action::new(PERSIST, key.as_str().as_bytes().to_vec()),
            CacheAction::Ttl(key) => Action::new(TTL, key.as_str().as_bytes().to_vec()),
            CacheAction::WhoAmI => Action::new(WHOAMI, ""),
            CacheAction::AdvanceClock(by) => {
                let request = AdvanceClockRequest {
                    seconds: by.as_secs_f64(),
                };
                let body = serde_json::to_vec(&request).expect("a request serializes");
                Action::new(ADVANCE_CLOCK, body)
            }
            CacheAction::CancelFlightInfo(key) => {
                let info = FlightInfo::new().with_descriptor(key.to_descriptor());
                let request = CancelFlightInfoRequest::new(info);
                Action::new(CANCEL_FLIGHT_INFO, request.encode_to_vec())
            }
            CacheAction::RenewFlightEndpoint { endpoint, .. } => {
                let request = RenewFlightEndpointRequest {
                    endpoint: Some(endpoint.clone()),
                };
                Action::new(RENEW_FLIGHT_ENDPOINT, request.encode_to_vec())
            }
            CacheAction::Retain { key, retention } => {
                let request = RetainRequest {
                    key: key.to_string(),
                    retention: *retention,
                };
                let body = serde_json::to_vec(&request).expect("a RetainRequest serializes");
                Action::new(RETAIN, body)
            }
        }
    }
}

impl CacheAction {
    /// The right the action needs, and over which key (none for the cache as a whole):
    /// reading a key's time to live or cancelling its query needs read; dropping, expiring,
    /// persisting or renewing it needs write; clear, stats and advance-clock need admin; whoami
    /// needs none.
    pub fn needs(&self) -> (Option<Right>, Option<&TableKey>) {
        match self {
            CacheAction::Drop(key)
            | CacheAction::Persist(key)
            | CacheAction::Expire { key, .. }
            | CacheAction::Retain { key, .. }
            | CacheAction::RenewFlightEndpoint { key, .. } => (Some(Right::Write), Some(key)),
            CacheAction::Ttl(key) | CacheAction::CancelFlightInfo(key) => {
                (Some(Right::Read), Some(key))
            }
            CacheAction::Clear | CacheAction::Stats | CacheAction::AdvanceClock(_) => {
                (Some(Right::Admin), None)
            }
            CacheAction::WhoAmI => (None, None),
        }
    }
}

/// The table a `CancelFlightInfo` body's `FlightInfo` describes: its descriptor's key, or the
/// key of its first endpoint's ticket.
fn cancelled_key(body: &[u8]) -> Result<TableKey, ActionProblem> {
    let invalid = || ActionProblem::Body {
        action: CANCEL_FLIGHT_INFO,
        expected: "a serialized CancelFlightInfoRequest whose FlightInfo names a table",
    };
    let request = CancelFlightInfoRequest::decode(body).map_err(|_| invalid())?;
    let info = request.info.ok_or_else(invalid)?;
    if let Some(descriptor) = &info.flight_descriptor {
        return Ok(TableKey::try_from_descriptor(descriptor)?);
    }
    let ticket = info
        .endpoint
        .iter()
        .find_map(|endpoint| endpoint.ticket.as_ref())
        .ok_or_else(invalid)?;
    Ok(TableKey::try_from_ticket(ticket)?)
}

/// Why an `Action` is not one flightcache takes (the library's `Error` has a variant for each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionProblem {
    /// An action flightcache does not know: its name, cut to a bounded prefix.
    Unknown {
        /// The name the client sent.
        name: ClientText,
    },
    /// A body that is not what the action takes.
    Body {
        /// The action.
        action: &'static str,
        /// What its body must be.
        expected: &'static str,
    },
    /// A body that should name a key and does not.
    Key(KeyProblem),
    /// An `expire` of no positive number of seconds.
    Ttl(InvalidTtl),
}

impl From<KeyProblem> for ActionProblem {
    fn from(problem: KeyProblem) -> Self {
        ActionProblem::Key(problem)
    }
}

impl From<InvalidTtl> for ActionProblem {
    fn from(problem: InvalidTtl) -> Self {
        ActionProblem::Ttl(problem)
    }
}

/// The `ActionType` list that `list_actions` returns: [`ACTIONS`], and [`ADVANCE_CLOCK`] on a
/// server whose clock tests may move.
pub fn action_types(test_clock: bool) -> Vec<ActionType> {
    let test_actions = [(ADVANCE_CLOCK, ADVANCE_CLOCK_DESCRIPTION)];
    ACTIONS
        .iter()
        .chain(test_actions.iter().filter(|_| test_clock))
        .map(|(name, description)| ActionType {
            r#type: name.to_string(),
            description: description.to_string(),
        })
        .collect()
}

/// The body of [`ADVANCE_CLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdvanceClockRequest {
    /// How far to move the clock forward, in seconds.
    pub seconds: f64,
}

/// What [`ADVANCE_CLOCK`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdvanceClockResult {
    /// How far the clock was moved forward since the server started, in seconds.
    pub skipped_seconds: f64,
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
    /// it goes back to the system once it has waited the reuse window, or at once when the
    /// budget needs room. Part of `memory_used`.
    #[serde(default)]
    pub freed_bytes: u64,
    /// The memory budget in bytes (`serve --max-memory`); 0 when there is none.
    #[serde(default)]
    pub memory_budget: u64,
    /// Memory charged to the budget now: tables, uploads in progress and freed memory kept
    /// for reuse (`freed_bytes`).
    #[serde(default)]
    pub memory_used: u64,
    /// Of `memory_used`, what cached tables hold, including tables evicted or dropped while a
    /// get still streams them.
    #[serde(default)]
    pub memory_tables: u64,
    /// Of `memory_used`, what uploads in progress hold.
    #[serde(default)]
    pub memory_uploads: u64,
    /// Memory the server process holds beyond `memory_used` (the process itself, HTTP/2
    /// buffers, the allocator's free memory), as last measured; what exceeds 64 MiB of it
    /// counts against the budget too. 0 where it is not measured (a server embedded in
    /// another program).
    #[serde(default)]
    pub memory_overhead: u64,
    /// Tables evicted to make room since the server started.
    #[serde(default)]
    pub evictions: u64,
    /// Keys removed because their time to live ran out since the server started.
    #[serde(default)]
    pub expirations: u64,
    /// Uploads refused because the memory budget had no room, since the server started (and
    /// the queries and reads refused for the memory they needed: a sort, the rest of a batch
    /// a read starts inside).
    #[serde(default)]
    pub rejected_uploads: u64,
    /// Tables whose file is in the data directory (`serve --data-dir`; 0 without one).
    #[serde(default)]
    pub disk_tables: u64,
    /// The size of those files.
    #[serde(default)]
    pub disk_bytes: u64,
    /// Tables whose file is still to be written (`--durability background`).
    #[serde(default)]
    pub disk_queued: u64,
    /// Table files that could not be written since the server started (a full disk, say):
    /// those tables are in memory only, or their puts failed (`--durability always`).
    #[serde(default)]
    pub disk_write_failures: u64,
    /// Rows retention trimmed from keys that grow (`x-flightcache-max-rows`, `-max-bytes`,
    /// `-max-age`, the `retain` action), since the server started.
    #[serde(default)]
    pub trimmed_rows: u64,
    /// Segments of capped keys trimmed to make room in the memory budget, before any whole
    /// key was evicted, since the server started.
    #[serde(default)]
    pub pressure_trims: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_action_parses() {
        let key = TableKey::try_new("k").unwrap();
        for action_type in action_types(true) {
            let body = match action_type.r#type.as_str() {
                DROP | PERSIST | TTL => b"k".to_vec(),
                ADVANCE_CLOCK => br#"{"seconds": 1.5}"#.to_vec(),
                EXPIRE => br#"{"key": "k", "seconds": 60}"#.to_vec(),
                RETAIN => br#"{"key": "k", "max_rows": 10}"#.to_vec(),
                CANCEL_FLIGHT_INFO => CacheAction::CancelFlightInfo(key.clone())
                    .to_action()
                    .body
                    .to_vec(),
                RENEW_FLIGHT_ENDPOINT => CacheAction::RenewFlightEndpoint {
                    key: key.clone(),
                    endpoint: FlightEndpoint::new().with_ticket(key.to_ticket()),
                }
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
            CacheAction::Expire {
                key: TableKey::try_new("t").unwrap(),
                ttl: Duration::from_millis(1500),
            },
            CacheAction::Persist(TableKey::try_new("t").unwrap()),
            CacheAction::Ttl(TableKey::try_new("t").unwrap()),
            CacheAction::WhoAmI,
            CacheAction::AdvanceClock(Duration::from_millis(2500)),
            CacheAction::Retain {
                key: TableKey::try_new("t").unwrap(),
                retention: Retention {
                    max_rows: Some(10),
                    max_bytes: None,
                    max_age_ms: Some(60_000),
                },
            },
            CacheAction::RenewFlightEndpoint {
                key: TableKey::try_new("t").unwrap(),
                endpoint: FlightEndpoint::new()
                    .with_ticket(TableKey::try_new("t").unwrap().to_ticket())
                    .with_location("grpc+tcp://h:1"),
            },
        ] {
            assert_eq!(CacheAction::try_from(action.to_action()).unwrap(), action);
        }
    }

    #[test]
    fn an_unknown_action_is_named() {
        let err = CacheAction::try_from(Action::new("flush", "")).unwrap_err();
        assert_eq!(
            err,
            ActionProblem::Unknown {
                name: ClientText::new(b"flush")
            }
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
                Err(ActionProblem::Body { .. })
            ));
        }
    }

    #[test]
    fn expire_takes_a_key_and_positive_seconds() {
        for (body, code) in [
            (&br#"{"key": "k", "seconds": 0}"#[..], "ttl"),
            (br#"{"key": "k", "seconds": -1}"#, "ttl"),
            (br#"{"key": "", "seconds": 5}"#, "key"),
            (br#"{"key": "k"}"#, "body"),
            (b"k 5", "body"),
        ] {
            let err = CacheAction::try_from(Action::new(EXPIRE, body.to_vec())).unwrap_err();
            let kind = match err {
                ActionProblem::Ttl(_) => "ttl",
                ActionProblem::Key(_) => "key",
                ActionProblem::Body { .. } => "body",
                other => panic!("{other:?}"),
            };
            assert_eq!(kind, code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn renew_needs_an_endpoint_with_a_ticket() {
        for body in [
            b"\xff".to_vec(),
            RenewFlightEndpointRequest::default().encode_to_vec(),
            RenewFlightEndpointRequest {
                endpoint: Some(FlightEndpoint::new()),
            }
            .encode_to_vec(),
        ] {
            assert!(matches!(
                CacheAction::try_from(Action::new(RENEW_FLIGHT_ENDPOINT, body)),
                Err(ActionProblem::Body { .. })
            ));
        }
    }

    #[test]
    fn drop_without_a_key_is_invalid() {
        assert!(matches!(
            CacheAction::try_from(Action::new(DROP, "")),
            Err(ActionProblem::Key(_))
        ));
    }
}
