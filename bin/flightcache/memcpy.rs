//! Copying memory on AMD CPUs under an older glibc: start again without `rep movsb`.
//!
//! AMD CPUs from Zen 3 on announce fast `rep movsb`, and glibc 2.36 (Debian 12's) copies every
//! block of a few KiB or more with it. On these CPUs `rep movsb` is 7x slower when the
//! destination lies 1 to 31 bytes past the source, counted within a 4 KiB page (glibc bug
//! 30994; 3.3 GB/s instead of 22-27 GB/s on the machine of benches/RESULTS.md). rustls copies
//! every TLS record just so: to 5 bytes past the start of a fresh buffer, which the allocator
//! aligns to a page, from stored table data that is page- or 64-byte-aligned too. It made
//! Flight over TLS about 1.4x slower than it need be, and did nothing for plaintext.
//!
//! Newer glibc never uses `rep movsb` on AMD CPUs below its non-temporal threshold; setting
//! the tunable `glibc.cpu.x86_rep_movsb_threshold` past that threshold does the same for an
//! older one. glibc reads its tunables only as a program starts, so on an AMD CPU
//! [`reexec_without_rep_movsb`] runs this program again, once, with that tunable added to
//! `GLIBC_TUNABLES`. An operator's own `x86_rep_movsb_threshold` is left as it is (set it to
//! glibc's default to opt out).

/// The environment variable glibc reads its tunables from, `name=value` pairs joined by `:`.
pub const TUNABLES: &str = "GLIBC_TUNABLES";

/// The tunable: the smallest copy glibc makes with `rep movsb`.
pub const REP_MOVSB_THRESHOLD: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// A threshold past any non-temporal threshold (a fraction of the L3 cache), so that copies
/// take glibc's vector loops up to the size where it switches to non-temporal stores: no copy
/// uses `rep movsb`, as in newer glibc on AMD CPUs.
const NEVER: u64 = 1 << 40;

/// `tunables` (the value of `GLIBC_TUNABLES`, perhaps empty) with the `rep movsb` threshold
/// set past any copy's size; `None` if it sets that threshold already.
pub fn without_rep_movsb(tunables: &str) -> Option<String> {
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

/// On an AMD CPU, replace this process with a new run of the same program and arguments
/// whose `GLIBC_TUNABLES` turns `rep movsb` off, unless it is turned off or tuned already.
/// Returns (and the program runs on as it is) on any other CPU, or if the program cannot be
/// started again. Call it first thing in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
pub fn reexec_without_rep_movsb() {
    use std::os::unix::process::CommandExt;

    let tunables = std::env::var_os(TUNABLES).unwrap_or_default();
    // Not UTF-8: not ours to rewrite.
    let Some(tunables) = tunables.to_str() else {
        return;
    };
    let Some(tunables) = without_rep_movsb(tunables) else {
        return;
    };
    if !is_amd_cpu() {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    // `exec` returns only if the program could not be started; then carry on as it is.
    let _failed = command.args(args).env(TUNABLES, tunables).exec();
}

/// Log (at debug level) the glibc tunables this process runs with, if any.
pub fn log_tunables() {
    if let Some(tunables) = std::env::var_os(TUNABLES) {
        tracing::debug!(tunables = %tunables.to_string_lossy(), "glibc tunables in force");
    }
}

/// Elsewhere glibc's x86-64 copies are not in play: nothing to do.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")))]
pub fn reexec_without_rep_movsb() {}

/// Whether this machine's CPU is an AMD one, as `/proc/cpuinfo` names its vendor.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
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
            without_rep_movsb("glibc.malloc.arena_max=2:glibc.cpu.x86_rep_movsb_threshold=4096"),
            None
        );
        // A longer name that starts the same is another tunable.
        assert!(without_rep_movsb("glibc.cpu.x86_rep_movsb_threshold_x=1").is_some());
    }
}
