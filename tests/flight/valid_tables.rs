//! The accepting direction, with tables arrow-rs writes (issue 18): seeded tables of every
//! type of the type matrix, nested in lists, large lists, fixed-size lists, list views, maps,
//! structs, unions of both modes and run-end encoding, with no, some or only nulls, sliced at
//! every level and split into batches (empty ones included), are each stored and come back
//! exact. The pyarrow side is `python/tests/test_valid_tables.py`.
//!
//! `FLIGHTCACHE_VALID_CASES` sets the number of cases (default 300) and
//! `FLIGHTCACHE_VALID_SEED` the seed.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Int32Array, LargeListArray, ListArray, ListViewArray,
    MapArray, RecordBatch, RunArray, StringArray, StructArray, UnionArray, new_null_array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, Int32Type, UnionFields};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::common::types::every_type_columns;
use crate::common::{TestServer, key};

const DEFAULT_CASES: usize = 300;
const DEFAULT_SEED: u64 = 20_261_207;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Validity for `n` slots: none, some or all null.
fn nulls(rng: &mut SmallRng, n: usize) -> Option<NullBuffer> {
    match rng.random_range(0..3) {
        0 => None,
        1 => Some((0..n).map(|_| rng.random_bool(0.7)).collect()),
        _ => Some(NullBuffer::new_null(n)),
    }
}

/// `values` wrapped once in a random nested type; the result has some length of its own.
/// Lengths of `rows` lists over `n` values, from a random start (a list may skip values).
fn list_lengths(rng: &mut SmallRng, n: usize, rows: usize) -> (usize, Vec<usize>) {
    let start = rng.random_range(0..=n.min(2));
    let mut left = n - start;
    let lengths = (0..rows)
        .map(|_| {
            let len = rng.random_range(0..=left.min(3));
            left -= len;
            len
        })
        .collect();
    (start, lengths)
}

