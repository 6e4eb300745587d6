//! Resident memory of a process, read from `/proc` (Linux; `None` elsewhere).

use serde::{Deserialize, Serialize};

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Server memory around holding the benchmark table.
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
