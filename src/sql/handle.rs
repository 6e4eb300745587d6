//! Statement handles and query tickets: what a statement is, signed by the server, bound to
//! the caller it was issued to.
//!
//! The server keeps no state per prepared statement or planned query: the handle carries the
//! statement itself (its SQL, the caller's user name, its bound parameters) behind an
//! HMAC-SHA256 made with a key drawn when the server starts. A client cannot forge or alter
//! one, a handle issued to one user is refused to another, and a client that prepares and
//! never closes costs the server nothing. A restarted server refuses the handles of the one
//! before it (prepare the statement again).

use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Length of the signature that starts a handle.
const SIGNATURE_BYTES: usize = 32;

/// A statement as its handle carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Statement {
    /// The user it was issued to; `None` on a server without users.
    pub user: Option<String>,
    /// The SQL text.
    pub sql: String,
    /// Its bound parameters: one row, as an Arrow IPC stream (base64 in the handle).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub parameters: Option<Bytes>,
    /// Makes each ticket and prepared statement its own, so that cancelling one stops only
    /// its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
}

impl Statement {
    /// `sql`, issued to `caller`, with no parameters bound.
    pub fn new(caller: &crate::auth::Caller, sql: String) -> Self {
        Self {
            user: caller.user.clone(),
            sql,
            parameters: None,
            nonce: None,
        }
    }

    /// The statement with a fresh nonce: its handle differs from every other's.
    pub fn unique(self) -> Self {
        Self {
            nonce: Some(rand::random()),
            ..self
        }
    }
}

/// Signs and checks handles with this server's key.
#[derive(Clone)]
pub(crate) struct HandleSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for HandleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleSigner")
    }
}

impl HandleSigner {
    /// A signer with a fresh random key.
    pub fn new() -> Self {
        Self {
            key: rand::random(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// The handle of `statement`.
    pub fn sign(&self, statement: &Statement) -> Bytes {
        let body = serde_json::to_vec(statement).expect("a statement serializes");
        let mut mac = self.mac();
        mac.update(&body);
        let mut handle = mac.finalize().into_bytes().to_vec();
        handle.extend_from_slice(&body);
        Bytes::from(handle)
    }

    /// The statement `handle` carries, if this server signed it for `user`.
    ///
    /// # Errors
    /// [`Error::SqlHandle`] for a handle this server did not sign, or signed for another user.
    pub fn open(&self, handle: &[u8], user: Option<&str>) -> Result<Statement> {
        if handle.len() < SIGNATURE_BYTES {
            return Err(Error::SqlHandle);
        }
        let (signature, body) = handle.split_at(SIGNATURE_BYTES);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(signature).map_err(|_| Error::SqlHandle)?;
        let statement: Statement = serde_json::from_slice(body).map_err(|_| Error::SqlHandle)?;
        if statement.user.as_deref() != user {
            return Err(Error::SqlHandle);
        }
        Ok(statement)
    }
}

mod base64_bytes {
    use super::BASE64;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_str(&BASE64.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            BASE64
                .decode(t)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(user: Option<&str>) -> Statement {
        Statement {
            user: user.map(str::to_owned),
            sql: "SELECT 1".into(),
            parameters: Some(Bytes::from_static(b"\x01\x02")),
            nonce: Some(7),
        }
    }

    #[test]
    fn a_handle_opens_for_its_user_only() {
        let signer = HandleSigner::new();
        let handle = signer.sign(&statement(Some("ann")));
        assert_eq!(
            signer.open(&handle, Some("ann")).unwrap(),
            statement(Some("ann"))
        );
        assert!(matches!(
            signer.open(&handle, Some("bob")),
            Err(Error::SqlHandle)
        ));
        assert!(matches!(signer.open(&handle, None), Err(Error::SqlHandle)));
    }

    #[test]
    fn an_altered_or_foreign_handle_is_refused() {
        let signer = HandleSigner::new();
        let handle = signer.sign(&statement(None));
        let mut altered = handle.to_vec();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(signer.open(&altered, None), Err(Error::SqlHandle)));
        let other = HandleSigner::new();
        assert!(matches!(other.open(&handle, None), Err(Error::SqlHandle)));
        assert!(matches!(signer.open(b"short", None), Err(Error::SqlHandle)));
    }
}
