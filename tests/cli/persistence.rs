//! The data directory (`serve --data-dir`) with real `flightcache serve` processes: a crash
//! loop under SIGKILL in both durability modes, a clean stop, a second server on the same
//! directory, a full disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use flightcache::{CacheClient, PutOptions, TableKey};
use rand::{Rng, SeedableRng};

use super::{BIN, ServeProcess};

/// `flightcache serve` on `dir` with `--durability durability`.
fn serve_on(dir: &Path, durability: &str) -> ServeProcess {
    let mut server = ServeProcess::start_with(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--durability",
        durability,
    ]);
    let budget = server.next_line();
    assert!(budget.starts_with("memory budget"), "{budget}");
    let restored = server.next_line();
    assert!(
        restored.starts_with(&format!("data directory {}", dir.display())),
        "{restored}"
    );
    server
}

/// The table of `key`'s version `version`: 1-3 batches, up to 4 MiB, every value derived from
/// the two, so that a table read back names its version and can be checked exactly.
fn version_table(key: &str, version: u64) -> Vec<RecordBatch> {
    let batches = 1 + (version % 3) as usize;
    let rows = [100, 20_000, 160_000][(version / 3 % 3) as usize];
    (0..batches)
        .map(|b| {
            let v: ArrayRef = Arc::new(Int64Array::from(vec![version as i64; rows]));
            let i: ArrayRef = Arc::new(Int64Array::from_iter_values(
                (0..rows as i64).map(|i| i * 7 + b as i64),
            ));
            let k: ArrayRef = Arc::new(StringArray::from(vec![key; rows]));
            RecordBatch::try_from_iter([("v", v), ("i", i), ("key", k)]).unwrap()
        })
        .collect()
}

/// What a key holds, as the test knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Version(u64),
}

/// One key's history in the current run of the server.
#[derive(Debug, Clone)]
struct History {
    /// The state the last acknowledged operation left.
    acked: State,
    /// The state an operation the crash interrupted would have left.
    in_flight: Option<State>,
    /// Every state acknowledged (or in flight) since the last acknowledged drop, and the state
    /// at the start of the run: what `background` may come back with.
    since_removal: Vec<State>,
}

/// Puts, replaces, drops and short expiries of the keys `keys`, one at a time, until the
/// server goes away; each acknowledgement recorded in `histories`.
async fn churn(
    url: String,
    keys: Vec<String>,
    histories: Arc<Mutex<HashMap<String, History>>>,
    mut rng: rand::rngs::StdRng,
    next_version: Arc<std::sync::atomic::AtomicU64>,
) {
    let Ok(mut client) = CacheClient::connect(&url).await else {
        return;
    };
    loop {
        let name = &keys[rng.random_range(0..keys.len())];
        let key = TableKey::try_new(name.as_str()).unwrap();
        let roll = rng.random_range(0..10);
        // What the operation leaves, and whether it is a drop (a removal no crash undoes).
        let (after, dropped, result) = if roll < 7 {
            let version = next_version.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let table = version_table(name, version);
            let schema = table[0].schema();
            mark_in_flight(&histories, name, State::Version(version));
            let stream = futures::stream::iter(table.into_iter().map(Ok));
            let done = client
                .put_with(&key, schema, stream, &PutOptions::default())
                .await
                .map(|_| ());
            (State::Version(version), false, done)
        } else if roll < 9 {
            mark_in_flight(&histories, name, State::Absent);
            let done = match client.drop_table(&key).await {
                Err(err) if err.code() == tonic::Code::NotFound => Ok(()),
                other => other.map(|_| ()),
            };
            (State::Absent, true, done)
        } else {
            // Expires 50 ms from now: long gone by the time the server is back.
            mark_in_flight(&histories, name, State::Absent);
            let done = match client.expire(&key, Duration::from_millis(50)).await {
                Err(err) if err.code() == tonic::Code::NotFound => Ok(()),
                other => other.map(|_| ()),
            };
            (State::Absent, false, done)
        };
        if result.is_err() {
            return; // the server was killed: this operation stays in flight
        }
        let mut histories = histories.lock().unwrap();
        let history = histories.get_mut(name).unwrap();
        history.acked = after;
        history.in_flight = None;
        // Under `background` an expiry's new deadline is written behind its answer, like a
        // put's file: a crash within its 50 ms may bring the key back as it was.
        if dropped {
            history.since_removal = vec![State::Absent];
        } else if !history.since_removal.contains(&after) {
            history.since_removal.push(after);
        }
    }
}

