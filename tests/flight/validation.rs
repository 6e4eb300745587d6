//! The regression corpus of the upload validator: one upload per kind of invalid Arrow data
//! that a fuzzer once got stored (and pyarrow then refused to read back). Each is refused with
//! INVALID_ARGUMENT and a message that says what is wrong, over real `do_put`, and the table
//! already under the key stays as it was.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray, UnionArray,
};
use arrow::datatypes::{DataType, Field, UnionFields};
use arrow::ipc::{self, MetadataVersion};
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use tonic::Code;

use crate::common::ipc::{
    BatchHeader, decimal128_type, encode, int64_type, one_column_schema, schema_message,
    union_schema,
};
use crate::common::{TestServer, key, numbered_batches, numbered_schema, put_raw};

/// Upload `messages` under `t` on a server that holds a valid table there; assert the upload is
/// refused as INVALID_ARGUMENT with a message containing `says`, and the old table survives.
async fn assert_refused(case: &str, messages: Vec<FlightData>, says: &str) {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let old = numbered_batches(2, 5);
    client
        .put_batches(&key("t"), numbered_schema(), old.clone())
        .await
        .unwrap();
    let status = put_raw(&server, messages).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert!(
        status.message().contains(says),
        "{case}: the message does not say `{says}`: {}",
        status.message()
    );
    let (_, got) = client.get_all(&key("t")).await.unwrap();
    assert_eq!(got, old, "{case}: the old table changed");
    server.shutdown_and_wait().await;
}

fn descriptor() -> FlightDescriptor {
    FlightDescriptor::new_cmd("t")
}

fn ids(values: Vec<Option<i64>>) -> RecordBatch {
    RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(values)) as ArrayRef)]).unwrap()
}

/// A valid upload of `batch`, with its record batch header changed by `change`.
fn with_header(batch: &RecordBatch, change: impl FnOnce(&mut BatchHeader)) -> Vec<FlightData> {
    let mut messages = encode(descriptor(), std::slice::from_ref(batch));
    let mut header = BatchHeader::parse(&messages[1].data_header);
    change(&mut header);
    messages[1].data_header = header.encode();
    messages
}

#[tokio::test]
async fn a_big_endian_schema_is_refused() {
    let mut messages = encode(descriptor(), &[ids(vec![Some(1), Some(2)])]);
    messages[0].data_header = one_column_schema(ipc::Endianness::Big, ipc::Type::Int, int64_type);
    assert_refused("big-endian", messages, "big-endian").await;
}

#[tokio::test]
async fn unsupported_metadata_versions_are_refused() {
    let batch = ids(vec![Some(1), None]);
    for version in [MetadataVersion::V3, MetadataVersion(6)] {
        let mut messages = encode(descriptor(), std::slice::from_ref(&batch));
        messages[0].data_header = schema_message(&batch.schema(), version);
        assert_refused("schema version", messages, "metadata version").await;
        let messages = with_header(&batch, |header| header.version = version);
        assert_refused("batch version", messages, "metadata version").await;
    }
}

#[tokio::test]
async fn a_buffer_at_an_unaligned_offset_is_refused() {
    let batch = ids(vec![Some(1), None, Some(3)]);
    let mut messages = with_header(&batch, |header| {
        header.buffers[1].0 += 1;
        header.body_length += 8;
    });
    let mut body = messages[1].data_body.to_vec();
    body.extend_from_slice(&[0; 8]);
    messages[1].data_body = body.into();
    assert_refused("unaligned", messages, "aligned").await;
}

#[tokio::test]
async fn impossible_node_lengths_and_null_counts_are_refused() {
    let batch = ids(vec![Some(1), None, Some(3)]);
    type Change = fn(&mut BatchHeader);
    let cases: [(&str, Change); 4] = [
        ("negative null count", |h| h.nodes[0].1 = -1),
        ("null count over the length", |h| h.nodes[0].1 = 4),
        ("length 2^64 - 1", |h| {
            h.nodes[0].0 = -1;
            h.length = -1;
        }),
        ("a column longer than the batch", |h| h.nodes[0].0 = 2),
    ];
    for (case, change) in cases {
        assert_refused(case, with_header(&batch, change), "record batch 0").await;
    }
}

