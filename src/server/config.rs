//! `ServerConfig`: every knob of a server, each with its documented default. `flightcache
//! serve` maps its flags onto it and nothing else.

use std::time::Duration;

use std::path::PathBuf;

use crate::auth::users::Users;
use crate::server::tls::ServerTls;
use crate::store::Eviction;
use crate::store::disk::Durability;
use crate::transport::http2::Http2Settings;

pub use crate::auth::DEFAULT_TOKEN_TTL;

/// The port `flightcache serve` listens on by default, the one pyarrow's examples use.
pub const DEFAULT_PORT: u16 = 8815;

pub use crate::protocol::DEFAULT_MAX_MESSAGE_BYTES;

/// Largest request message of an RPC other than `do_put` (a ticket, a descriptor, an action)
/// accepted by default: 4 MiB, gRPC's usual default. These are names and small bodies; the
/// limit keeps a client from making the server buffer a large one.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

/// Uploads accepted at once by default; more are refused with ResourceExhausted.
pub const DEFAULT_MAX_CONCURRENT_PUTS: usize = 64;

/// Flight SQL queries run at once by default: one per core. (Queries run on the server's own
/// runtime, beside gets and puts; the limit bounds how many compete with them.)
pub fn default_max_concurrent_queries() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// How long a Flight SQL query may run by default before it is cancelled: 5 minutes.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the memory of dropped or replaced tables is kept for the next uploads by default:
/// 10 s, jemalloc's default decay.
pub const DEFAULT_KEEP_FREED: Duration = Duration::from_secs(10);

/// How long a request may send nothing before it is cancelled by default: 30 s. An upload
/// holds an upload slot and memory while it waits, so a silent client must not keep them.
pub const DEFAULT_REQUEST_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server waits for the calls in flight by default before it closes their
/// connections: 30 s. A client that stops reading a stream must not hold a stop (and the
/// writing of queued table files behind it) for ever.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may have no request in flight before it is closed by default: 5
/// minutes. Clients reconnect by themselves when they next need the server.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections served at once by default; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Requests one HTTP/2 connection may have open at once (its `SETTINGS_MAX_CONCURRENT_STREAMS`;
/// gRPC's own servers say 100). Each holds its headers (at most 16 KiB, hyper's limit) while it
/// runs, a refused one included while it waits out its failure delay: this bounds what a
/// connection holds before its requests are authenticated. tonic would otherwise allow any
/// number.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Uploads one caller (a user; an address on a server without users) may run at once by
/// default: a quarter of [`DEFAULT_MAX_CONCURRENT_PUTS`], so that one caller cannot take every
/// upload slot while others wait.
pub const DEFAULT_MAX_PUTS_PER_CALLER: usize = 16;

/// How long a put that finds no upload slot (its caller's, or the server's) waits for one
/// before it is refused with RESOURCE_EXHAUSTED.
pub const UPLOAD_SLOT_WAIT: Duration = Duration::from_secs(2);

/// The least an upload must move by default, in bytes per second, counted over each window of
/// the idle timeout: 4 KiB/s (120 KiB per 30 s). A client trickling a few bytes at a time
/// is cancelled with DEADLINE_EXCEEDED rather than holding an upload slot for ever, as
/// Apache's `mod_reqtimeout` `MinRate` and nginx's body timeouts do.
pub const DEFAULT_MIN_UPLOAD_RATE: u64 = 4 << 10;

/// Connections the metrics listener (`serve --metrics`) serves at once; more are closed as
/// soon as they are accepted. A scraper needs one: the limit keeps idle connections from
/// taking the process's file descriptors from the Flight port.
pub const MAX_METRICS_CONNECTIONS: usize = 64;

/// Uploads one connection may run at once by default, so that one client cannot take every
/// upload slot ([`DEFAULT_MAX_CONCURRENT_PUTS`]) over one connection.
pub const DEFAULT_MAX_PUTS_PER_CONNECTION: usize = 8;

