//! Resident memory of a process, read from `/proc` (Linux; `None` elsewhere).

use serde::{Deserialize, Serialize};

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The resident memory that is `pid`'s own, in bytes: anonymous and shared memory (the sum of
/// `RssAnon` and `RssShmem`), not the pages of files it maps (its binary's code, tables a data
/// directory serves from disk), which are the page cache's. What a server's budget counts.
pub fn owned_memory_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(':'))
        })?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some(field("RssAnon")? + field("RssShmem").unwrap_or(0))
}

/// RSS of `pid` once it stops changing: an allocator gives freed memory back to the system
/// after a delay (the server's within 2 s), so an immediate reading reports a moment, not the
/// steady state. Polls every 250 ms until the readings of the last 3 s are within 1 MiB of each
/// other, for at most 10 s. The server's freed table memory is kept longer, for reuse: wait
/// until the server reports none (its `freed_bytes`) before calling this.
pub async fn settled_rss_bytes(pid: u32) -> Option<u64> {
    const POLL: std::time::Duration = std::time::Duration::from_millis(250);
    const STEADY_READINGS: usize = 13; // 3 s of polls
    const MAX_POLLS: usize = 40; // 10 s
    let mut recent = std::collections::VecDeque::with_capacity(STEADY_READINGS);
    recent.push_back(rss_bytes(pid)?);
    for _ in 0..MAX_POLLS {
        tokio::time::sleep(POLL).await;
        if recent.len() == STEADY_READINGS {
            recent.pop_front();
        }
        recent.push_back(rss_bytes(pid)?);
        let spread = recent.iter().max()? - recent.iter().min()?;
        if recent.len() == STEADY_READINGS && spread < 1 << 20 {
            break;
        }
    }
    recent.back().copied()
}

/// Server memory around holding the benchmark table, each figure once RSS settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMemory {
    /// Whether the process measured is the server alone (false: the bench process, which
    /// also holds the client's copy of the table).
    pub server_only: bool,
    /// RSS before the first put.
    pub before_put: u64,
    /// RSS while the table is cached, after all rounds, once the server gave back the memory
    /// of the tables the rounds replaced.
    pub holding: u64,
    /// RSS after the table was dropped, once the server gave its memory back.
    pub after_drop: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_readable_and_plausible() {
        let rss = rss_bytes(std::process::id()).expect("/proc is readable");
        assert!(rss > 1 << 20, "{rss}");
        let owned = owned_memory_bytes(std::process::id()).expect("/proc is readable");
        assert!(owned > 0 && owned <= rss, "{owned} of {rss}");
    }
}