#[tokio::test]
async fn buffers_too_small_for_their_array_are_refused() {
    let batch = ids(vec![Some(1), None, Some(3)]);
    let messages = with_header(&batch, |header| header.buffers[1].1 = 8);
    assert_refused("short values", messages, "needs 24").await;
    let strings = RecordBatch::try_from_iter([(
        "s",
        Arc::new(StringArray::from(vec!["a", "bb", "ccc"])) as ArrayRef,
    )])
    .unwrap();
    let messages = with_header(&strings, |header| header.buffers[1].1 = 4);
    assert_refused("short offsets", messages, "needs 16").await;
}

#[tokio::test]
async fn buffers_and_nodes_beyond_the_schema_are_refused() {
    let batch = ids(vec![Some(1), None]);
    let messages = with_header(&batch, |header| header.nodes.push((2, 0)));
    assert_refused("an extra node", messages, "nodes").await;
    let messages = with_header(&batch, |header| header.buffers.push((0, 0)));
    assert_refused("an extra buffer", messages, "buffers").await;
    let messages = with_header(&batch, |header| {
        header.buffers[1].0 = header.body_length;
    });
    assert_refused("a buffer past the body", messages, "body").await;
}

#[tokio::test]
async fn a_body_of_another_length_than_declared_is_refused() {
    let batch = ids(vec![Some(1), Some(2)]);
    let messages = with_header(&batch, |header| header.body_length += 8);
    assert_refused("body length", messages, "declares a body").await;
}

#[tokio::test]
async fn union_type_ids_out_of_range_are_refused() {
    // In the schema: an id no Arrow union can hold, and a repeated one.
    for type_ids in [[0, 200], [1, 1], [-1, 0]] {
        let messages = vec![FlightData {
            flight_descriptor: Some(descriptor()),
            data_header: union_schema(&type_ids),
            ..Default::default()
        }];
        assert_refused("schema type ids", messages, "type id").await;
    }
    // In the data: a row whose type id names no child.
    let fields = UnionFields::try_new(
        [0, 1],
        [
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ],
    )
    .unwrap();
    let children: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3])),
        Arc::new(Int32Array::from(vec![4, 5, 6])),
    ];
    let union = UnionArray::try_new(fields, vec![0i8, 1, 0].into(), None, children).unwrap();
    let batch = RecordBatch::try_from_iter([("u", Arc::new(union) as ArrayRef)]).unwrap();
    let mut messages = encode(descriptor(), &[batch]);
    let header = BatchHeader::parse(&messages[1].data_header);
    let type_ids_at = header.buffers[0].0 as usize;
    let mut body = messages[1].data_body.to_vec();
    body[type_ids_at + 1] = 5;
    messages[1].data_body = Bytes::from(body);
    assert_refused("data type id", messages, "type id").await;
}

#[tokio::test]
async fn decimals_beyond_their_precision_are_refused() {
    let messages = vec![FlightData {
        flight_descriptor: Some(descriptor()),
        data_header: one_column_schema(
            ipc::Endianness::Little,
            ipc::Type::Decimal,
            decimal128_type(0, 0),
        ),
        ..Default::default()
    }];
    assert_refused("precision 0", messages, "precision").await;

    let overflowing = Decimal128Array::from(vec![Some(123), Some(100_000)])
        .with_precision_and_scale(5, 2)
        .unwrap();
    let batch = RecordBatch::try_from_iter([("d", Arc::new(overflowing) as ArrayRef)]).unwrap();
    assert_refused("value", encode(descriptor(), &[batch]), "precision").await;
}

#[tokio::test]
async fn an_unreadable_flatbuffer_is_refused() {
    let mut messages = encode(descriptor(), &[ids(vec![Some(1)])]);
    let mut header = messages[1].data_header.to_vec();
    header[0] = 0xff; // the root table's offset now points past the buffer
    header[1] = 0xff;
    messages[1].data_header = header.into();
    assert_refused("flatbuffer", messages, "not valid Arrow IPC").await;
}

