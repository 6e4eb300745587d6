//! A seeded fuzzer of the upload validator, run with every test run.
//!
//! Valid uploads of the type matrix are mutated (bits flipped in headers and bodies, fields of
//! record batch headers set to the values that break readers, messages cut, dropped or
//! repeated) and fed to the validator of `do_put`. Whatever it is given:
//! - no panic escapes it;
//! - every upload it accepts reads back with arrow-rs, and every array passes full
//!   validation;
//! - every upload it refuses is INVALID_ARGUMENT, with a message.
//!
//! Known malformations are refused by the validator's own checks before arrow-ipc reads a body,
//! so the default run also asserts that no case needs the last line of defence (catching a
//! panic of arrow-ipc); a case that does shows a gap in the checks.
//!
//! `FLIGHTCACHE_FUZZ_CASES` sets the number of cases (default 20,000) and `FLIGHTCACHE_FUZZ_SEED`
//! the seed, to go further than the default run does. The Python tests check the same property
//! with pyarrow as the reader.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Decimal128Array, DictionaryArray, RecordBatch, StringArray};
use arrow::datatypes::Int32Type;
use arrow::ipc::MetadataVersion;
use arrow_flight::{FlightData, FlightDescriptor};
use flightcache::internals::{Segment, SlabPool, SlabWriter, TableUpload, UploadAccount};
use flightcache::{Error, TableKey};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::common::ipc::{BatchHeader, encode};
use crate::common::numbered_batches;
use crate::common::types::{every_type_batch, every_type_columns};

const DEFAULT_CASES: usize = 20_000;
const DEFAULT_SEED: u64 = 0x5EED_F1E5;

/// The valid uploads the mutations start from.
fn seeds() -> Vec<Vec<FlightData>> {
    let descriptor = || FlightDescriptor::new_cmd("fuzz");
    let mut seeds = vec![
        encode(descriptor(), &[every_type_batch()]),
        encode(descriptor(), &numbered_batches(3, 20)),
    ];
    let batch = every_type_batch();
    seeds.push(encode(
        descriptor(),
        &[batch.slice(1, 2), batch.slice(3, 1)],
    ));
    for (name, array) in every_type_columns() {
        let batch = RecordBatch::try_from_iter([(name, array)]).unwrap();
        seeds.push(encode(descriptor(), &[batch]));
    }
    let first: DictionaryArray<Int32Type> = vec![Some("a"), Some("b"), None].into_iter().collect();
    let second: DictionaryArray<Int32Type> = vec![Some("z"), None, Some("y")].into_iter().collect();
    let dictionaries: Vec<_> = [first, second]
        .into_iter()
        .map(|d| RecordBatch::try_from_iter([("d", Arc::new(d) as ArrayRef)]).unwrap())
        .collect();
    seeds.push(encode(descriptor(), &dictionaries));
    let decimals = Decimal128Array::from(vec![Some(99_999), None, Some(-99_999)])
        .with_precision_and_scale(5, 2)
        .unwrap();
    let strings = StringArray::from(vec![Some("a"), None, Some("données")]);
    let mixed = RecordBatch::try_from_iter([
        ("d", Arc::new(decimals) as ArrayRef),
        ("s", Arc::new(strings) as ArrayRef),
    ])
    .unwrap();
    seeds.push(encode(descriptor(), &[mixed]));
    seeds
}

/// Values that break readers when they land in a length, a count or an offset.
const INTERESTING: [i64; 12] = [
    -1,
    0,
    1,
    7,
    8,
    63,
    i64::MAX,
    i64::MIN,
    1 << 31,
    1 << 32,
    1 << 53,
    -8,
];

/// One mutation of `messages`, chosen by `rng`.
fn mutate(rng: &mut SmallRng, mut messages: Vec<FlightData>) -> Vec<FlightData> {
    let index = rng.random_range(0..messages.len());
    let message = &mut messages[index];
    match rng.random_range(0..10) {
        0 | 1 => {
            // Flip a few bits of the header.
            let mut header = message.data_header.to_vec();
            for _ in 0..rng.random_range(1..4) {
                if !header.is_empty() {
                    let at = rng.random_range(0..header.len());
                    header[at] ^= 1 << rng.random_range(0..8);
                }
            }
            message.data_header = header.into();
        }
        2 => {
            // Set a header byte to an extreme.
            let mut header = message.data_header.to_vec();
            if !header.is_empty() {
                let at = rng.random_range(0..header.len());
                header[at] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.random_range(0..5)];
            }
            message.data_header = header.into();
        }
        3..=5 => {
            // Change one field of a record batch header.
            let Some(mut header) = BatchHeader::try_parse(&message.data_header) else {
                return messages; // not a record batch: leave it
            };
            let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
            match rng.random_range(0..7) {
                0 if !header.nodes.is_empty() => {
                    let n = rng.random_range(0..header.nodes.len());
                    header.nodes[n].0 = value;
                }
                1 if !header.nodes.is_empty() => {
                    let n = rng.random_range(0..header.nodes.len());
                    header.nodes[n].1 = value;
                }
                2 if !header.buffers.is_empty() => {
                    let b = rng.random_range(0..header.buffers.len());
                    header.buffers[b].0 = header.buffers[b].0.wrapping_add(value);
                }
                3 if !header.buffers.is_empty() => {
                    let b = rng.random_range(0..header.buffers.len());
                    header.buffers[b].1 = header.buffers[b].1.wrapping_add(value);
                }
                4 => header.length = header.length.wrapping_add(value),
                5 => {
                    header.version = [
                        MetadataVersion::V1,
                        MetadataVersion::V3,
                        MetadataVersion::V4,
                        MetadataVersion(6),
                    ][rng.random_range(0..4)]
                }
                _ => header.body_length = header.body_length.wrapping_add(value),
            }
            message.data_header = header.encode();
        }
        6 | 7 => {
            // Change the body's bytes: values, offsets, type ids, dictionary keys.
            let mut body = message.data_body.to_vec();
            for _ in 0..rng.random_range(1..6) {
                if !body.is_empty() {
                    let at = rng.random_range(0..body.len());
                    if rng.random_bool(0.5) {
                        body[at] ^= 1 << rng.random_range(0..8);
                    } else {
                        body[at] = [0x00, 0xff, 0x7f, 0x80][rng.random_range(0..4)];
                    }
                }
            }
            message.data_body = body.into();
        }
        8 => {
            // Cut or extend the body.
            let len = message.data_body.len();
            let mut body = message.data_body.to_vec();
            if rng.random_bool(0.5) && len > 0 {
                body.truncate(rng.random_range(0..len));
            } else {
                body.extend(std::iter::repeat_n(0u8, rng.random_range(1..16)));
            }
            message.data_body = body.into();
        }
        _ => {
            // Drop, repeat or move a message.
            let message = messages.remove(index);
            match rng.random_range(0..3) {
                0 => {}
                1 => {
                    messages.insert(index, message.clone());
                    messages.insert(index, message);
                }
                _ => {
                    let to = rng.random_range(0..=messages.len());
                    messages.insert(to, message);
                }
            }
        }
    }
    messages
}

