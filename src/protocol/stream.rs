//! Keys that grow, on the wire: the request headers of an append (`do_put`), of a read from an
//! offset and of a follower (`do_get`), the retention a growing key is capped by, and what
//! `get_flight_info` says of a key's offsets.
//!
//! Offsets are row numbers: row 0 is the first row stored under the key (by the put or append
//! that created it), and every append's rows take the next numbers. Trimming old rows never
//! renumbers the others. A plain put (no [`APPEND_HEADER`]) replaces the key, and the new
//! table starts again at row 0.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::text::ClientText;
use crate::protocol::ttl::MAX_TTL;

/// The `do_put` request header that appends the upload's batches to the key instead of
/// replacing it: `x-flightcache-append: 1`.
pub const APPEND_HEADER: &str = "x-flightcache-append";
/// The `do_get` request header that starts the read at a row: `N`, `earliest` (the oldest row
/// kept, the default) or `latest` (only rows appended from now on).
pub const FROM_HEADER: &str = "x-flightcache-from";
/// The `do_get` request header that keeps the stream open, sending each append as it lands:
/// `x-flightcache-follow: 1`.
pub const FOLLOW_HEADER: &str = "x-flightcache-follow";
/// The `do_get` response header that gives the offset of the first row sent (what `earliest`
/// or `latest` stood for); each later batch's offset is that plus the rows sent before it.
pub const START_OFFSET_HEADER: &str = "x-flightcache-start-offset";
/// The `do_put` request header capping an appended key at a number of rows.
pub const MAX_ROWS_HEADER: &str = "x-flightcache-max-rows";
/// The `do_put` request header capping an appended key at a number of Arrow bytes.
pub const MAX_BYTES_HEADER: &str = "x-flightcache-max-bytes";
/// The `do_put` request header capping an appended key's rows at an age, in seconds.
pub const MAX_AGE_HEADER: &str = "x-flightcache-max-age";

/// Where a `do_get` starts ([`FROM_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The oldest row the key keeps.
    #[default]
    Earliest,
    /// The row after the last one stored when the read starts: only what is appended later.
    Latest,
    /// This row.
    Offset(u64),
}

impl ReadFrom {
    /// The header value for this start.
    pub fn to_header(self) -> String {
        match self {
            ReadFrom::Earliest => "earliest".into(),
            ReadFrom::Latest => "latest".into(),
            ReadFrom::Offset(offset) => offset.to_string(),
        }
    }
}

impl std::str::FromStr for ReadFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "earliest" => Ok(ReadFrom::Earliest),
            "latest" => Ok(ReadFrom::Latest),
            number => number
                .parse()
                .map(ReadFrom::Offset)
                .map_err(|_| format!("`{number}` is not a row number, `earliest` or `latest`")),
        }
    }
}

/// A header of this module's whose value cannot be used: the library's
/// `Error::InvalidHeader` (InvalidArgument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    /// The header.
    pub header: &'static str,
    /// What the client gave.
    pub given: ClientText,
    /// What it takes.
    pub expected: &'static str,
}

/// A [`FROM_HEADER`] value.
///
/// # Errors
/// [`InvalidHeader`] unless it is a row number, `earliest` or `latest`.
pub fn parse_from_header(value: &[u8]) -> Result<ReadFrom, InvalidHeader> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| InvalidHeader {
            header: FROM_HEADER,
            given: ClientText::new(value),
            expected: "a row number (0 is the first row), `earliest` or `latest`",
        })
}

/// A yes/no header ([`APPEND_HEADER`], [`FOLLOW_HEADER`]): `1`/`true` or `0`/`false`.
///
/// # Errors
/// [`InvalidHeader`] for anything else.
pub fn parse_flag_header(header: &'static str, value: &[u8]) -> Result<bool, InvalidHeader> {
    match value.trim_ascii() {
        b"1" | b"true" => Ok(true),
        b"0" | b"false" => Ok(false),
        _ => Err(InvalidHeader {
            header,
            given: ClientText::new(value),
            expected: "`1` (or `true`) to turn it on",
        }),
    }
}

/// How much of a growing key is kept, like Redis' `XADD MAXLEN ~` or a Kafka topic's
/// retention: the oldest appends are trimmed, a whole append at a time, while what is left
/// still holds at least `max_rows` rows and `max_bytes` bytes; rows older than `max_age` go
/// regardless. Absent limits do not cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retention {
    /// Keep about this many rows (at least this many, less the oldest whole appends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Keep about this many Arrow bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Trim appends older than this, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

impl Retention {
    /// Whether any limit is set.
    pub fn caps(&self) -> bool {
        self.max_rows.is_some() || self.max_bytes.is_some() || self.max_age_ms.is_some()
    }