fn mark_in_flight(histories: &Mutex<HashMap<String, History>>, name: &str, state: State) {
    let mut histories = histories.lock().unwrap();
    let history = histories.get_mut(name).unwrap();
    history.in_flight = Some(state);
    if let State::Version(_) = state {
        history.since_removal.push(state);
    }
}

/// What the restarted server serves under `name`: absent, or a version read back whole and
/// exact (a torn or mixed table fails here).
async fn served(client: &mut CacheClient, name: &str) -> State {
    let key = TableKey::try_new(name).unwrap();
    match client.get_all(&key).await {
        Err(err) if err.code() == tonic::Code::NotFound => State::Absent,
        Err(err) => panic!("{name}: {err}"),
        Ok((_, batches)) => {
            let first = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let version = first.value(0) as u64;
            // Compared whole: the store may keep a large batch as several smaller ones.
            let want = version_table(name, version);
            let whole = |batches: &[RecordBatch]| {
                arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
            };
            assert_eq!(whole(&batches), whole(&want), "{name} v{version} is exact");
            State::Version(version)
        }
    }
}

/// Kill the server at random moments while three clients change six keys, restart it, and
/// check what came back, `rounds` times.
async fn crash_loop(durability: &str, rounds: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("crash/{i}")).collect();
    let histories = Arc::new(Mutex::new(
        names
            .iter()
            .map(|name| {
                let history = History {
                    acked: State::Absent,
                    in_flight: None,
                    since_removal: vec![State::Absent],
                };
                (name.clone(), history)
            })
            .collect::<HashMap<_, _>>(),
    ));
    let next_version = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut checked = 0;
    for round in 0..=rounds {
        let mut server = serve_on(dir.path(), durability);
        let mut client = CacheClient::connect(&server.url).await.unwrap();
        for name in &names {
            let came_back = served(&mut client, name).await;
            let mut histories = histories.lock().unwrap();
            let history = histories.get_mut(name).unwrap();
            let allowed: Vec<State> = match durability {
                // Every acknowledged operation, or the one the crash interrupted.
                "always" => std::iter::once(history.acked)
                    .chain(history.in_flight)
                    .collect(),
                // A version since the last acknowledged removal (a newer put's file may still
                // have been queued), never one from before it; or what the operation the
                // crash interrupted left.
                _ => history
                    .since_removal
                    .iter()
                    .copied()
                    .chain(history.in_flight)
                    .collect(),
            };
            assert!(
                allowed.contains(&came_back),
                "seed {seed}, round {round}, --durability {durability}: {name} came back as \
                 {came_back:?}, allowed {allowed:?} ({history:?})"
            );
            *history = History {
                acked: came_back,
                in_flight: None,
                since_removal: vec![came_back],
            };
            checked += 1;
        }
        if round == rounds {
            server.stop();
            break;
        }
        let clients: Vec<_> = (0..3)
            .map(|c| {
                let keys = names[c * 2..c * 2 + 2].to_vec();
                let rng = rand::rngs::StdRng::seed_from_u64(rng.random());
                tokio::spawn(churn(
                    server.url.clone(),
                    keys,
                    Arc::clone(&histories),
                    rng,
                    Arc::clone(&next_version),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for client in clients {
            // Every call fails once the server is gone. Bounded, so that a call that never
            // ends fails the test instead of hanging it (seen once, in a full run under load,
            // with no socket left open: not reproduced since).
            tokio::time::timeout(Duration::from_secs(60), client)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "seed {seed}, round {round}: a client's call did not end in 60 s after \
                         the server was killed"
                    )
                })
                .unwrap();
        }
    }
    assert_eq!(checked, names.len() * (rounds + 1));
    // Nothing torn is left behind either: every file in tables/ reads back.
    let tables = std::fs::read_dir(dir.path().join("tables"))
        .unwrap()
        .count();
    assert!(
        tables <= 2 * names.len(),
        "{tables} files for {} keys",
        names.len()
    );
}

