//! Benchmark data: random float64 tables, their Arrow byte size, and batch-boundary-agnostic
//! table equality.

use std::sync::Arc;

use arrow::array::{ArrayData, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Target Arrow size of each generated batch: about what pyarrow's writers produce and what
/// Flight moves well.
pub const GENERATED_BATCH_BYTES: u64 = 1 << 20;

/// A table of `cols` random float64 columns (`c0`, `c1`, …) of about `size_bytes` Arrow bytes,
/// in batches of about [`GENERATED_BATCH_BYTES`], like the classic Flight-vs-JSON demo.
pub fn random_table(size_bytes: u64, cols: usize, seed: u64) -> (SchemaRef, Vec<RecordBatch>) {
    let cols = cols.max(1);
    let row_bytes = 8 * cols as u64;
    let rows = (size_bytes / row_bytes).max(1);
    let batch_rows = (GENERATED_BATCH_BYTES / row_bytes).max(1);
    let schema: SchemaRef = Arc::new(Schema::new(
        (0..cols)
            .map(|i| Field::new(format!("c{i}"), DataType::Float64, false))
            .collect::<Vec<_>>(),
    ));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut batches = Vec::new();
    let mut done = 0;
    while done < rows {
        let n = batch_rows.min(rows - done) as usize;
        let columns = (0..cols)
            .map(|_| {
                let values: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
                Arc::new(Float64Array::from(values)) as _
            })
            .collect();
        batches.push(
            RecordBatch::try_new(Arc::clone(&schema), columns).expect("columns match schema"),
        );
        done += n as u64;
    }
    (schema, batches)
}

/// Bytes of Arrow buffers the batches reference (values, offsets, validity, children), counting
/// only each array's own length, not spare capacity.
pub fn arrow_bytes(batches: &[RecordBatch]) -> u64 {
    fn data_bytes(data: &ArrayData) -> u64 {
        let own: usize = data.buffers().iter().map(|b| b.len()).sum();
        let nulls = data.nulls().map_or(0, |n| n.buffer().len());
        let children: u64 = data.child_data().iter().map(data_bytes).sum();
        (own + nulls) as u64 + children
    }
    batches
        .iter()
        .flat_map(|b| b.columns())
        .map(|c| data_bytes(&c.to_data()))
        .sum()
}

/// Whether two tables hold the same schema and rows in the same order, however their rows
/// are split into batches. Compares slices; copies nothing.
pub fn tables_equal(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    let (mut ai, mut bi, mut a_off, mut b_off) = (0, 0, 0, 0);
    loop {
        while ai < a.len() && a_off == a[ai].num_rows() {
            ai += 1;
            a_off = 0;
        }
        while bi < b.len() && b_off == b[bi].num_rows() {
            bi += 1;
            b_off = 0;
        }
        match (a.get(ai), b.get(bi)) {
            (None, None) => return true,
            (Some(x), Some(y)) => {
                let n = (x.num_rows() - a_off).min(y.num_rows() - b_off);
                if x.slice(a_off, n) != y.slice(b_off, n) {
                    return false;
                }
                a_off += n;
                b_off += n;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_table_has_the_requested_shape_and_size() {
        let (schema, batches) = random_table(4 << 20, 8, 1);
        assert_eq!(schema.fields().len(), 8);
        assert_eq!(arrow_bytes(&batches), 4 << 20);
        assert_eq!(batches.len(), 4);
    }

    #[test]
    fn tables_equal_ignores_batch_boundaries_but_not_values() {
        let (_, batches) = random_table(1 << 20, 4, 7);
        let whole = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let resplit = vec![
            whole.slice(0, 100),
            whole.slice(100, whole.num_rows() - 100),
        ];
        assert!(tables_equal(&batches, &resplit));
        let (_, other) = random_table(1 << 20, 4, 8);
        assert!(!tables_equal(&batches, &other));
        assert!(!tables_equal(&batches, &resplit[..1]));
    }
}
