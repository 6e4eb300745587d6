//! Times to live on the wire: the `x-flightcache-ttl` request header of `do_put`, the seconds
//! the `expire` action takes, and what `ttl`, `expire`, `persist` and a table's `FlightInfo`
//! answer about them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::stream::Offsets;
use crate::protocol::text::ClientText;

/// The request header that gives a `do_put`'s table a time to live, in seconds (`600`,
/// `0.5`). pyarrow: `FlightCallOptions(headers=[(b"x-flightcache-ttl", b"600")])`.
pub const TTL_HEADER: &str = "x-flightcache-ttl";

/// The longest time to live accepted: 100 years.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A time to live of `seconds`.
///
/// # Errors
/// [`InvalidTtl`] (the server answers InvalidArgument) unless `seconds` is a number over 0 and at most
/// [`MAX_TTL`].
pub fn ttl_from_seconds(seconds: f64) -> Result<Duration, InvalidTtl> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TTL.as_secs_f64() {
        let ttl = Duration::from_secs_f64(seconds);
        if !ttl.is_zero() {
            return Ok(ttl);
        }
    }
    Err(InvalidTtl {
        given: ClientText::new(seconds.to_string().as_bytes()),
    })
}

/// The time to live a [`TTL_HEADER`] value gives: a number of seconds.
///
/// # Errors
/// [`InvalidTtl`] (the server answers InvalidArgument) if it is not a number of seconds over 0.
pub fn parse_ttl_header(value: &[u8]) -> Result<Duration, InvalidTtl> {
    let invalid = || InvalidTtl {
        given: ClientText::new(value),
    };
    let seconds: f64 = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(invalid)?;
    ttl_from_seconds(seconds).map_err(|_| invalid())
}

/// A time to live that is not a number of seconds over 0 (and at most [`MAX_TTL`]): what the
/// client gave, cut to a bounded prefix (the library's `Error::InvalidTtl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTtl {
    /// What the client gave.
    pub given: ClientText,
}

/// The body of the `expire` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpireRequest {
    /// The table's key.
    pub key: String,
    /// Its new time to live, in seconds from now.
    pub seconds: f64,
}

/// What `expire` and `ttl` answer: a key's time to live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtlResult {
    /// The table's key.
    pub key: String,
    /// Seconds until it expires; `null` if it never does.
    pub ttl_seconds: Option<f64>,
}

/// What `persist` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistResult {
    /// The table's key.
    pub key: String,
    /// Whether it had a time to live, now removed.
    pub had_ttl: bool,
}

/// What a table's `FlightInfo.app_metadata` holds, as JSON: how long it has to live, when it
/// was last used, and its offsets (the oldest row kept and the next row's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMetadata {
    /// Seconds until it expires; `null` if it never does.
    pub ttl_seconds: Option<f64>,
    /// Seconds since its last get or put.
    pub idle_seconds: f64,
    /// `earliest_offset`, `next_offset` and, for a capped key, `retention`.
    #[serde(flatten)]
    pub offsets: Offsets,
}

/// Header values that are no time to live, for the tests here and of the error they become.
#[cfg(test)]
pub(crate) const BAD_TTL_HEADERS: [&[u8]; 8] =
    [b"0", b"-3", b"ten", b"", b"inf", b"NaN", b"1e30", b"\xff"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_headers_are_positive_numbers_of_seconds() {
        assert_eq!(parse_ttl_header(b"600").unwrap(), Duration::from_secs(600));
        assert_eq!(
            parse_ttl_header(b" 0.5 ").unwrap(),
            Duration::from_millis(500)
        );
        for bad in BAD_TTL_HEADERS {
            let err = parse_ttl_header(bad).unwrap_err();
            assert_eq!(err.given, ClientText::new(bad), "{bad:?}");
        }
    }
}
