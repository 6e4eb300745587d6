//! A key is replaced atomically: concurrent readers see the whole old table or the whole new
//! one, never a mix. The tables are large enough to live in slabs, so replaced tables' memory
//! is reused by the next puts while readers may still hold them.

use futures::TryStreamExt;

use crate::common::{TestServer, constant_batch, key, numbered_schema};

const BATCHES: usize = 8;
/// 8 batches of this many rows make a 3.4 MiB table: past the heap, into reused slabs.
const ROWS: usize = 32_768;
const WRITES: i64 = 40;
const READERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_mix_of_two_puts() {
    let server = TestServer::start().await;
    let mut writer = server.client().await;
    let table = |v: i64| {
        (0..BATCHES)
            .map(|_| constant_batch(v, ROWS))
            .collect::<Vec<_>>()
    };
    writer
        .put_batches(&key("t"), numbered_schema(), table(0))
        .await
        .unwrap();

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut client = server.client().await;
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let batches: Vec<_> = client
                    .get(&key("t"))
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(batches.len(), BATCHES, "a read saw a partial table");
                let ids = |b: &arrow::array::RecordBatch| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                };
                let first = ids(&batches[0])[0];
                for batch in &batches {
                    assert!(
                        ids(batch).iter().all(|&v| v == first),
                        "a read mixed two puts"
                    );
                }
                reads += 1;
            }
            reads
        }));
    }
    let mut writers = Vec::new();
    for w in 0..2 {
        let mut client = server.client().await;
        writers.push(tokio::spawn(async move {
            for i in 1..=WRITES {
                let v = i * 2 + w;
                client
                    .put_batches(&key("t"), numbered_schema(), table(v))
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    let stats = writer.stats().await.unwrap();
    assert_eq!((stats.tables, stats.puts), (1, 1 + 2 * WRITES as u64));
    server.shutdown_and_wait().await;
}
