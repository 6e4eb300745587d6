//! The data directory (`serve --data-dir`) across restarts of an in-process server: tables,
//! app_metadata and times to live come back exact, replaced and dropped keys stay so, bad files
//! are quarantined and never served, keys cannot escape the directory, one server per
//! directory. Crashes (SIGKILL) and full disks are in `tests/cli/persistence.rs`, with real
//! processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use bytes::Bytes;
use flightcache::{Durability, EmbeddedServer, Error, PutOptions, ServerConfig};
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

use crate::common::types::every_type_batch;
use crate::common::{
    TestServer, key, large_batches, numbered_batches, numbered_schema, quiet, status,
};

const BOTH: [Durability; 2] = [Durability::Always, Durability::Background];

fn on_disk(dir: &Path, durability: Durability) -> ServerConfig {
    ServerConfig {
        data_dir: Some(dir.to_path_buf()),
        durability,
        ..quiet(ServerConfig::default())
    }
}

/// The table files in `dir`'s `tables/`, sorted.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("tables"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

/// The file of the one table whose key is `name`.
fn file_of(dir: &Path, name: &str) -> PathBuf {
    let digest: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(name.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let found: Vec<_> = files(dir, "arrow")
        .into_iter()
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&digest)
        })
        .collect();
    assert_eq!(found.len(), 1, "one file for {name}: {found:?}");
    found.into_iter().next().unwrap()
}

async fn put(server: &TestServer, name: &str, batches: Vec<RecordBatch>) {
    let schema = batches[0].schema();
    server
        .client()
        .await
        .put_batches(&key(name), schema, batches)
        .await
        .unwrap();
}

async fn get(server: &TestServer, name: &str) -> Result<Vec<RecordBatch>, Error> {
    Ok(server.client().await.get_all(&key(name)).await?.1)
}

/// The Flight messages of `batches` under `name`, each carrying `tag-N` as app_metadata.
async fn tagged_messages(name: &str, batches: &[RecordBatch]) -> Vec<FlightData> {
    let owned = batches.to_vec();
    let stream = futures::stream::iter(owned.into_iter().map(Ok));
    // Dictionaries sent as dictionaries (the encoder's default hydrates them to plain arrays).
    let encoded: Vec<FlightData> = FlightDataEncoderBuilder::new()
        .with_dictionary_handling(DictionaryHandling::Resend)
        .with_flight_descriptor(Some(key(name).to_descriptor()))
        .build(stream)
        .try_collect()
        .await
        .unwrap();
    encoded
        .into_iter()
        .enumerate()
        .map(|(i, mut data)| {
            data.app_metadata = Bytes::from(format!("tag-{i}"));
            data
        })
        .collect()
}

#[tokio::test]
async fn every_type_and_its_app_metadata_come_back_exact_after_a_restart() {
    for durability in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let config = on_disk(dir.path(), durability);
        let server = TestServer::start_with(config.clone()).await;
        assert_eq!(server.restored().unwrap().tables, 0);
        let batch = every_type_batch();
        let batches = vec![batch.slice(0, 2), batch.slice(2, batch.num_rows() - 2)];
        let sent = tagged_messages("types", &batches).await;
        let mut flight = server.flight_client().await;
        let echoed: Vec<_> = flight
            .do_put(futures::stream::iter(sent.clone()).map(Ok))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            echoed.len(),
            sent.len(),
            "every tagged message acknowledged"
        );
        // What a get answers before the restart (Arrow's IPC reader, for one, reads a union
        // field back as non-nullable).
        let (schema, served) = server.client().await.get_all(&key("types")).await.unwrap();
        assert_eq!(served.len(), 2);
        server.shutdown_and_wait().await;

        // Any Arrow library reads the file.
        let file = std::fs::File::open(file_of(dir.path(), "types")).unwrap();
        let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
        assert_eq!(reader.schema(), schema);
        let read: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(read, served, "{durability:?}: the file holds the table");

        let server = TestServer::start_with(config).await;
        let restored = server.restored().unwrap();
        assert_eq!(restored.tables, 1, "{durability:?}");
        assert!(restored.bytes > 0);
        let (schema_after, after) = server.client().await.get_all(&key("types")).await.unwrap();
        assert_eq!((schema_after, after), (schema, served), "{durability:?}");
        let mut flight = server.flight_client().await;
        // Every message as sent, dictionaries included (the raw gRPC stream).
        let replayed: Vec<FlightData> = flight
            .inner_mut()
            .do_get(key("types").to_ticket())
            .await
            .unwrap()
            .into_inner()
            .try_collect()
            .await
            .unwrap();
        let tags = |messages: &[FlightData]| -> Vec<Bytes> {
            messages.iter().map(|m| m.app_metadata.clone()).collect()
        };
        assert_eq!(
            tags(&replayed),
            tags(&sent),
            "{durability:?}: app_metadata kept"
        );
        server.shutdown_and_wait().await;
    }
}

