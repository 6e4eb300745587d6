//! The `do_action` vocabulary: action names, how an `Action` parses, and what each returns.
//!
//! `list_actions` and `do_action` both read [`ACTIONS`], so an advertised action is always one
//! that is handled.

use arrow_flight::{Action, ActionType};
use serde::{Deserialize, Serialize};

use crate::error::{ClientText, Error, Result};
use crate::protocol::key::TableKey;

/// Remove one table. Body: the key as UTF-8. Result: a [`DropResult`] as JSON.
pub const DROP: &str = "drop";
/// Remove every table. Body: empty. Result: a [`ClearResult`] as JSON.
pub const CLEAR: &str = "clear";
/// Report contents and counters. Body: empty. Result: a [`StoreStats`] as JSON.
pub const STATS: &str = "stats";

/// Every action, with the description `list_actions` gives.
pub const ACTIONS: [(&str, &str); 3] = [
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
}

impl TryFrom<Action> for CacheAction {
    type Error = Error;

    /// # Errors
    /// [`Error::UnknownAction`] (InvalidArgument) for an unknown action, whose message lists
    /// the valid ones; [`Error::InvalidKey`] for a `drop` whose body is not a key.
    fn try_from(action: Action) -> Result<Self> {
        match action.r#type.as_str() {
            DROP => Ok(CacheAction::Drop(TableKey::try_from_bytes(&action.body)?)),
            CLEAR => Ok(CacheAction::Clear),
            STATS => Ok(CacheAction::Stats),
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
        }
    }
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
        for action_type in action_types() {
            let body = if action_type.r#type == DROP { "k" } else { "" };
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
        ] {
            assert_eq!(CacheAction::try_from(action.to_action()).unwrap(), action);
        }
    }

    #[test]
    fn unknown_action_lists_the_valid_ones() {
        let err = CacheAction::try_from(Action::new("flush", "")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`flush`"), "{message}");
        assert!(message.contains("drop, clear, stats"), "{message}");
    }

    #[test]
    fn drop_without_a_key_is_invalid() {
        assert!(matches!(
            CacheAction::try_from(Action::new(DROP, "")),
            Err(Error::InvalidKey { .. })
        ));
    }
}