/// `--durability always`: after each of 16 SIGKILLs, every acknowledged put, replace, drop and
/// expiry is there (or the operation the kill interrupted), exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_loses_nothing_acknowledged_across_sigkills() {
    crash_loop("always", 16, 0x5EED_0001).await;
}

/// `--durability background`: after each of 16 SIGKILLs, no table is torn, and no key dropped
/// or expired before the kill comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_never_tears_a_table_or_brings_back_a_dropped_key_across_sigkills() {
    crash_loop("background", 16, 0x5EED_0002).await;
}

/// Put `version_table(name, version)` under `name`.
async fn put_version(client: &mut CacheClient, name: &str, version: u64) {
    let table = version_table(name, version);
    let key = TableKey::try_new(name).unwrap();
    client
        .put_batches(&key, table[0].schema(), table)
        .await
        .unwrap();
}

/// A clean stop (SIGTERM) writes every queued file first: nothing is lost in `background`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_loses_nothing_in_background() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_on(dir.path(), "background");
    let mut client = CacheClient::connect(&server.url).await.unwrap();
    for v in 0..12 {
        put_version(&mut client, &format!("k{}", v % 8), v).await;
    }
    server.stop();
    let server = serve_on(dir.path(), "background");
    let mut client = CacheClient::connect(&server.url).await.unwrap();
    for v in 4..12 {
        let name = format!("k{}", v % 8);
        assert_eq!(
            served(&mut client, &name).await,
            State::Version(v),
            "{name}"
        );
    }
    drop(client);
    server.stop();
}

/// The startup line says what came back; a second server on the same directory refuses to
/// start, naming the first's PID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_names_the_first_and_the_startup_line_counts_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_on(dir.path(), "always");
    let mut client = CacheClient::connect(&server.url).await.unwrap();
    for v in 0..3 {
        put_version(&mut client, &format!("t{v}"), 3).await;
    }
    let second = std::process::Command::new(BIN)
        .args([
            "serve",
            "--port",
            "0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("PID {}", server.child.id())),
        "names the first server: {stderr}"
    );
    server.stop();

    let mut server = ServeProcess::start_with(&["--data-dir", dir.path().to_str().unwrap()]);
    server.next_line();
    let line = server.next_line();
    assert!(
        line.contains("(--durability background): 3 tables, ") && line.ends_with(" back from disk"),
        "{line}"
    );
    server.stop();
}

/// A disk with no room: `always` refuses the put (RESOURCE_EXHAUSTED) and keeps the old table;
/// `background` keeps the new table in memory only and counts the failure. The server runs on.
/// The data directory is a 3 MiB tmpfs in a user and mount namespace of its own (`unshare`),
/// which needs no privilege the test command lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_always_puts_and_leaves_background_tables_in_memory() {
    for durability in ["always", "background"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let script = format!(
            "mount -t tmpfs -o size=3m tmpfs {data} && exec {BIN} serve --port 0 \
             --data-dir {data} --durability {durability}"
        );
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare runs (util-linux)");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{durability}: serve did not start: {line:?}"))
            .to_string();
        let mut client = CacheClient::connect(&url).await.unwrap();
        let key = TableKey::try_new("big").unwrap();
        let small = version_table("big", 0); // 100 rows
        client
            .put_batches(&key, small[0].schema(), small.clone())
            .await
            .unwrap();
        let large = version_table("big", 5); // 3 x 20,000 rows: 1.4 MiB
        let huge: Vec<RecordBatch> = (0..3).flat_map(|_| large.clone()).collect(); // 4.1 MiB
        let result = client
            .put_batches(&key, huge[0].schema(), huge.clone())
            .await;
        match durability {
            "always" => {
                let err = result.unwrap_err();
                assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
                assert!(err.to_string().contains("disk"), "{err}");
                assert_eq!(
                    client.get_all(&key).await.unwrap().1,
                    small,
                    "the old table stays"
                );
            }
            _ => {
                result.unwrap();
                let got = client.get_all(&key).await.unwrap().1;
                let rows: usize = got.iter().map(RecordBatch::num_rows).sum();
                assert_eq!(rows, 9 * 20_000, "served from memory");
            }
        }
        // The failure is counted once the writer got to it (at once under `always`).
        let mut failures = 0;
        for _ in 0..200 {
            failures = client.stats().await.unwrap().disk_write_failures;
            if failures > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(failures, 1, "{durability}");
        // Still serving, and a table that fits is still written.
        let other = TableKey::try_new("small").unwrap();
        client
            .put_batches(&other, small[0].schema(), small.clone())
            .await
            .unwrap();
        assert_eq!(client.get_all(&other).await.unwrap().1, small);
        child.kill().ok();
        child.wait().ok();
    }
}