#[tokio::test]
async fn replaced_dropped_and_cleared_keys_stay_so_after_a_restart() {
    for durability in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let config = on_disk(dir.path(), durability);
        let server = TestServer::start_with(config.clone()).await;
        put(&server, "a", numbered_batches(1, 5)).await;
        put(&server, "a", numbered_batches(3, 7)).await;
        put(&server, "b", numbered_batches(2, 2)).await;
        put(&server, "gone", numbered_batches(1, 1)).await;
        server
            .client()
            .await
            .drop_table(&key("gone"))
            .await
            .unwrap();
        server.shutdown_and_wait().await;
        assert_eq!(files(dir.path(), "arrow").len(), 2, "one file per key");

        let server = TestServer::start_with(config.clone()).await;
        assert_eq!(server.restored().unwrap().tables, 2);
        assert_eq!(get(&server, "a").await.unwrap(), numbered_batches(3, 7));
        assert_eq!(get(&server, "b").await.unwrap(), numbered_batches(2, 2));
        let err = get(&server, "gone").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{durability:?}: {err}");
        // A restored table is replaced and dropped like any other.
        put(&server, "b", numbered_batches(1, 3)).await;
        server.client().await.drop_table(&key("a")).await.unwrap();
        server.shutdown_and_wait().await;

        let server = TestServer::start_with(config.clone()).await;
        assert_eq!(server.restored().unwrap().tables, 1);
        assert_eq!(get(&server, "b").await.unwrap(), numbered_batches(1, 3));
        assert_eq!(get(&server, "a").await.unwrap_err().code(), Code::NotFound);
        assert_eq!(server.client().await.clear().await.unwrap().tables, 1);
        server.shutdown_and_wait().await;
        assert!(
            files(dir.path(), "arrow").is_empty(),
            "clear removes the files"
        );
        let server = TestServer::start_with(config).await;
        assert_eq!(server.restored().unwrap().tables, 0);
        server.shutdown_and_wait().await;
    }
}

#[tokio::test]
async fn times_to_live_survive_a_restart_and_keys_that_expired_meanwhile_are_removed() {
    for durability in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let config = on_disk(dir.path(), durability);
        let server = TestServer::start_with(config.clone()).await;
        let mut client = server.client().await;
        let ttl = |seconds| PutOptions {
            ttl: Some(Duration::from_secs(seconds)),
            ..PutOptions::default()
        };
        for (name, options) in [
            ("kept", ttl(600)),
            ("shortened", ttl(600)),
            ("later", PutOptions::default()),
        ] {
            let batches = futures::stream::iter(numbered_batches(1, 3)).map(Ok);
            client
                .put_with(&key(name), numbered_schema(), batches, &options)
                .await
                .unwrap();
        }
        client
            .expire(&key("shortened"), Duration::from_secs(30))
            .await
            .unwrap();
        client
            .expire(&key("later"), Duration::from_secs(900))
            .await
            .unwrap();
        client.persist(&key("kept")).await.unwrap();
        server.shutdown_and_wait().await;

        let server = TestServer::start_with(config.clone()).await;
        let mut client = server.client().await;
        assert_eq!(server.restored().unwrap().tables, 3);
        assert_eq!(client.ttl(&key("kept")).await.unwrap().ttl_seconds, None);
        let left = client
            .ttl(&key("shortened"))
            .await
            .unwrap()
            .ttl_seconds
            .unwrap();
        assert!((20.0..=30.0).contains(&left), "{durability:?}: {left}");
        let left = client
            .ttl(&key("later"))
            .await
            .unwrap()
            .ttl_seconds
            .unwrap();
        assert!((890.0..=900.0).contains(&left), "{durability:?}: {left}");
        server.shutdown_and_wait().await;

        // While the server is down, `shortened`'s deadline passes (its .ttl file says when).
        let sidecars = files(dir.path(), "ttl");
        assert_eq!(sidecars.len(), 3, "{sidecars:?}");
        let shortened = file_of(dir.path(), "shortened").with_extension("ttl");
        let text = std::fs::read_to_string(&shortened).unwrap();
        let mut sidecar: serde_json::Value = serde_json::from_str(&text).unwrap();
        sidecar["expiry"]["deadline_unix_ms"] = serde_json::json!(1_000);
        std::fs::write(&shortened, sidecar.to_string()).unwrap();

        let server = TestServer::start_with(config).await;
        let restored = server.restored().unwrap();
        assert_eq!(
            (restored.tables, restored.expired),
            (2, 1),
            "{durability:?}"
        );
        assert_eq!(
            get(&server, "shortened").await.unwrap_err().code(),
            Code::NotFound
        );
        assert!(!shortened.exists(), "its files are removed");
        assert_eq!(files(dir.path(), "arrow").len(), 2);
        server.shutdown_and_wait().await;
    }
}

