//! The rights a request needs, as the users file grants them and `whoami` names them.

use std::fmt;

/// A right over keys, or over the whole cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Get a table, its schema or description, see it in a listing, read its time to live.
    Read,
    /// Put, drop, expire, persist or renew a key.
    Write,
    /// Clear the cache and read its statistics.
    Admin,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        })
    }
}
