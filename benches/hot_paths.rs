//! Criterion benches of the hot paths: upload validation, client encoding, and put/get over
//! real loopback gRPC. Figures go to benches/RESULTS.md with the command that produced them.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flightcache::bench::data::{arrow_bytes, random_table};
use flightcache::internals::{
    MessageReader, Segment, SlabPool, SlabWriter, TableUpload, UploadAccount,
};
use flightcache::protocol::encode::{FlightEncoder, TARGET_MESSAGE_BYTES};
use flightcache::{CacheClient, EmbeddedServer, ServerConfig, TableKey};
use futures::TryStreamExt;
use http_body::Frame;
use http_body_util::StreamBody;

/// The allocator `flightcache serve` runs with, so that allocation costs match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Size of the table every bench moves.
const TABLE_BYTES: u64 = 16 << 20;

fn table() -> (arrow::datatypes::SchemaRef, Vec<RecordBatch>) {
    random_table(TABLE_BYTES, 64, 7)
}

/// 16 MiB of decimal128 and time64 columns, in 1 MiB batches: the types whose values the
/// validator checks one by one.
fn value_checked_table() -> (arrow::datatypes::SchemaRef, Vec<RecordBatch>) {
    use arrow::array::{ArrayRef, Decimal128Array, Time64MicrosecondArray};
    let rows_per_batch = (1 << 20) / (16 + 8);
    let batches: Vec<RecordBatch> = (0..16)
        .map(|b| {
            let start = b * rows_per_batch as i64;
            let decimals = Decimal128Array::from_iter_values(
                (start..start + rows_per_batch as i64).map(|i| i128::from(i) * 1_000_003),
            )
            .with_precision_and_scale(38, 10)
            .unwrap();
            let times = Time64MicrosecondArray::from_iter_values(
                (start..start + rows_per_batch as i64).map(|i| i * 7919 % 86_400_000_000),
            );
            RecordBatch::try_from_iter([
                ("amount", Arc::new(decimals) as ArrayRef),
                ("at", Arc::new(times) as ArrayRef),
            ])
            .unwrap()
        })
        .collect();
    (batches[0].schema(), batches)
}

fn encode_all(
    schema: &arrow::datatypes::Schema,
    batches: &[RecordBatch],
) -> Vec<arrow_flight::FlightData> {
    encode_with(schema, batches, TARGET_MESSAGE_BYTES)
}

fn encode_with(
    schema: &arrow::datatypes::Schema,
    batches: &[RecordBatch],
    target_message_bytes: usize,
) -> Vec<arrow_flight::FlightData> {
    let mut encoder = FlightEncoder::new(target_message_bytes);
    let key = TableKey::try_new("bench").unwrap();
    let mut messages = vec![encoder.encode_schema(schema, Some(key.to_descriptor()))];
    for batch in batches {
        messages.extend(encoder.encode_batch(batch).unwrap());
    }
    messages
}