#[tokio::test]
async fn truncated_corrupt_and_foreign_files_are_quarantined_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = on_disk(dir.path(), Durability::Always);
    let server = TestServer::start_with(config.clone()).await;
    for name in ["truncated", "flipped", "fine", "retold", "superseded"] {
        put(&server, name, numbered_batches(4, 1000)).await;
    }
    server.shutdown_and_wait().await;
    // What the footer tells of the table is checked too: a row count changed in place.
    let retold = file_of(dir.path(), "retold");
    let bytes = std::fs::read(&retold).unwrap();
    let text = br#""rows":4000"#;
    let at = bytes
        .windows(text.len())
        .position(|w| w == text)
        .expect("the row count");
    let mut changed = bytes.clone();
    changed[at + text.len() - 1] = b'1';
    std::fs::write(&retold, changed).unwrap();
    // A newer version of a key that does not read back: the key is not served at all, not as
    // its older version.
    let superseded = file_of(dir.path(), "superseded");
    let name = superseded.file_name().unwrap().to_str().unwrap();
    let (digest, id) = name.trim_end_matches(".arrow").split_once('-').unwrap();
    let newer_id = id.parse::<u64>().unwrap() + 1000;
    let newer = superseded.with_file_name(format!("{digest}-{newer_id:020}.arrow"));
    std::fs::write(&newer, &std::fs::read(&superseded).unwrap()[..100]).unwrap();

    let truncated = file_of(dir.path(), "truncated");
    let length = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    // One bit in the middle of a batch's values: the framing is intact, the data is not.
    let flipped = file_of(dir.path(), "flipped");
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&flipped, bytes).unwrap();
    let tables = dir.path().join("tables");
    std::fs::write(tables.join("notes.txt"), "not a table").unwrap();
    let garbage = format!("{}-{:020}.arrow", "ab".repeat(32), 7);
    std::fs::write(tables.join(&garbage), b"ARROW1\0\0 not really").unwrap();
    // A FIFO with a table's name would block whoever opens it: it is set aside unopened.
    let fifo = format!("{}-{:020}.arrow", "cd".repeat(32), 9);
    let made = std::process::Command::new("mkfifo")
        .arg(tables.join(&fifo))
        .status()
        .unwrap();
    assert!(made.success());

    let server = TestServer::start_with(config).await;
    let restored = server.restored().unwrap();
    assert_eq!(
        (restored.tables, restored.quarantined),
        (2, 6),
        "{restored:?}"
    );
    assert_eq!(
        get(&server, "fine").await.unwrap(),
        numbered_batches(4, 1000)
    );
    for gone in ["truncated", "retold", "superseded"] {
        let code = get(&server, gone).await.unwrap_err().code();
        assert_eq!(code, Code::NotFound, "{gone}");
    }
    assert!(
        !superseded.exists(),
        "the older version is removed, not served"
    );
    // The flipped file reads back, but its checksum is checked before it is served: by this
    // get, or by the check of every restored table that runs in the background.
    let err = get(&server, "flipped").await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DataLoss | Code::NotFound),
        "never served: {err}"
    );
    assert_eq!(
        get(&server, "flipped").await.unwrap_err().code(),
        Code::NotFound
    );
    let mut quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    quarantined.sort();
    assert_eq!(quarantined.len(), 7, "{quarantined:?}");
    for name in ["notes.txt", &garbage, &fifo] {
        assert!(
            quarantined.iter().any(|q| q == name),
            "{name} in {quarantined:?}"
        );
    }
    assert_eq!(server.client().await.stats().await.unwrap().disk_tables, 1);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn keys_that_look_like_paths_stay_inside_the_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let config = on_disk(&dir, Durability::Always);
    let names = [
        "../escape".to_string(),
        "../../../../tmp/escape".to_string(),
        "/etc/passwd".to_string(),
        "a/../../b".to_string(),
        "..".to_string(),
        "nul\0byte".to_string(),
        "back\\slash".to_string(),
        "\u{1F600}/ünïcode".to_string(),
        "k".repeat(4096),
    ];
    let server = TestServer::start_with(config.clone()).await;
    for (i, name) in names.iter().enumerate() {
        put(&server, name, numbered_batches(1, i + 1)).await;
    }
    server.shutdown_and_wait().await;
    let outside: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        ["data"],
        "nothing written beside the data directory"
    );
    assert_eq!(
        files(&dir, "arrow").len(),
        names.len(),
        "no two keys share a file"
    );

    let server = TestServer::start_with(config).await;
    assert_eq!(server.restored().unwrap().tables, names.len() as u64);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            get(&server, name).await.unwrap(),
            numbered_batches(1, i + 1),
            "{name}"
        );
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = on_disk(dir.path(), Durability::Background);
    let first = TestServer::start_with(config.clone()).await;
    let refused = EmbeddedServer::start(config.clone()).await.unwrap_err();
    assert!(matches!(refused, Error::DataDir { .. }), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains(&format!("PID {}", std::process::id())),
        "names the holder: {message}"
    );
    first.shutdown_and_wait().await;
    // Free again once the first has stopped.
    TestServer::start_with(config)
        .await
        .shutdown_and_wait()
        .await;
}

