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

/// Default largest DATA frame: 1 MiB instead of HTTP/2's 16 KiB, so a 2 MiB Flight message is
/// two frames rather than 128.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1 << 20;
/// Default stream window: 16 MiB, several messages in flight per stream.
pub const DEFAULT_STREAM_WINDOW_BYTES: u32 = 16 << 20;
/// Default connection window: 32 MiB, room for two busy streams.
pub const DEFAULT_CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

impl Default for Http2Settings {
    /// Large frames and windows: on a fast link the per-frame work and window updates of the
    /// stock settings, not the bytes, limit a single stream (see benches/RESULTS.md).
    fn default() -> Self {
        Self {
            max_frame_bytes: Some(DEFAULT_MAX_FRAME_BYTES),
            stream_window_bytes: Some(DEFAULT_STREAM_WINDOW_BYTES),
            connection_window_bytes: Some(DEFAULT_CONNECTION_WINDOW_BYTES),
        }
    }
}
