//! Under an address-space limit (`ulimit -v`, `prlimit --as`): the default memory budget fits
//! inside it, and memory the system refuses fails an upload with RESOURCE_EXHAUSTED, never
//! INTERNAL, and the server goes on.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use flightcache::{CacheClient, Error, TableKey};

use super::BIN;

/// `serve --port 0 ARGS` under an address-space limit of `kib` KiB: the process, its URL and
/// its memory budget line.
fn serve_under_address_space_limit(kib: u64, args: &str) -> (Child, String, String) {
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -v {kib} && exec {BIN} serve --port 0 {args}"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut listening, mut budget) = (String::new(), String::new());
    stdout.read_line(&mut listening).unwrap();
    stdout.read_line(&mut budget).unwrap();
    let url = listening
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{listening:?}"))
        .to_string();
    (child, url, budget.trim().to_string())
}

/// A table of 128 MiB.
fn large_table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let values = Int64Array::from_iter_values(0..(16 << 20));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap();
    (schema, vec![batch])
}

/// The default budget is a share of the address space left, and puts past it evict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_budget_fits_inside_an_address_space_limit() {
    let (mut child, url, budget) = serve_under_address_space_limit(3 << 20, "");
    assert!(
        budget.contains("the address-space limit (RLIMIT_AS)"),
        "{budget}"
    );
    let mut client = CacheClient::connect(&url).await.unwrap();
    let (schema, batches) = large_table();
    for n in 0..16 {
        let key = TableKey::try_new(format!("t{n}")).unwrap();
        client
            .put_batches(&key, Arc::clone(&schema), batches.clone())
            .await
            .unwrap_or_else(|err| panic!("put {n}: {err}"));
    }
    let stats = client.stats().await.unwrap();
    assert!(stats.evictions > 0, "{stats:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A budget set above the limit: the put the system refuses memory for is RESOURCE_EXHAUSTED,
/// saying so, and the server keeps serving. (It was INTERNAL: arrow's buffer panicked on the
/// failed allocation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_the_system_refuses_is_resource_exhausted() {
    let (mut child, url, _) = serve_under_address_space_limit(3 << 20, "--max-memory 16GiB");
    let mut client = CacheClient::connect(&url).await.unwrap();
    let (schema, batches) = large_table();
    let mut refused = None;
    for n in 0..24 {
        let key = TableKey::try_new(format!("t{n}")).unwrap();
        match client
            .put_batches(&key, Arc::clone(&schema), batches.clone())
            .await
        {
            Ok(_) => {}
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let refused = refused.expect("3 GiB of address space holds no 24 tables of 128 MiB");
    let Error::Rpc { code, message } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(*code, tonic::Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("the system refused the server"),
        "{message}"
    );
    assert!(client.stats().await.is_ok(), "the server goes on");
    child.kill().unwrap();
    child.wait().unwrap();
}
