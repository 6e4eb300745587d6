//! `TableKey`: the name a table is cached under, and how Flight descriptors and tickets carry it.
//!
//! A CMD descriptor's key is its command bytes; a PATH descriptor's key is its segments joined by
//! `/`, empty segments included (`["", "x"]` is `/x`, `["a", "", "b"]` is `a//b`); a ticket's key
//! is its bytes. All three address the same table space, so `FlightDescriptor.for_command("a/b")`,
//! `for_path("a", "b")` and `Ticket("a/b")` name one table.

use std::fmt;

use arrow_flight::{FlightDescriptor, Ticket, flight_descriptor::DescriptorType};
use bytes::Bytes;

use crate::protocol::text::ClientText;

/// The longest key accepted, in bytes. Keys are names, not payloads.
pub const MAX_KEY_BYTES: usize = 4096;

/// The name of a cached table: non-empty UTF-8, at most [`MAX_KEY_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey(String);

impl TableKey {
    /// Validate `name` as a key.
    ///
    /// # Errors
    /// [`KeyProblem`] (the server answers InvalidArgument) if it is empty or longer than [`MAX_KEY_BYTES`].
    pub fn try_new(name: impl Into<String>) -> Result<Self, KeyProblem> {
        let name = name.into();
        if name.is_empty() {
            return Err(KeyProblem::Empty);
        }
        if name.len() > MAX_KEY_BYTES {
            return Err(KeyProblem::TooLong { bytes: name.len() });
        }
        Ok(Self(name))
    }

    /// Decode a key from raw bytes (a CMD descriptor, a ticket, an action body).
    ///
    /// # Errors
    /// [`KeyProblem`] (the server answers InvalidArgument) if the bytes are not UTF-8 or the key is empty.
    pub fn try_from_bytes(bytes: &[u8]) -> Result<Self, KeyProblem> {
        let name = std::str::from_utf8(bytes).map_err(|e| KeyProblem::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        Self::try_new(name)
    }

    /// The key a descriptor names: CMD bytes, or PATH segments joined by `/` (an empty segment
    /// is an empty string between two slashes).
    ///
    /// # Errors
    /// [`KeyProblem`] (the server answers InvalidArgument) for an empty or non-UTF-8 key, or an unknown
    /// descriptor type.
    pub fn try_from_descriptor(descriptor: &FlightDescriptor) -> Result<Self, KeyProblem> {
        match DescriptorType::try_from(descriptor.r#type) {
            Ok(DescriptorType::Cmd) => Self::try_from_bytes(&descriptor.cmd),
            Ok(DescriptorType::Path) => Self::try_new(descriptor.path.join("/")),
            Ok(DescriptorType::Unknown) | Err(_) => Err(KeyProblem::UnknownDescriptorType {
                type_number: descriptor.r#type,
            }),
        }
    }

    /// The key a ticket names: its exact bytes, as pyarrow users write `Ticket(name)` by hand.
    ///
    /// # Errors
    /// [`KeyProblem`] (the server answers InvalidArgument) for an empty or non-UTF-8 ticket.
    pub fn try_from_ticket(ticket: &Ticket) -> Result<Self, KeyProblem> {
        Self::try_from_bytes(&ticket.ticket)
    }

    /// The ticket that `do_get` accepts for this key.
    pub fn to_ticket(&self) -> Ticket {
        Ticket::new(Bytes::copy_from_slice(self.0.as_bytes()))
    }

    /// A CMD descriptor naming this key.
    pub fn to_descriptor(&self) -> FlightDescriptor {
        FlightDescriptor::new_cmd(Bytes::copy_from_slice(self.0.as_bytes()))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as error messages quote it: in backticks, cut to a bounded prefix when long.
    pub fn quoted(&self) -> ClientText {
        ClientText::new(self.0.as_bytes())
    }
}

impl fmt::Display for TableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a key (the library's `Error::InvalidKey`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is empty.
    #[error("the key is empty; name the table")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("the key is {bytes} bytes long; the limit is {MAX_KEY_BYTES}")]
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// The key's bytes are not UTF-8.
    #[error("the key is not valid UTF-8 (from byte {valid_up_to} on)")]
    NotUtf8 {
        /// How many leading bytes are valid.
        valid_up_to: usize,
    },
    /// A descriptor is neither CMD nor PATH.
    #[error("the descriptor type {type_number} is unknown; use a CMD or PATH descriptor")]
    UnknownDescriptorType {
        /// The type number sent.
        type_number: i32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_descriptor_key_is_its_bytes() {
        let key = TableKey::try_from_descriptor(&FlightDescriptor::new_cmd("trips")).unwrap();
        assert_eq!(key.as_str(), "trips");
    }

    #[test]
    fn path_descriptor_key_joins_segments_with_slash() {
        let key = TableKey::try_from_descriptor(&FlightDescriptor::new_path(vec![
            "nyc".into(),
            "trips".into(),
        ]))
        .unwrap();
        assert_eq!(key.as_str(), "nyc/trips");
    }

    #[test]
    fn empty_path_segments_are_part_of_the_key() {
        let key = |segments: &[&str]| {
            let path = segments.iter().map(|s| s.to_string()).collect();
            TableKey::try_from_descriptor(&FlightDescriptor::new_path(path))
        };
        assert_eq!(key(&["", "x"]).unwrap().as_str(), "/x");
        assert_eq!(key(&["a", "", "b"]).unwrap().as_str(), "a//b");
        assert_eq!(key(&["a", ""]).unwrap().as_str(), "a/");
        assert_eq!(key(&["", ""]).unwrap().as_str(), "/");
        // Only a key that is empty altogether is invalid.
        assert!(matches!(key(&[""]), Err(KeyProblem::Empty)));
    }

    #[test]
    fn ticket_is_the_exact_utf8_bytes_of_the_key() {
        let key = TableKey::try_new("données/2024").unwrap();
        assert_eq!(&key.to_ticket().ticket[..], "données/2024".as_bytes());
        assert_eq!(TableKey::try_from_ticket(&key.to_ticket()).unwrap(), key);
    }

    #[test]
    fn empty_and_non_utf8_keys_are_refused() {
        assert_eq!(TableKey::try_from_bytes(b""), Err(KeyProblem::Empty));
        assert_eq!(
            TableKey::try_from_bytes(&[0xff, 0xfe]),
            Err(KeyProblem::NotUtf8 { valid_up_to: 0 })
        );
        assert_eq!(
            TableKey::try_from_descriptor(&FlightDescriptor::new_path(vec![])),
            Err(KeyProblem::Empty)
        );
    }

    #[test]
    fn over_long_keys_are_refused() {
        assert!(TableKey::try_new("k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(TableKey::try_new("k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
