//! Copying memory on AMD CPUs under an older glibc: start again without `rep movsb`.
//!
//! AMD CPUs from Zen 3 on announce fast `rep movsb`, and glibc 2.36 (Debian 12's) copies every
//! block of a few KiB or more with it. On these CPUs `rep movsb` is 7x slower when the
//! destination lies 1 to 31 bytes past the source, counted within a 4 KiB page (glibc bug
//! 30994; 3.4 GB/s instead of 22 GB/s on the machine of benches/RESULTS.md). rustls copies
//! every TLS record just so: to 5 bytes past the start of a fresh buffer, which the allocator
//! aligns to a page, from stored table data that is page- or 64-byte-aligned too. It made
//! Flight over TLS 1.2-1.5x slower than it need be.
//!
//! Newer glibc never uses `rep movsb` on AMD CPUs below its non-temporal threshold; setting
//! the tunable `glibc.cpu.x86_rep_movsb_threshold` past that threshold does the same for an
//! older one. glibc reads its tunables only as a program starts, so on an AMD CPU
//! [`restart_without_rep_movsb`] runs this program again, once, with that tunable added to
//! `GLIBC_TUNABLES`. An operator's own `x86_rep_movsb_threshold` is left as it is: setting one
//! (any value) opts out. Only the `flightcache` binary does this; a program that embeds the
//! library chooses for itself.

/// Set (to `1`) in the environment of the run [`restart_without_rep_movsb`] starts, which
/// never starts another: glibc drops tunables in secure mode (a setuid binary, or one with
/// file capabilities), so the tunable alone cannot tell a restarted run.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")),
    allow(dead_code)
)]
pub const RESTARTED: &str = "FLIGHTCACHE_RESTARTED_WITHOUT_REP_MOVSB";

/// What [`restart_without_rep_movsb`] did, for the log once logging is up.
#[derive(Debug)]
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")),
    allow(dead_code)
)]
pub enum Restart {
    /// Nothing to do here: another CPU, another C library, or already done or tuned.
    NotNeeded,
    /// This run is the one started again (or a child of it, which inherits its environment).
    Restarted,
    /// Starting again failed (the error); this run goes on with glibc's own copies.
    Failed(std::io::Error),
}

impl Restart {
    /// Log what was done: a warning if the restart failed, a debug line otherwise.
    pub fn log(&self) {
        match self {
            Restart::NotNeeded => {}
            Restart::Restarted => tracing::debug!(
                tunables = %std::env::var("GLIBC_TUNABLES").unwrap_or_default(),
                "started again with glibc's rep movsb turned off (AMD CPU)"
            ),
            Restart::Failed(err) => tracing::warn!(
                error = %err,
                "could not start again with glibc's rep movsb turned off; TLS will be slower"
            ),
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
pub use linux_glibc::restart_without_rep_movsb;

/// Elsewhere glibc's x86-64 copies are not in play: nothing to do.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")))]
pub fn restart_without_rep_movsb() -> Restart {
    Restart::NotNeeded
}

#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
mod linux_glibc {
    use std::os::unix::process::CommandExt;

    use super::{RESTARTED, Restart};

    /// The environment variable glibc reads its tunables from, `name=value` pairs joined by
    /// `:`.
    const TUNABLES: &str = "GLIBC_TUNABLES";

    /// The tunable: the smallest copy glibc makes with `rep movsb`.
    const REP_MOVSB_THRESHOLD: &str = "glibc.cpu.x86_rep_movsb_threshold";

    /// A threshold past any non-temporal threshold (a fraction of the L3 cache), so that copies
    /// take glibc's vector loops up to the size where it switches to non-temporal stores: no
    /// copy uses `rep movsb`, as in newer glibc on AMD CPUs.
    const NEVER: u64 = 1 << 40;

    /// On an AMD CPU, replace this process with a new run of the same program and arguments
    /// whose `GLIBC_TUNABLES` turns `rep movsb` off, unless it is turned off or tuned already,
    /// or this run is the restarted one. Returns on any other CPU, or if the program cannot be
    /// started again. Call it first thing in `main`, before any thread starts.
    pub fn restart_without_rep_movsb() -> Restart {
        if std::env::var_os(RESTARTED).is_some() {
            return Restart::Restarted;
        }
        let tunables = std::env::var_os(TUNABLES).unwrap_or_default();
        // Not UTF-8: not ours to rewrite.
        let Some(tunables) = tunables.to_str() else {
            return Restart::NotNeeded;
        };
        let Some(tunables) = without_rep_movsb(tunables) else {
            return Restart::NotNeeded;
        };
        if !is_amd_cpu() {
            return Restart::NotNeeded;
        }
        let mut args = std::env::args_os();
        // /proc/self/exe, not a path: it reaches this program even if its file was replaced.
        let mut command = std::process::Command::new("/proc/self/exe");
        if let Some(name) = args.next() {
            command.arg0(name);
        }
        // `exec` returns only if the program could not be started.
        Restart::Failed(
            command
                .args(args)
                .env(TUNABLES, tunables)
                .env(RESTARTED, "1")
                .exec(),
        )
    }

    /// `tunables` (the value of `GLIBC_TUNABLES`, perhaps empty) with the `rep movsb`
    /// threshold set past any copy's size; `None` if it sets that threshold already.
    fn without_rep_movsb(tunables: &str) -> Option<String> {
        let sets_threshold = tunables
            .split(':')
            .any(|pair| pair.split('=').next() == Some(REP_MOVSB_THRESHOLD));
        if sets_threshold {
            return None;
        }
        let setting = format!("{REP_MOVSB_THRESHOLD}={NEVER}");
        Some(match tunables {
            "" => setting,
            others => format!("{others}:{setting}"),
        })
    }

    /// Whether this machine's CPU is an AMD one, as `/proc/cpuinfo` names its vendor.
    fn is_amd_cpu() -> bool {
        use std::io::BufRead;
        let Ok(cpuinfo) = std::fs::File::open("/proc/cpuinfo") else {
            return false;
        };
        std::io::BufReader::new(cpuinfo)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("vendor_id"))
            .is_some_and(|line| line.ends_with("AuthenticAMD"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_threshold_is_added_to_no_tunables_or_after_others() {
            let setting = format!("{REP_MOVSB_THRESHOLD}={NEVER}");
            assert_eq!(without_rep_movsb("").as_deref(), Some(setting.as_str()));
            assert_eq!(
                without_rep_movsb("glibc.malloc.arena_max=2"),
                Some(format!("glibc.malloc.arena_max=2:{setting}"))
            );
        }

        #[test]
        fn an_existing_threshold_is_left_alone() {
            assert_eq!(
                without_rep_movsb(
                    "glibc.malloc.arena_max=2:glibc.cpu.x86_rep_movsb_threshold=4096"
                ),
                None
            );
            // A longer name that starts the same is another tunable.
            assert!(without_rep_movsb("glibc.cpu.x86_rep_movsb_threshold_x=1").is_some());
        }
    }
}