    /// Whether every limit set is usable: over 0, and an age of at most 100 years.
    pub fn is_usable(&self) -> bool {
        let zero =
            self.max_rows == Some(0) || self.max_bytes == Some(0) || self.max_age_ms == Some(0);
        !zero && self.max_age().is_none_or(|age| age <= MAX_TTL)
    }

    /// The age limit.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age_ms.map(Duration::from_millis)
    }

    /// The retention the request headers of an append set, `None` if they set none.
    ///
    /// # Errors
    /// [`InvalidHeader`] for a value that is not a whole number (rows, bytes) or a number of
    /// seconds over 0 (age).
    pub fn from_headers(
        get: impl Fn(&'static str) -> Option<Vec<u8>>,
    ) -> Result<Option<Self>, InvalidHeader> {
        let count = |header: &'static str| {
            get(header)
                .map(|value| {
                    std::str::from_utf8(&value)
                        .ok()
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| InvalidHeader {
                            header,
                            given: ClientText::new(&value),
                            expected: "a whole number over 0",
                        })
                })
                .transpose()
        };
        let max_rows = count(MAX_ROWS_HEADER)?;
        let max_bytes = count(MAX_BYTES_HEADER)?;
        let max_age_ms = get(MAX_AGE_HEADER)
            .map(|value| {
                std::str::from_utf8(&value)
                    .ok()
                    .and_then(|text| text.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_TTL.as_secs_f64())
                    .map(|seconds| (seconds * 1000.0).ceil() as u64)
                    .ok_or_else(|| InvalidHeader {
                        header: MAX_AGE_HEADER,
                        given: ClientText::new(&value),
                        expected: "a number of seconds over 0",
                    })
            })
            .transpose()?;
        let retention = Self {
            max_rows,
            max_bytes,
            max_age_ms,
        };
        Ok(retention.caps().then_some(retention))
    }
}

/// The body of the `retain` action: the key, and its new retention (every limit absent:
/// uncapped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainRequest {
    /// The key.
    pub key: String,
    /// Its retention.
    #[serde(flatten)]
    pub retention: Retention,
}

/// A key's offsets: what `get_flight_info` carries as JSON in `FlightInfo.app_metadata`
/// (beside the time to live, see `TableMetadata`), and what `retain` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Offsets {
    /// The oldest row kept.
    #[serde(default)]
    pub earliest_offset: u64,
    /// The offset the next appended row will take (one past the last row stored).
    #[serde(default)]
    pub next_offset: u64,
    /// The key's retention, if it is capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

impl Offsets {
    /// Read them from a `FlightInfo.app_metadata`.
    ///
    /// # Errors
    /// The JSON error if it does not hold them.
    pub fn from_app_metadata(app_metadata: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(app_metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_starts_parse_and_print_back() {
        for (text, from) in [
            ("earliest", ReadFrom::Earliest),
            ("latest", ReadFrom::Latest),
            ("0", ReadFrom::Offset(0)),
            (" 42 ", ReadFrom::Offset(42)),
        ] {
            assert_eq!(parse_from_header(text.as_bytes()).unwrap(), from);
            assert_eq!(
                parse_from_header(from.to_header().as_bytes()).unwrap(),
                from
            );
        }
        for bad in ["-1", "", "first", "1.5", "\u{ff}"] {
            let err = parse_from_header(bad.as_bytes()).unwrap_err();
            assert_eq!(err.header, FROM_HEADER);
        }
    }

    #[test]
    fn retention_comes_from_headers_or_is_none() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &'static str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_bytes().to_vec())
            }
        };
        assert_eq!(Retention::from_headers(headers(&[])).unwrap(), None);
        let retention = Retention::from_headers(headers(&[
            (MAX_ROWS_HEADER, "1000"),
            (MAX_AGE_HEADER, "1.5"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(retention.max_rows, Some(1000));
        assert_eq!(retention.max_bytes, None);
        assert_eq!(retention.max_age(), Some(Duration::from_millis(1500)));
        for (header, bad) in [
            (MAX_ROWS_HEADER, "-3"),
            (MAX_ROWS_HEADER, "0"),
            (MAX_BYTES_HEADER, "lots"),
            (MAX_AGE_HEADER, "0"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(vec![(header, bad)].into_boxed_slice());
            let err = Retention::from_headers(headers(pairs)).unwrap_err();
            assert_eq!(err.header, header);
        }
    }

    #[test]
    fn flags_are_one_or_zero() {
        assert!(parse_flag_header(APPEND_HEADER, b"1").unwrap());
        assert!(!parse_flag_header(APPEND_HEADER, b"false").unwrap());
        assert!(parse_flag_header(APPEND_HEADER, b"yes please").is_err());
    }
}