fn encode_and_validate(c: &mut Criterion) {
    let (schema, batches) = table();
    let mut group = c.benchmark_group("in_memory");
    group.throughput(Throughput::Bytes(arrow_bytes(&batches)));
    group.sample_size(20);
    group.bench_function("encode_16MiB", |b| b.iter(|| encode_all(&schema, &batches)));
    let messages = encode_all(&schema, &batches);
    let slabs = Arc::new(SlabPool::unlimited(std::time::Duration::from_secs(10)));
    group.bench_function("validate_upload_16MiB", |b| {
        b.iter(|| validate(&messages, &slabs))
    });
    // The same size of columns whose values are checked one by one (decimals, times of day),
    // against the float columns above, which are checked by their sizes alone.
    let (checked_schema, checked_batches) = value_checked_table();
    let checked = encode_all(&checked_schema, &checked_batches);
    group.bench_function("validate_upload_16MiB_decimals_and_times", |b| {
        b.iter(|| validate(&checked, &slabs))
    });
    // One 16 MiB message, as pyarrow sends a one-chunk table: validated, then re-split.
    let whole = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let giant = encode_with(&schema, &[whole], usize::MAX);
    assert_eq!(giant.len(), 2, "schema and one giant batch");
    group.bench_function("validate_and_resplit_one_16MiB_message", |b| {
        b.iter(|| validate(&giant, &slabs))
    });
    // The same upload as it arrives over HTTP/2, in 1 MiB data frames: received straight into
    // table memory and validated there, DirectPut's path.
    let framed: Vec<u8> = messages
        .iter()
        .flat_map(|m| flightcache::internals::frame(m).to_vec())
        .collect();
    let wire: Vec<Bytes> = framed.chunks(1 << 20).map(Bytes::copy_from_slice).collect();
    group.bench_function("receive_and_validate_upload_16MiB", |b| {
        b.to_async(
            tokio::runtime::Builder::new_current_thread()
                .enable_time() // uploads time out when idle
                .build()
                .unwrap(),
        )
        .iter(|| receive(&wire, &slabs))
    });
    group.bench_function("decode_16MiB", |b| {
        b.to_async(
            tokio::runtime::Builder::new_current_thread()
                .enable_time() // uploads time out when idle
                .build()
                .unwrap(),
        )
        .iter(|| {
            let stream = futures::stream::iter(messages.clone().into_iter().map(Ok));
            async move {
                let batches: Vec<RecordBatch> =
                    arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                        .try_collect()
                        .await
                        .unwrap();
                batches
            }
        })
    });
    group.finish();
}

/// Memory for one upload from `slabs`.
fn memory(slabs: &Arc<SlabPool>) -> SlabWriter {
    SlabWriter::new(Arc::clone(slabs), UploadAccount::new(slabs.budget()))
}

/// Validate an upload into table memory from `slabs`, shared across iterations as a server's
/// uploads share it (so iterations reuse the slabs of the last one's dropped table).
fn validate(messages: &[arrow_flight::FlightData], slabs: &Arc<SlabPool>) -> Segment {
    let mut upload = TableUpload::new(
        TableKey::try_new("bench").unwrap(),
        memory(slabs),
        usize::MAX,
    );
    for message in messages {
        upload.push(message.clone()).unwrap();
    }
    upload.finish().unwrap()
}

/// Receive an upload from its HTTP/2 data frames `wire` into table memory from `slabs`, and
/// validate it, as `DirectPut` does.
async fn receive(wire: &[Bytes], slabs: &Arc<SlabPool>) -> Segment {
    let frames: Vec<_> = wire
        .iter()
        .map(|data| Ok::<_, tonic::Status>(Frame::data(data.clone())))
        .collect();
    let body = tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)));
    let mut reader = MessageReader::new(body, usize::MAX, std::time::Duration::from_secs(30), 0);
    let mut memory = memory(slabs);
    let first = reader.next_message(&mut memory).await.unwrap().unwrap();
    let mut upload = TableUpload::new(TableKey::try_new("bench").unwrap(), memory, usize::MAX);
    upload.push(first).unwrap();
    while let Some(message) = reader.next_message(upload.memory()).await.unwrap() {
        upload.push(message).unwrap();
    }
    upload.finish().unwrap()
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (schema, batches) = table();
    let key = TableKey::try_new("bench").unwrap();
    let (server, client) = runtime.block_on(async {
        let server = EmbeddedServer::start(ServerConfig::default())
            .await
            .unwrap();
        let client = CacheClient::connect(&server.url()).await.unwrap();
        (server, client)
    });
    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Bytes(arrow_bytes(&batches)));
    group.sample_size(20);
    group.bench_function("put_16MiB", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = client.clone();
            let (schema, batches, key) = (Arc::clone(&schema), batches.clone(), key.clone());
            async move { client.put_batches(&key, schema, batches).await.unwrap() }
        })
    });
    group.bench_function("get_16MiB", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = client.clone();
            let key = key.clone();
            async move {
                let batches: Vec<RecordBatch> =
                    client.get(&key).await.unwrap().try_collect().await.unwrap();
                batches
            }
        })
    });
    group.finish();
    runtime.block_on(server.shutdown_and_wait()).unwrap();
}

criterion_group!(benches, encode_and_validate, loopback);
criterion_main!(benches);