/// How often the server pings a connection's peer over HTTP/2 by default, to find peers that
/// are gone without closing their connection: every 60 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// How long the server waits for a ping's answer before it closes the connection, by default.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The share of the memory the process may use that the memory budget takes by default:
/// 75%, leaving room for what the budget does not count (HTTP/2 buffers, the index, the
/// allocator's own overhead) and for the rest of the machine.
pub const DEFAULT_MEMORY_SHARE: f64 = 0.75;

/// How often a server that counts its process's memory
/// ([`ServerConfig::count_process_memory`]) measures it.
pub const OVERHEAD_PERIOD: Duration = Duration::from_millis(100);

/// Everything that tunes a server. Every limit has a documented default.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest single Flight message accepted or sent, in bytes
    /// ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Largest request message of an RPC other than `do_put`, in bytes
    /// ([`DEFAULT_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// Uploads accepted at once ([`DEFAULT_MAX_CONCURRENT_PUTS`]).
    pub max_concurrent_puts: usize,
    /// Uploads one connection may run at once ([`DEFAULT_MAX_PUTS_PER_CONNECTION`]).
    pub max_puts_per_connection: usize,
    /// Uploads one caller may run at once: a user's, or an address's on a server without
    /// users ([`DEFAULT_MAX_PUTS_PER_CALLER`]).
    pub max_puts_per_caller: usize,
    /// The least an upload must move, in bytes per second over each window of
    /// `request_idle_timeout` ([`DEFAULT_MIN_UPLOAD_RATE`]); 0: no minimum.
    pub min_upload_rate: u64,
    /// Connections served at once ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// How long a request (an upload above all) may send nothing, or leave its
    /// acknowledgements unread, before it is cancelled ([`DEFAULT_REQUEST_IDLE_TIMEOUT`]).
    pub request_idle_timeout: Duration,
    /// How long a connection may have no request in flight before it is closed
    /// ([`DEFAULT_IDLE_CONNECTION_TIMEOUT`]).
    pub idle_connection_timeout: Duration,
    /// How long a stopping server waits for the calls in flight before it closes their
    /// connections ([`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub shutdown_timeout: Duration,
    /// How often an HTTP/2 ping checks that a connection's peer is alive
    /// ([`DEFAULT_KEEPALIVE_INTERVAL`]); `None`: never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed
    /// ([`DEFAULT_KEEPALIVE_TIMEOUT`]).
    pub keepalive_timeout: Duration,
    /// How long the memory of dropped or replaced tables is kept for the next uploads before
    /// it goes back to the system ([`DEFAULT_KEEP_FREED`]; zero gives it back at once).
    /// Filling fresh memory is most of what a large put costs.
    pub keep_freed: Duration,
    /// The memory budget, in bytes, for everything held for tables (see
    /// the store's `budget` module); `None` (the default): no limit. `flightcache serve` and
    /// `flightcache bench` set [`DEFAULT_MEMORY_SHARE`] of the memory the process may use
    /// ([`default_max_memory`]); a program embedding a server chooses its own (the default
    /// reads nothing from the system).
    pub max_memory: Option<u64>,
    /// What an upload that does not fit in the budget does ([`Eviction::Lru`] by default:
    /// evict the least recently used tables).
    pub eviction: Eviction,
    /// Count the process's resident memory that no charge covers (the server itself, HTTP/2
    /// buffers, the allocator's free memory) against the budget too, read from
    /// `/proc/self/status` every [`OVERHEAD_PERIOD`], so that the budget bounds the whole
    /// process. Right for a process that is only a server (`flightcache serve` sets it);
    /// wrong for one that embeds a server beside memory of its own, which would count. False
    /// by default.
    pub count_process_memory: bool,
    /// Makes the process's allocator give its free memory back to the system (`serve`:
    /// mimalloc's collect). With [`count_process_memory`](Self::count_process_memory), the
    /// budget calls it before it evicts a table, so that free allocator memory does not cost
    /// tables. `None` by default.
    pub release_free_memory: Option<fn()>,
    /// The users who may connect, and their rights (`serve --users`); `None`: no users, every
    /// caller has every right (keep such a server on loopback).
    pub users: Option<Users>,
    /// The file `users` was read from, read again on SIGHUP (Unix).
    pub users_file: Option<PathBuf>,
    /// How long a session token from the Handshake is valid ([`DEFAULT_TOKEN_TTL`]).
    pub token_ttl: Duration,
    /// TLS, and mutual TLS (`serve --tls-cert --tls-key --tls-client-ca`); `None`: plaintext.
    pub tls: Option<ServerTls>,
    /// HTTP/2 frame and window sizes.
    pub http2: Http2Settings,
    /// The location every `FlightEndpoint` names, for clients that connect to it to redeem
    /// the ticket (`grpc+tcp://HOST:PORT`). `None` (the default): the bound address, or
    /// `arrow-flight-reuse-connection://?` for a wildcard bind such as 0.0.0.0 (see
    /// [`crate::protocol::location`]).
    pub advertise: Option<String>,
    /// Whether an admin may move forward the clock that keys' and sessions' times to live run
    /// on (the `advance-clock` action, `serve --test-clock`), so that tests see them run out
    /// without waiting. For test servers only; false by default.
    pub test_clock: bool,
    /// Where every table is also kept, as an Arrow IPC file, so that a restart loses nothing
    /// acknowledged (`serve --data-dir`); `None` (the default): in memory only.
    pub data_dir: Option<PathBuf>,
    /// When a put is acknowledged against when its file is on disk (`serve --durability`).
    pub durability: Durability,
    /// Flight SQL queries run at once; more are refused with RESOURCE_EXHAUSTED
    /// ([`default_max_concurrent_queries`]).
    pub max_concurrent_queries: usize,
    /// How long a Flight SQL query may run, from its `DoGet`, before it ends with
    /// DEADLINE_EXCEEDED ([`DEFAULT_QUERY_TIMEOUT`]).
    pub query_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_concurrent_puts: DEFAULT_MAX_CONCURRENT_PUTS,
            max_puts_per_connection: DEFAULT_MAX_PUTS_PER_CONNECTION,
            max_puts_per_caller: DEFAULT_MAX_PUTS_PER_CALLER,
            min_upload_rate: DEFAULT_MIN_UPLOAD_RATE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_idle_timeout: DEFAULT_REQUEST_IDLE_TIMEOUT,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keep_freed: DEFAULT_KEEP_FREED,
            max_memory: None,
            eviction: Eviction::default(),
            count_process_memory: false,
            release_free_memory: None,
            users: None,
            users_file: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            tls: None,
            http2: Http2Settings::default(),
            advertise: None,
            test_clock: false,
            data_dir: None,
            durability: Durability::default(),
            max_concurrent_queries: default_max_concurrent_queries(),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