/// Tables served from disk after a restart are the page cache's, not the budget's: reading all
/// of them (which maps every page in) leaves room for new puts, and evicts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_back_from_disk_leave_the_memory_budget_to_new_puts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = ServeProcess::start_with(&["--data-dir", data, "--max-memory", "0"]);
    let mut client = CacheClient::connect(&server.url).await.unwrap();
    // 4 keys of about 10 MiB.
    let names: Vec<String> = (0..4).map(|i| format!("cold/{i}")).collect();
    for name in &names {
        put_version(&mut client, name, 8).await; // 3 batches of 160,000 rows
    }
    server.stop();

    let server = ServeProcess::start_with(&["--data-dir", data, "--max-memory", "24MiB"]);
    let mut client = CacheClient::connect(&server.url).await.unwrap();
    for name in &names {
        assert_eq!(served(&mut client, name).await, State::Version(8));
    }
    // Past the server's next measurement of its own memory (every 100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = TableKey::try_new("new").unwrap();
    let table = version_table("new", 5); // 3 batches of 20,000 rows: 1.4 MiB
    client
        .put_batches(&key, table[0].schema(), table.clone())
        .await
        .unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(
        (stats.tables, stats.evictions, stats.rejected_uploads),
        (5, 0, 0),
        "{stats:?}"
    );
    server.stop();
}

/// Under `background`, a put whose file cannot be written takes the key's older file with it:
/// after a restart the key is absent, never back at the version the put replaced. Both servers
/// run on one 3 MiB tmpfs, in a user and mount namespace of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_cannot_be_written_leaves_no_older_version_to_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let serve = format!("{BIN} serve --port 0 --data-dir {data}");
    let script = format!(
        "mount -t tmpfs -o size=3m tmpfs {data} && {{ {serve} & echo \"pid $!\"; wait; }} && exec {serve}"
    );
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare runs (util-linux)");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let next_url = |stdout: &mut std::io::BufReader<std::process::ChildStdout>| loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(stdout, &mut line).unwrap() > 0,
            "serve ended"
        );
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            return url.to_string();
        }
    };
    let mut pid_line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut pid_line).unwrap();
    let first = pid_line.trim().strip_prefix("pid ").unwrap().to_string();
    let url = next_url(&mut stdout);
    let mut client = CacheClient::connect(&url).await.unwrap();
    let key = TableKey::try_new("k").unwrap();
    let small = version_table("k", 0);
    client
        .put_batches(&key, small[0].schema(), small.clone())
        .await
        .unwrap();
    let large = version_table("k", 5);
    let huge: Vec<RecordBatch> = (0..3).flat_map(|_| large.clone()).collect(); // 4.1 MiB
    client
        .put_batches(&key, huge[0].schema(), huge)
        .await
        .unwrap();
    // SIGTERM: the clean stop waits for the writer, whose write fails on the full disk.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &first])
        .status()
        .unwrap();
    assert!(stopped.success());

    let url = next_url(&mut stdout);
    let mut client = CacheClient::connect(&url).await.unwrap();
    assert_eq!(
        served(&mut client, "k").await,
        State::Absent,
        "not the replaced version"
    );
    child.kill().ok();
    child.wait().ok();
}
