//! Where a table file's bytes go on their way to disk: straight to the device (`O_DIRECT`)
//! through one aligned buffer where the file system allows it, else through the page cache.
//!
//! Writing a table through the page cache first copies it into freshly allocated cache pages,
//! then has the kernel write those out; on the project's VM that allocation alone made a GiB
//! cost 0.8-3.6 s instead of the 0.65 s the disk takes, and it crowds out the memory puts need.
//! `O_DIRECT` writes from a reused 4 MiB buffer at the device's speed, every time
//! (benches/RESULTS.md). File systems that refuse it (tmpfs before Linux 6.6, some network
//! file systems) get the page cache and a sync every 64 MiB, so that the disk writes while the
//! table still arrives rather than all at the end.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// The alignment `O_DIRECT` needs of buffers, offsets and lengths (the page size covers every
/// device's logical block).
const ALIGN: usize = 4096;
/// The aligned buffer a direct writer fills before each write.
pub const DIRECT_BUFFER: usize = 4 << 20;
/// How much a file written through the page cache writes between two syncs.
const SYNC_EVERY: u64 = 64 << 20;

/// A new table file at `path` (readable by this user only), written directly if its file
/// system allows.
///
/// # Errors
/// The system's, if the file cannot be created.
pub fn create(path: &Path) -> io::Result<TableOut> {
    match open(path, true) {
        Ok(file) => Ok(TableOut::Direct(DirectWriter::new(file))),
        // EINVAL: this file system does not do direct I/O.
        Err(err) if err.raw_os_error() == Some(22) => {
            let file = open(path, false)?;
            Ok(TableOut::Buffered {
                out: BufWriter::with_capacity(1 << 20, file),
                written: 0,
                synced: 0,
            })
        }
        Err(err) => Err(err),
    }
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    #[cfg(target_os = "linux")]
    if direct {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, nix::libc::O_DIRECT);
    }
    #[cfg(not(target_os = "linux"))]
    if direct {
        return Err(io::Error::from_raw_os_error(22));
    }
    options.open(path)
}

/// A table file being written.
#[derive(Debug)]
pub enum TableOut {
    /// Straight to the device.
    Direct(DirectWriter),
    /// Through the page cache, synced as it goes.
    Buffered {
        /// The file, buffered.
        out: BufWriter<File>,
        /// Bytes written.
        written: u64,
        /// Bytes written at the last sync.
        synced: u64,
    },
}

impl TableOut {
    /// Write what is buffered and sync the file: on the device, whole, once this returns.
    ///
    /// # Errors
    /// The system's.
    pub fn finish(self) -> io::Result<()> {
        match self {
            TableOut::Direct(direct) => direct.finish(),
            TableOut::Buffered { out, .. } => out
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .sync_data(),
        }
    }
}

impl Write for TableOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            TableOut::Direct(direct) => direct.write(data),
            TableOut::Buffered {
                out,
                written,
                synced,
            } => {
                let n = out.write(data)?;
                *written += n as u64;
                if *written - *synced >= SYNC_EVERY {
                    out.flush()?;
                    out.get_ref().sync_data()?;
                    *synced = *written;
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            // Only whole buffers go out before `finish`: direct writes must be aligned.
            TableOut::Direct(_) => Ok(()),
            TableOut::Buffered { out, .. } => out.flush(),
        }
    }
}

/// Writes a file opened with `O_DIRECT` a whole aligned buffer at a time; the last, partial one
/// padded, then the file cut to its length.
#[derive(Debug)]
pub struct DirectWriter {
    file: File,
    /// `DIRECT_BUFFER + ALIGN` bytes, of which the aligned `DIRECT_BUFFER` from `start` are used.
    buffer: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes written to the file.
    flushed: u64,
}

impl DirectWriter {
    fn new(file: File) -> Self {
        let buffer = vec![0; DIRECT_BUFFER + ALIGN];
        let start = buffer.as_ptr().align_offset(ALIGN);
        Self {
            file,
            buffer,
            start,
            filled: 0,
            flushed: 0,
        }
    }

    fn aligned(&mut self) -> &mut [u8] {
        &mut self.buffer[self.start..self.start + DIRECT_BUFFER]
    }

    /// Write the first `len` bytes of the buffer (a multiple of [`ALIGN`]).
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        let start = self.start;
        let mut done = 0;
        while done < len {
            let written = self.file.write(&self.buffer[start + done..start + len])?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += written;
            if done < len && done % ALIGN != 0 {
                // The rest would start unaligned, which a direct write cannot.
                return Err(io::Error::other(format!(
                    "the disk took {done} of {len} bytes of a direct write"
                )));
            }
        }
        self.flushed += len as u64;
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        let length = self.flushed + self.filled as u64;
        let padded = self.filled.next_multiple_of(ALIGN);
        let filled = self.filled;
        self.aligned()[filled..padded].fill(0);
        if padded > 0 {
            self.write_out(padded)?;
        }
        self.file.set_len(length)?;
        self.file.sync_data()
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let filled = self.filled;
        let n = (DIRECT_BUFFER - filled).min(data.len());
        self.aligned()[filled..filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == DIRECT_BUFFER {
            self.write_out(DIRECT_BUFFER)?;
            self.filled = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the sizes written, the file holds exactly the bytes, in order.
    #[test]
    fn a_file_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        for total in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            DIRECT_BUFFER,
            DIRECT_BUFFER + 4097,
            3 * DIRECT_BUFFER + 5,
        ] {
            let path = dir.path().join(format!("{total}"));
            let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
            let mut out = create(&path).unwrap();
            for chunk in data.chunks(12_345) {
                out.write_all(chunk).unwrap();
            }
            out.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{total} bytes");
        }
    }
}