/// The memory the process may use, and where that figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The budget this gives: [`DEFAULT_MEMORY_SHARE`] of `available`.
    pub budget: u64,
    /// The memory the process may use, in bytes.
    pub available: u64,
    /// Where `available` was read.
    pub source: MemoryLimitSource,
}

/// Where [`MemoryLimit::available`] was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimitSource {
    /// The process's cgroup v2 `memory.max`.
    CgroupV2,
    /// The process's cgroup v1 `memory.limit_in_bytes`.
    CgroupV1,
    /// The machine's total memory (`MemTotal` in /proc/meminfo).
    TotalMemory,
    /// The process's address-space limit (`RLIMIT_AS`: `ulimit -v`, `prlimit --as`), less
    /// the address space it already used when it started.
    AddressSpace,
}

impl std::fmt::Display for MemoryLimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemoryLimitSource::CgroupV2 => "the cgroup's memory.max",
            MemoryLimitSource::CgroupV1 => "the cgroup's memory.limit_in_bytes",
            MemoryLimitSource::TotalMemory => "the total memory",
            MemoryLimitSource::AddressSpace => {
                "the address-space limit (RLIMIT_AS) less what the process already maps"
            }
        })
    }
}

/// The default memory budget: [`DEFAULT_MEMORY_SHARE`] of the memory the process may use,
/// read from its cgroup's limit when one is set (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), else from the total memory; `None` where neither can be read
/// (not Linux).
pub fn default_max_memory() -> Option<MemoryLimit> {
    let total = read_total_memory();
    let (mut available, mut source) = match read_cgroup_limit() {
        // A cgroup limit above the machine's memory is no limit.
        Some((limit, source)) if total.is_none_or(|total| limit < total) => (limit, source),
        _ => (total?, MemoryLimitSource::TotalMemory),
    };
    // Under an address-space limit, memory past it is refused however much the machine has.
    if let Some(address_space) = read_address_space_left()
        && address_space < available
    {
        (available, source) = (address_space, MemoryLimitSource::AddressSpace);
    }
    Some(MemoryLimit {
        budget: (available as f64 * DEFAULT_MEMORY_SHARE) as u64,
        available,
        source,
    })
}

