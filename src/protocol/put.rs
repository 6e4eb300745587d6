//! What a `do_put` answers: [`PutSummary`], as JSON in the `app_metadata` of its `PutResult`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a finished `do_put` answers, as JSON in the `app_metadata` of its one `PutResult`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutSummary {
    /// The key the table was stored under.
    pub key: String,
    /// Rows stored.
    pub rows: u64,
    /// Arrow bytes stored.
    pub bytes: u64,
    /// Record batches stored.
    pub batches: u64,
    /// For an append: the offset its first row took (as `XADD` answers an ID); its rows are
    /// `first_offset..first_offset + rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<u64>,
}

impl PutSummary {
    /// The summary as the JSON `app_metadata` of a `PutResult`.
    pub fn to_app_metadata(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a PutSummary serializes"))
    }

    /// Read a summary from the `app_metadata` of a `PutResult`.
    ///
    /// # Errors
    /// The JSON error if it is not a summary.
    pub fn from_app_metadata(app_metadata: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(app_metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_round_trips_through_app_metadata() {
        let summary = PutSummary {
            key: "t".into(),
            rows: 3,
            bytes: 24,
            batches: 1,
            first_offset: None,
        };
        let json = summary.to_app_metadata();
        assert_eq!(&json[..], br#"{"key":"t","rows":3,"bytes":24,"batches":1}"#);
        assert_eq!(PutSummary::from_app_metadata(&json).unwrap(), summary);
        assert!(PutSummary::from_app_metadata(b"0").is_err());
    }
}