/// Files and directories are the server's user's alone.
#[cfg(unix)]
#[tokio::test]
async fn the_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let server = TestServer::start_with(on_disk(&dir, Durability::Always)).await;
    put(&server, "t", numbered_batches(1, 1)).await;
    server
        .client()
        .await
        .expire(&key("t"), Duration::from_secs(60))
        .await
        .unwrap();
    server.shutdown_and_wait().await;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for sub in ["tables", "tmp", "quarantine"] {
        assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
    }
    for file in files(&dir, "arrow")
        .iter()
        .chain(&files(&dir, "ttl"))
        .chain([&dir.join("LOCK")])
    {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn an_evicted_table_leaves_the_disk_and_restored_tables_hold_no_table_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_memory: Some(48 << 20),
        ..on_disk(dir.path(), Durability::Always)
    };
    let server = TestServer::start_with(config.clone()).await;
    let (schema, batches) = large_batches(20);
    for name in ["first", "second", "third"] {
        server
            .client()
            .await
            .put_batches(&key(name), Arc::clone(&schema), batches.clone())
            .await
            .unwrap();
    }
    let stats = server.client().await.stats().await.unwrap();
    assert_eq!((stats.evictions, stats.disk_tables), (1, 2), "{stats:?}");
    assert_eq!(
        get(&server, "first").await.unwrap_err().code(),
        Code::NotFound
    );
    server.shutdown_and_wait().await;
    assert_eq!(files(dir.path(), "arrow").len(), 2);

    let server = TestServer::start_with(config).await;
    let stats = server.client().await.stats().await.unwrap();
    assert_eq!(stats.tables, 2);
    assert!(
        stats.memory_tables < 1 << 20,
        "served from the page cache, not table memory: {stats:?}"
    );
    // So the budget still takes a new table without evicting them.
    server
        .client()
        .await
        .put_batches(&key("fourth"), Arc::clone(&schema), batches.clone())
        .await
        .unwrap();
    let stats = server.client().await.stats().await.unwrap();
    assert_eq!((stats.tables, stats.evictions), (3, 0), "{stats:?}");
    assert_eq!(get(&server, "second").await.unwrap(), batches);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_always_put_is_on_disk_when_answered_and_a_background_put_by_the_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(on_disk(dir.path(), Durability::Always)).await;
    put(&server, "synced", numbered_batches(2, 10)).await;
    assert_eq!(
        files(dir.path(), "arrow").len(),
        1,
        "in place when the put is answered"
    );
    let stats = server.client().await.stats().await.unwrap();
    assert_eq!((stats.disk_tables, stats.disk_queued), (1, 0));
    assert!(stats.disk_bytes > 0);
    server.shutdown_and_wait().await;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(on_disk(dir.path(), Durability::Background)).await;
    for i in 0..20 {
        put(&server, &format!("k{i}"), numbered_batches(2, 100)).await;
    }
    server.shutdown_and_wait().await;
    assert_eq!(
        files(dir.path(), "arrow").len(),
        20,
        "a clean stop writes every queued file"
    );
}

#[tokio::test]
async fn a_put_refused_midway_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(on_disk(dir.path(), Durability::Always)).await;
    put(&server, "t", numbered_batches(1, 5)).await;
    // A second schema message halfway: refused, and the old table and its file stay.
    let mut messages = tagged_messages("t", &numbered_batches(2, 5)).await;
    let schema_again = messages[0].clone();
    messages.insert(2, schema_again);
    let mut flight = server.flight_client().await;
    let refused = match flight.do_put(futures::stream::iter(messages).map(Ok)).await {
        Ok(results) => results.try_collect::<Vec<_>>().await.err().unwrap(),
        Err(err) => err,
    };
    assert_eq!(status(refused).code(), Code::InvalidArgument);
    assert_eq!(get(&server, "t").await.unwrap(), numbered_batches(1, 5));
    assert_eq!(files(dir.path(), "arrow").len(), 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    server.shutdown_and_wait().await;
}
