//! Client input quoted in error messages, as a bounded prefix.

use std::fmt;

/// Bytes a client sent, kept for an error message as a bounded prefix.
///
/// Error messages quote client input, but only its first [`ClientText::MAX_BYTES`] bytes: a
/// client's megabyte-long action name must not become a megabyte-long status header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientText {
    prefix: String,
    total_bytes: usize,
}

impl ClientText {
    /// How many bytes of client input an error message quotes.
    pub const MAX_BYTES: usize = 128;

    /// Keep a bounded prefix of `bytes`, decoded lossily.
    pub fn new(bytes: &[u8]) -> Self {
        let mut end = bytes.len().min(Self::MAX_BYTES);
        // Cut at a character boundary when the bytes are UTF-8.
        while end > 0 && end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        Self {
            prefix: String::from_utf8_lossy(&bytes[..end]).into_owned(),
            total_bytes: bytes.len(),
        }
    }

    /// Whether the text was cut.
    pub fn is_cut(&self) -> bool {
        self.prefix.len() < self.total_bytes
    }
}

impl fmt::Display for ClientText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_cut() {
            write!(f, "`{}…` ({} bytes, cut)", self.prefix, self.total_bytes)
        } else {
            write!(f, "`{}`", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_quoted_as_a_bounded_prefix() {
        let short = ClientText::new(b"flushall");
        assert_eq!(short.to_string(), "`flushall`");
        assert!(!short.is_cut());

        let long = ClientText::new(&vec![b'x'; 1 << 20]);
        let shown = long.to_string();
        assert!(long.is_cut());
        assert!(shown.len() < 200, "{}", shown.len());
        assert!(shown.contains("1048576 bytes, cut"), "{shown}");

        // A multi-byte character straddling the cut is not split.
        let mut accented = vec![b'a'; ClientText::MAX_BYTES - 1];
        accented.extend_from_slice("é and more".as_bytes());
        assert!(ClientText::new(&accented).to_string().starts_with("`aaa"));
        assert!(!ClientText::new(&accented).to_string().contains('\u{FFFD}'));
    }
}