/// The address space this process may still map under its `RLIMIT_AS`, if one is set: the
/// limit less the address space it maps now (`VmSize` in /proc/self/status).
fn read_address_space_left() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit};
        let (soft, _) = getrlimit(Resource::RLIMIT_AS).ok()?;
        if soft == nix::sys::resource::RLIM_INFINITY {
            return None;
        }
        let mapped = crate::store::budget::own_status_bytes("VmSize").unwrap_or(0);
        Some(soft.saturating_sub(mapped as u64))
    }
    #[cfg(not(unix))]
    None
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn read_total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup, if one is set.
fn read_cgroup_limit() -> Option<(u64, MemoryLimitSource)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_from(&cgroups, |path| std::fs::read_to_string(path).ok())
}

/// The memory limit that the cgroup membership `cgroups` (the text of /proc/self/cgroup)
/// gives, reading control files with `read`.
fn cgroup_limit_from(
    cgroups: &str,
    read: impl Fn(&str) -> Option<String>,
) -> Option<(u64, MemoryLimitSource)> {
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            // cgroup v2: one unified hierarchy.
            let text = read(&format!("/sys/fs/cgroup{path}/memory.max"))?;
            return match text.trim() {
                "max" => None,
                limit => Some((limit.parse().ok()?, MemoryLimitSource::CgroupV2)),
            };
        }
        if controllers.split(',').any(|c| c == "memory") {
            let text = read(&format!(
                "/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
            ))?;
            // v1 reports "no limit" as a huge number (a page-rounded i64::MAX).
            let limit: u64 = text.trim().parse().ok()?;
            return (limit < 1 << 60).then_some((limit, MemoryLimitSource::CgroupV1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(files: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        move |path| {
            files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, t)| t.clone())
        }
    }

    #[test]
    fn cgroup_limits_are_read_from_v2_and_v1() {
        let v2 = files(&[("/sys/fs/cgroup/app/memory.max", "4294967296\n")]);
        assert_eq!(
            cgroup_limit_from("0::/app\n", &v2),
            Some((4 << 30, MemoryLimitSource::CgroupV2))
        );
        let unlimited = files(&[("/sys/fs/cgroup/memory.max", "max\n")]);
        assert_eq!(cgroup_limit_from("0::/\n", &unlimited), None);

        let v1 = files(&[(
            "/sys/fs/cgroup/memory/box/memory.limit_in_bytes",
            "2147483648\n",
        )]);
        let membership = "12:cpu,cpuacct:/box\n4:memory:/box\n";
        assert_eq!(
            cgroup_limit_from(membership, &v1),
            Some((2 << 30, MemoryLimitSource::CgroupV1))
        );
        let v1_unlimited = files(&[(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        assert_eq!(cgroup_limit_from("4:memory:/\n", &v1_unlimited), None);
    }

    #[test]
    fn the_default_budget_is_a_share_of_what_the_process_may_use() {
        let limit = default_max_memory().expect("Linux has /proc/meminfo");
        assert!(limit.available > 0);
        assert_eq!(
            limit.budget,
            (limit.available as f64 * DEFAULT_MEMORY_SHARE) as u64
        );
    }
}