fn wrap(rng: &mut SmallRng, values: ArrayRef) -> ArrayRef {
    let n = values.len();
    let item = |values: &ArrayRef| Arc::new(Field::new("item", values.data_type().clone(), true));
    let rows = rng.random_range(0..=4);
    match rng.random_range(0..8) {
        0 | 1 => {
            let (start, lens) = list_lengths(rng, n, rows);
            let values = values.slice(start, n - start);
            let offsets = OffsetBuffer::<i32>::from_lengths(lens);
            let validity = nulls(rng, rows);
            if rng.random_bool(0.5) {
                Arc::new(ListArray::new(item(&values), offsets, values, validity))
            } else {
                let offsets = OffsetBuffer::<i64>::from_lengths(offsets.lengths());
                Arc::new(LargeListArray::new(
                    item(&values),
                    offsets,
                    values,
                    validity,
                ))
            }
        }
        2 => {
            let size = rng.random_range(1..=2);
            let rows = n / size;
            let values = values.slice(0, rows * size);
            let validity = nulls(rng, rows);
            Arc::new(FixedSizeListArray::new(
                item(&values),
                size as i32,
                values,
                validity,
            ))
        }
        3 => {
            // Views that overlap and come in any order.
            let (offsets, sizes): (Vec<i32>, Vec<i32>) = (0..rows)
                .map(|_| {
                    let offset = rng.random_range(0..=n);
                    (offset as i32, rng.random_range(0..=n - offset) as i32)
                })
                .unzip();
            let validity = nulls(rng, rows);
            Arc::new(ListViewArray::new(
                item(&values),
                ScalarBuffer::from(offsets),
                ScalarBuffer::from(sizes),
                values,
                validity,
            ))
        }
        4 => {
            let numbers: ArrayRef = Arc::new(Int32Array::from_iter_values(0..n as i32));
            let fields = Fields::from(vec![
                Field::new("v", values.data_type().clone(), true),
                Field::new("n", DataType::Int32, false),
            ]);
            let validity = nulls(rng, n);
            let start = rng.random_range(0..=n);
            let length = rng.random_range(0..=n - start);
            Arc::new(StructArray::new(fields, vec![values, numbers], validity).slice(start, length))
        }
        5 => {
            let (start, lens) = list_lengths(rng, n, rows);
            let values = values.slice(start, n - start);
            let count = values.len();
            let keys: ArrayRef = Arc::new(StringArray::from_iter_values(
                (0..count).map(|i| format!("k{i}")),
            ));
            let entries = Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", values.data_type().clone(), true),
            ]);
            let entries = StructArray::new(entries, vec![keys, values], None);
            let field = Arc::new(Field::new("entries", entries.data_type().clone(), false));
            let offsets = OffsetBuffer::<i32>::from_lengths(lens);
            let validity = nulls(rng, rows);
            Arc::new(MapArray::new(field, offsets, entries, validity, false))
        }
        6 => {
            // A union over the values and a second child, with type ids chosen per row.
            let other: ArrayRef = Arc::new(Int32Array::from_iter_values(0..n as i32));
            let fields = UnionFields::try_new(
                [3, 9],
                [
                    Field::new("v", values.data_type().clone(), true),
                    Field::new("n", DataType::Int32, true),
                ],
            )
            .unwrap();
            let ids: Vec<i8> = (0..n)
                .map(|_| if rng.random_bool(0.6) { 3 } else { 9 })
                .collect();
            if rng.random_bool(0.5) {
                UnionArray::try_new(fields, ids.into(), None, vec![values, other])
                    .map(|u| Arc::new(u) as ArrayRef)
                    .unwrap()
            } else {
                let (mut next_v, mut next_n) = (0, 0);
                let offsets: Vec<i32> = ids
                    .iter()
                    .map(|&id| {
                        let next = if id == 3 { &mut next_v } else { &mut next_n };
                        *next += 1;
                        *next - 1
                    })
                    .collect();
                UnionArray::try_new(
                    fields,
                    ids.into(),
                    Some(offsets.into()),
                    vec![values, other],
                )
                .map(|u| Arc::new(u) as ArrayRef)
                .unwrap()
            }
        }
        _ if has_views(values.data_type()) => {
            // Not run-end encoded: for a zero-row slice of a run-end encoded array of views,
            // arrow-rs 60's writer declares a variadic buffer it does not write (20 of 5,000
            // cases: "the batch has 23 buffers, its schema calls for 24"). arrow-rs's own reader
            // refuses the stream ("Buffer count mismatched with metadata"); pyarrow reads it,
            // skipping the buffers of zero-row arrays. Unsafe for arrow-rs readers, so refused
            // (docs/protocol.md); a struct keeps the case.
            let fields = Fields::from(vec![Field::new("v", values.data_type().clone(), true)]);
            Arc::new(StructArray::new(fields, vec![values], None))
        }
        _ => {
            // Each value its own run of one to three rows.
            let mut end = 0;
            let run_ends: Vec<i32> = (0..n)
                .map(|_| {
                    end += rng.random_range(1..=3);
                    end
                })
                .collect();
            let run_ends = arrow::array::PrimitiveArray::<Int32Type>::from(run_ends);
            Arc::new(RunArray::try_new(&run_ends, values.as_ref()).unwrap())
        }
    }
}

/// Whether `data_type` holds string or binary views at any depth.
fn has_views(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8View | DataType::BinaryView => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::Map(f, _) => has_views(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_views(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_views(f.data_type())),
        DataType::RunEndEncoded(_, values) => has_views(values.data_type()),
        DataType::Dictionary(_, values) => has_views(values),
        _ => false,
    }
}

