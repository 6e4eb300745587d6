//! Resident memory of a process, read from `/proc` (Linux; `None` elsewhere).

use serde::{Deserialize, Serialize};

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// RSS of `pid` once it stops changing: allocators hand freed memory back to the system after
/// a short delay, so an immediate reading reports a moment, not the steady state. Polls every
/// 100 ms until two readings are within 1 MiB, for at most 3 s.
pub async fn settled_rss_bytes(pid: u32) -> Option<u64> {
    let mut last = rss_bytes(pid)?;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = rss_bytes(pid)?;
        if now.abs_diff(last) < 1 << 20 {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// Server memory around holding the benchmark table, each figure once RSS settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMemory {
    /// Whether the process measured is the server alone (false: the bench process, which
    /// also holds the client's copy of the table).
    pub server_only: bool,
    /// RSS before the first put.
    pub before_put: u64,
    /// RSS while the table is cached, after all rounds.
    pub holding: u64,
    /// RSS right after the table was dropped.
    pub after_drop: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_readable_and_plausible() {
        let rss = rss_bytes(std::process::id()).expect("/proc is readable");
        assert!(rss > 1 << 20, "{rss}");
    }
}
