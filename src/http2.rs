//! HTTP/2 frame size and flow-control windows, shared by the server and the client.
//!
//! gRPC moves every Flight message through HTTP/2 DATA frames; on a fast link the frame size and
//! the windows decide how much per-frame work and how many window-update round trips a large
//! table costs. Both ends are configured from the same values.

/// HTTP/2 transport settings. `None` keeps the transport's own default (16 KiB frames,
/// hyper's 1 MiB windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Largest DATA frame this end accepts (16 KiB to 16 MiB - 1).
    pub max_frame_bytes: Option<u32>,
    /// Initial flow-control window of each stream.
    pub stream_window_bytes: Option<u32>,
    /// Initial flow-control window of the whole connection.
    pub connection_window_bytes: Option<u32>,
}

impl Http2Settings {
    /// The transport's stock settings, for comparison in benchmarks.
    pub const TRANSPORT_DEFAULTS: Http2Settings = Http2Settings {
        max_frame_bytes: None,
        stream_window_bytes: None,
        connection_window_bytes: None,
    };
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self::TRANSPORT_DEFAULTS
    }
}