/// One column: a type of the matrix, as it is, sliced, all null or empty, wrapped zero to
/// two times.
fn column(rng: &mut SmallRng, leaves: &[(&'static str, ArrayRef)]) -> (String, ArrayRef) {
    let (name, leaf) = &leaves[rng.random_range(0..leaves.len())];
    let mut array = match rng.random_range(0..4) {
        0 => Arc::clone(leaf),
        1 => {
            let start = rng.random_range(0..leaf.len());
            leaf.slice(start, rng.random_range(0..=leaf.len() - start))
        }
        2 => new_null_array(leaf.data_type(), leaf.len()),
        _ => leaf.slice(0, 0),
    };
    let mut described = name.to_string();
    for _ in 0..rng.random_range(0..=2) {
        array = wrap(rng, array);
        described = format!(
            "{}<{described}>",
            array.data_type().to_string().split('(').next().unwrap()
        );
    }
    (described, array)
}

/// Case `number`: its description and the batches to upload.
fn case(
    seed: u64,
    number: usize,
    leaves: &[(&'static str, ArrayRef)],
) -> (String, Vec<RecordBatch>) {
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (number as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let columns: Vec<(String, ArrayRef)> = (0..rng.random_range(1..=3))
        .map(|_| column(&mut rng, leaves))
        .collect();
    let rows = columns.iter().map(|(_, a)| a.len()).min().unwrap();
    let batch = RecordBatch::try_from_iter(
        columns
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (format!("c{i}"), a.slice(0, rows))),
    )
    .unwrap();
    let mut batches = Vec::new();
    let mut at = 0;
    while at < rows {
        let len = rng.random_range(1..=rows - at);
        batches.push(batch.slice(at, len));
        at += len;
    }
    if batches.is_empty() || rng.random_bool(0.3) {
        let position = rng.random_range(0..=batches.len());
        batches.insert(position, batch.slice(0, 0));
    }
    let described: Vec<&str> = columns.iter().map(|(d, _)| d.as_str()).collect();
    (
        format!(
            "case {number}: {rows} rows in {} batches, {described:?}",
            batches.len()
        ),
        batches,
    )
}

/// Whether arrow-rs's stream reader reads back what its stream writer writes of `batches`.
fn arrow_rs_reads_back(batches: &[RecordBatch]) -> bool {
    let mut bytes = Vec::new();
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batches[0].schema()).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)
        .unwrap()
        .all(|batch| batch.is_ok())
}

#[tokio::test]
async fn every_generated_valid_table_arrow_rs_writes_is_stored_and_comes_back_exact() {
    let cases = env_or("FLIGHTCACHE_VALID_CASES", DEFAULT_CASES);
    let seed = env_or("FLIGHTCACHE_VALID_SEED", DEFAULT_SEED);
    let leaves = every_type_columns();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut refused = Vec::new();
    let mut unreadable = 0;
    for number in 0..cases {
        let (described, batches) = case(seed, number, &leaves);
        let key = key(&format!("valid-{number}"));
        let schema = batches[0].schema();
        if !arrow_rs_reads_back(&batches) {
            // arrow-rs 59's writer writes an empty run-end encoded slice at an offset with a
            // run end of 0 (fixed in arrow 60): not a valid table on the wire, and the server
            // must agree with arrow-rs's reader that it is not.
            let refusal = client.put_batches(&key, schema, batches.clone()).await;
            assert!(
                refusal.is_err(),
                "{described}: stored what arrow-rs cannot read"
            );
            unreadable += 1;
            continue;
        }
        if let Err(e) = client.put_batches(&key, schema, batches.clone()).await {
            refused.push(format!("{described}: {e}"));
            continue;
        }
        let (_, got) = client.get_all(&key).await.unwrap();
        assert_eq!(got, batches, "{described}: changed in the round trip");
        client.drop_table(&key).await.unwrap();
    }
    eprintln!(
        "{cases} valid tables written by arrow-rs (seed {seed}): {} refused, \
         {unreadable} written unreadably by arrow-rs's own writer (and refused)",
        refused.len()
    );
    assert!(
        unreadable < cases / 4,
        "{unreadable} of {cases} unreadable as written"
    );
    assert!(
        refused.is_empty(),
        "{} of {cases} refused:\n{}",
        refused.len(),
        refused[..refused.len().min(10)].join("\n")
    );
    server.shutdown_and_wait().await;
}