#[tokio::test]
async fn a_compressed_buffer_declaring_a_huge_size_is_refused_before_it_is_decompressed() {
    use arrow::ipc::writer::{IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
    let batch = ids((0..1000).map(Some).collect());
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(ipc::CompressionType::ZSTD))
        .unwrap();
    let generator = IpcDataGenerator::default();
    let mut tracker = arrow::ipc::writer::DictionaryTracker::new(false);
    let schema =
        generator.schema_to_bytes_with_dictionary_tracker(&batch.schema(), &mut tracker, &options);
    let (_, encoded) = generator
        .encode(
            &batch,
            &mut tracker,
            &options,
            &mut IpcWriteContext::default(),
        )
        .unwrap();
    let mut schema = FlightData::from(schema);
    schema.flight_descriptor = Some(descriptor());
    let mut message = FlightData::from(encoded);
    let header = BatchHeader::parse(&message.data_header);
    let values_at = header.buffers[1].0 as usize;
    let mut body = message.data_body.to_vec();
    // The uncompressed length that prefixes a compressed buffer: 1 TiB.
    body[values_at..values_at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    message.data_body = body.into();
    assert_refused("1 TiB", vec![schema, message], "--max-message-size").await;
}

/// A valid upload of `batch` (its record batch the last message), with the bytes at `at` of
/// its `buffer`th body buffer replaced by `bytes`.
fn with_body(batch: &RecordBatch, buffer: usize, at: usize, bytes: &[u8]) -> Vec<FlightData> {
    let mut messages = encode(descriptor(), std::slice::from_ref(batch));
    let last = messages.last_mut().unwrap();
    let header = BatchHeader::parse(&last.data_header);
    let start = header.buffers[buffer].0 as usize + at;
    let mut body = last.data_body.to_vec();
    body[start..start + bytes.len()].copy_from_slice(bytes);
    last.data_body = Bytes::from(body);
    messages
}

fn batch_of(array: ArrayRef) -> RecordBatch {
    RecordBatch::try_from_iter([("c", array)]).unwrap()
}

#[tokio::test]
async fn values_a_strict_reader_checks_are_refused() {
    use arrow::array::{DictionaryArray, ListArray, RunArray};
    use arrow::datatypes::{Int8Type, Int32Type};
    let strings = batch_of(Arc::new(StringArray::from(vec!["a", "bb", "ccc"])));
    // Buffers: validity, offsets, values.
    let messages = with_body(&strings, 2, 0, &[0xff]);
    assert_refused("a string that is not UTF-8", messages, "Invalid UTF8").await;
    let messages = with_body(&strings, 1, 4, &9i32.to_le_bytes());
    assert_refused("offsets that go back", messages, "Offset invariant").await;

    let dictionary: DictionaryArray<Int8Type> = vec!["x", "y", "x"].into_iter().collect();
    // The record batch's buffers: validity, keys.
    let messages = with_body(&batch_of(Arc::new(dictionary)), 1, 1, &[7]);
    assert_refused(
        "a dictionary key past the values",
        messages,
        "out of bounds",
    )
    .await;

    let runs = RunArray::<Int32Type>::try_new(
        &Int32Array::from(vec![2, 4]),
        &Int32Array::from(vec![10, 20]),
    )
    .unwrap();
    // Buffers: run ends' validity and values, then the values' validity and values.
    let messages = with_body(&batch_of(Arc::new(runs)), 1, 4, &1i32.to_le_bytes());
    assert_refused("run ends that go back", messages, "strictly increasing").await;

    let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1)]),
        Some(vec![Some(2), Some(3)]),
    ]);
    // Buffers: the list's validity and offsets, then the child's validity and values.
    let messages = with_body(&batch_of(Arc::new(lists)), 1, 8, &99i32.to_le_bytes());
    assert_refused(
        "a list past its child",
        messages,
        "larger than values length",
    )
    .await;
}
