//! Whether an uploaded LZ4 frame decompresses to no more than the length its buffer declares.
//!
//! arrow-ipc decompresses an LZ4 buffer to the end of its frame before it compares the result
//! with the declared length, so a frame of a few KiB could take GiBs first. The check reads the
//! frame's block headers: every block but the last holds at most the frame's block size, and
//! the last block's length is read from its sequences (literal and match lengths), without
//! decompressing anything. A frame whose bound is within the declared length is sound; for any
//! other frame (an odd block layout, several frames, the legacy format) the frame is
//! decompressed into a small buffer and counted, never past the declared length.

use std::io::Read;

/// The magic number of an LZ4 frame.
const MAGIC: u32 = 0x184D_2204;
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUMS: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_DICTIONARY_ID: u8 = 0b0000_0001;
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

/// The buffer the slow path decompresses into, a block at a time.
const COUNT_BUFFER_BYTES: usize = 64 << 10;

/// Whether `frame` decompresses to at most `declared` bytes. A frame that does not decompress
/// "fits": the decoder refuses it, no later than this would.
pub(super) fn frame_fits(frame: &[u8], declared: u64) -> bool {
    match output_bound(frame) {
        Some(bound) if bound <= declared => true,
        _ => counted_fits(frame, declared),
    }
}

/// At most the bytes the one LZ4 frame that is all of `frame` decompresses to, from its block
/// headers and the last block's sequences; `None` for anything else.
fn output_bound(frame: &[u8]) -> Option<u64> {
    let mut at = Reader {
        bytes: frame,
        at: 0,
    };
    if at.u32()? != MAGIC {
        return None;
    }
    let flags = at.u8()?;
    let block_descriptor = at.u8()?;
    if flags & FLG_VERSION_MASK != FLG_VERSION {
        return None;
    }
    let block_max: u64 = match (block_descriptor >> 4) & 0b111 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return None,
    };
    if flags & FLG_CONTENT_SIZE != 0 {
        at.skip(8)?;
    }
    if flags & FLG_DICTIONARY_ID != 0 {
        at.skip(4)?;
    }
    at.skip(1)?; // the header checksum
    let block_checksum = if flags & FLG_BLOCK_CHECKSUMS != 0 {
        4
    } else {
        0
    };
    let mut bound = 0u64;
    let mut last: Option<(bool, &[u8])> = None;
    loop {
        let size = at.u32()?;
        if size == 0 {
            break;
        }
        if let Some((uncompressed, data)) = last.take() {
            bound += if uncompressed {
                data.len() as u64
            } else {
                block_max
            };
        }
        let uncompressed = size & BLOCK_UNCOMPRESSED != 0;
        let data = at.take((size & !BLOCK_UNCOMPRESSED) as usize)?;
        at.skip(block_checksum)?;
        last = Some((uncompressed, data));
    }
    if flags & FLG_CONTENT_CHECKSUM != 0 {
        at.skip(4)?;
    }
    if at.at != frame.len() {
        return None; // another frame follows
    }
    if let Some((uncompressed, data)) = last {
        bound += if uncompressed {
            data.len() as u64
        } else {
            block_output_len(data)?.min(block_max)
        };
    }
    Some(bound)
}

/// The bytes an LZ4 block decompresses to: its literals and matches, summed from its
/// sequences (whatever the bytes they copy); `None` if it is cut short.
fn block_output_len(block: &[u8]) -> Option<u64> {
    let mut at = Reader {
        bytes: block,
        at: 0,
    };
    let mut out = 0u64;
    loop {
        let token = at.u8()?;
        let literals = at.length(u64::from(token >> 4))?;
        at.skip(usize::try_from(literals).ok()?)?;
        out = out.checked_add(literals)?;
        if at.at == block.len() {
            return Some(out); // the last sequence has literals only
        }
        at.skip(2)?; // the match's offset
        let matched = at.length(u64::from(token & 0x0F))?;
        out = out.checked_add(matched.checked_add(4)?)?;
    }
}

/// Whether `frame` decompresses to at most `declared` bytes, counted by decompressing it into
/// a small buffer, never past `declared` + 1 bytes.
fn counted_fits(frame: &[u8], declared: u64) -> bool {
    let mut decoder = lz4_flex::frame::FrameDecoder::new(frame).take(declared.saturating_add(1));
    let mut scratch = vec![0; COUNT_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        match decoder.read(&mut scratch) {
            Ok(0) | Err(_) => return total <= declared,
            Ok(read) => total += read as u64,
        }
    }
}

/// Little-endian fields read in order from a slice.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(taken)
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        self.take(len).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A sequence's literal or match length: `nibble`, and when it is 15, the bytes after it
    /// added while they are 255.
    fn length(&mut self, nibble: u64) -> Option<u64> {
        let mut len = nibble;
        if nibble == 15 {
            loop {
                let more = self.u8()?;
                len = len.checked_add(u64::from(more))?;
                if more != 255 {
                    break;
                }
            }
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn compressed(data: &[u8], block_size: lz4_flex::frame::BlockSize) -> Vec<u8> {
        let info = lz4_flex::frame::FrameInfo::new().block_size(block_size);
        let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_frame_fits_exactly_the_length_it_decompresses_to() {
        use lz4_flex::frame::BlockSize;
        let mixed: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 1000).to_le_bytes())
            .collect();
        for data in [vec![0u8; 5 << 20], mixed, b"short".to_vec(), Vec::new()] {
            for block_size in [BlockSize::Max64KB, BlockSize::Max1MB, BlockSize::Max4MB] {
                let frame = compressed(&data, block_size);
                let len = data.len() as u64;
                // The block headers and the last block's sequences are enough.
                let bound = output_bound(&frame).expect("one frame");
                assert_eq!(bound, len, "{len} bytes in blocks of {block_size:?}");
                assert!(frame_fits(&frame, len));
                if len > 0 {
                    assert!(
                        !frame_fits(&frame, len - 1),
                        "{len} bytes declared one less"
                    );
                    assert!(!counted_fits(&frame, len - 1));
                }
            }
        }
    }

    #[test]
    fn frames_it_cannot_bound_are_counted() {
        let data = vec![7u8; 300_000];
        let frame = compressed(&data, lz4_flex::frame::BlockSize::Max64KB);
        // Two frames one after the other: counted as arrow-ipc's decoder reads them.
        let twice = [frame.clone(), frame.clone()].concat();
        assert_eq!(output_bound(&twice), None);
        let mut decoded = Vec::new();
        let real = lz4_flex::frame::FrameDecoder::new(&twice[..])
            .read_to_end(&mut decoded)
            .unwrap() as u64;
        assert!(real >= 300_000);
        assert!(frame_fits(&twice, real));
        assert!(!frame_fits(&twice, real - 1));
        // Cut short: not bounded, and no more than it declares.
        assert_eq!(output_bound(&frame[..frame.len() - 3]), None);
        assert!(frame_fits(&frame[..frame.len() - 3], 300_000));
    }
}