/// Feed `messages` to the validator, as `do_put` does.
fn validate(messages: Vec<FlightData>, pool: &Arc<SlabPool>) -> Result<Segment, Error> {
    let key = TableKey::try_new("fuzz").unwrap();
    let memory = SlabWriter::new(Arc::clone(pool), UploadAccount::new(pool.budget()));
    let mut upload = TableUpload::new(key, memory, 64 << 20);
    for message in messages {
        upload.push(message)?;
    }
    upload.finish()
}

/// Read `table`'s messages back as an IPC stream with arrow-rs, and validate every array
/// fully; the reason if anything fails.
fn read_back(table: &Segment) -> Result<usize, String> {
    let mut stream = Vec::new();
    for message in table.messages() {
        let message = message.to_flight_data();
        let header = &message.data_header;
        let padded = header.len().next_multiple_of(8);
        stream.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        stream.extend_from_slice(&(padded as u32).to_le_bytes());
        stream.extend_from_slice(header);
        stream.resize(stream.len() + padded - header.len(), 0);
        stream.extend_from_slice(&message.data_body);
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(stream), None)
        .map_err(|e| format!("the schema does not read back: {e}"))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| format!("a batch does not read back: {e}"))?;
        for column in batch.columns() {
            column
                .to_data()
                .validate_full()
                .map_err(|e| format!("a column is not valid: {e}"))?;
        }
        rows += batch.num_rows();
    }
    Ok(rows)
}

#[test]
fn mutated_uploads_are_refused_or_read_back_valid() {
    let cases: usize = std::env::var("FLIGHTCACHE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("FLIGHTCACHE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = SmallRng::seed_from_u64(seed);
    let seeds = seeds();
    let pool = Arc::new(SlabPool::unlimited(Duration::ZERO));
    let (mut accepted, mut refused, mut panicked) = (0, 0, 0);
    for case in 0..cases {
        let mut messages = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..3) {
            if messages.is_empty() {
                break;
            }
            messages = mutate(&mut rng, messages);
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            validate(messages.clone(), &pool)
        }));
        let Ok(outcome) = outcome else {
            panic!("case {case} (seed {seed}): a panic escaped the validator");
        };
        match outcome {
            Ok(table) => {
                if let Err(reason) = read_back(&table) {
                    panic!("case {case} (seed {seed}): accepted, but {reason}");
                }
                accepted += 1;
            }
            Err(err) => {
                assert_eq!(
                    err.code(),
                    Code::InvalidArgument,
                    "case {case} (seed {seed}): refused as {err}"
                );
                let message = err.to_string();
                // The refusal says what is wrong, after the standard preamble.
                let (_, problem) = message
                    .split_once("nothing was stored: ")
                    .unwrap_or_else(|| panic!("case {case}: not an upload refusal: {message}"));
                assert!(!problem.trim().is_empty(), "case {case}: {message}");
                if message.contains("malformed IPC data") {
                    // arrow-ipc panicked, and the last line of defence caught it.
                    if panicked < 3 {
                        eprintln!("case {case}: {message}");
                    }
                    panicked += 1;
                }
                refused += 1;
            }
        }
    }
    eprintln!(
        "fuzzed {cases} uploads (seed {seed}): {accepted} accepted, {refused} refused, \
         {panicked} of them by catching a panic of arrow-ipc"
    );
    assert!(refused > cases / 4, "the mutations reach the validator");
    assert_eq!(
        panicked, 0,
        "cases refused only because arrow-ipc panicked on them"
    );
}

#[test]
fn seeds_are_accepted_unmutated() {
    let pool = Arc::new(SlabPool::unlimited(Duration::ZERO));
    for (i, messages) in seeds().into_iter().enumerate() {
        let table = validate(messages, &pool).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        read_back(&table).unwrap_or_else(|e| panic!("seed {i}: {e}"));
    }
}
