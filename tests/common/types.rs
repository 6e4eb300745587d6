//! One record batch with a column of every Arrow type flightcache promises to round-trip.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::*;
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::*;
use half::f16;

const ROWS: usize = 4;

fn nulls(valid: [bool; ROWS]) -> Option<NullBuffer> {
    Some(NullBuffer::from(valid.to_vec()))
}

fn item(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, true))
}

/// Every column, with its name. All have 4 rows, and nulls wherever the type allows them.
pub fn every_type_columns() -> Vec<(&'static str, ArrayRef)> {
    let mut cols: Vec<(&'static str, ArrayRef)> = vec![
        ("null", Arc::new(NullArray::new(ROWS))),
        (
            "bool",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
            ])),
        ),
        (
            "i8",
            Arc::new(Int8Array::from(vec![
                Some(i8::MIN),
                None,
                Some(0),
                Some(i8::MAX),
            ])),
        ),
        (
            "i16",
            Arc::new(Int16Array::from(vec![
                Some(i16::MIN),
                None,
                Some(0),
                Some(i16::MAX),
            ])),
        ),
        (
            "i32",
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                None,
                Some(0),
                Some(i32::MAX),
            ])),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                None,
                Some(0),
                Some(i64::MAX),
            ])),
        ),
        (
            "u8",
            Arc::new(UInt8Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u8::MAX),
            ])),
        ),
        (
            "u16",
            Arc::new(UInt16Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u16::MAX),
            ])),
        ),
        (
            "u32",
            Arc::new(UInt32Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u32::MAX),
            ])),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u64::MAX),
            ])),
        ),
        (
            "f16",
            Arc::new(Float16Array::from(vec![
                Some(f16::from_f32(1.5)),
                None,
                Some(f16::NEG_INFINITY),
                Some(f16::MAX),
            ])),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![
                Some(1.5),
                None,
                Some(f32::NAN),
                Some(-0.0),
            ])),
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![
                Some(1e300),
                None,
                Some(f64::INFINITY),
                Some(f64::MIN_POSITIVE),
            ])),
        ),
        (
            "decimal32",
            Arc::new(
                Decimal32Array::from(vec![Some(12345), None, Some(-1), Some(999_999_999)])
                    .with_precision_and_scale(9, 2)
                    .unwrap(),
            ),
        ),
        (
            "decimal64",
            Arc::new(
                Decimal64Array::from(vec![Some(123_456_789), None, Some(-1), Some(0)])
                    .with_precision_and_scale(18, 4)
                    .unwrap(),
            ),
        ),
        (
            "decimal128",
            Arc::new(
                Decimal128Array::from(vec![
                    Some(i128::from(i64::MAX) * 1000),
                    None,
                    Some(-5),
                    Some(0),
                ])
                .with_precision_and_scale(38, 10)
                .unwrap(),
            ),
        ),
        (
            "decimal256",
            Arc::new(
                Decimal256Array::from(vec![
                    Some(i256::from_i128(i128::MAX)),
                    None,
                    Some(i256::MINUS_ONE),
                    Some(i256::ZERO),
                ])
                .with_precision_and_scale(76, 20)
                .unwrap(),
            ),
        ),
        (
            "date32",
            Arc::new(Date32Array::from(vec![
                Some(0),
                None,
                Some(19_000),
                Some(-1),
            ])),
        ),
        (
            "date64",
            Arc::new(Date64Array::from(vec![
                Some(0),
                None,
                Some(86_400_000),
                Some(-86_400_000),
            ])),
        ),
        (
            "time32s",
            Arc::new(Time32SecondArray::from(vec![
                Some(0),
                None,
                Some(3600),
                Some(86_399),
            ])),
        ),
        (
            "time32ms",
            Arc::new(Time32MillisecondArray::from(vec![
                Some(0),
                None,
                Some(1),
                Some(86_399_999),
            ])),
        ),
        (
            "time64us",
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(0),
                None,
                Some(1),
                Some(86_399_999_999),
            ])),
        ),
        (
            "time64ns",
            Arc::new(Time64NanosecondArray::from(vec![
                Some(0),
                None,
                Some(1),
                Some(86_399_999_999_999),
            ])),
        ),
        (
            "ts_s_utc",
            Arc::new(
                TimestampSecondArray::from(vec![Some(0), None, Some(1_700_000_000), Some(-1)])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "ts_ms_ny",
            Arc::new(
                TimestampMillisecondArray::from(vec![
                    Some(0),
                    None,
                    Some(1_700_000_000_000),
                    Some(1),
                ])
                .with_timezone("America/New_York"),
            ),
        ),
        (
            "ts_us_naive",
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(0),
                None,
                Some(1),
                Some(i64::MAX),
            ])),
        ),
        (
            "ts_ns_offset",
            Arc::new(
                TimestampNanosecondArray::from(vec![Some(0), None, Some(1), Some(-1)])
                    .with_timezone("+05:30"),
            ),
        ),
        (
            "dur_s",
            Arc::new(DurationSecondArray::from(vec![
                Some(0),
                None,
                Some(-1),
                Some(i64::MAX),
            ])),
        ),
        (
            "dur_ms",
            Arc::new(DurationMillisecondArray::from(vec![
                Some(0),
                None,
                Some(-1),
                Some(1),
            ])),
        ),
        (
            "dur_us",
            Arc::new(DurationMicrosecondArray::from(vec![
                Some(0),
                None,
                Some(-1),
                Some(1),
            ])),
        ),
        (
            "dur_ns",
            Arc::new(DurationNanosecondArray::from(vec![
                Some(0),
                None,
                Some(-1),
                Some(1),
            ])),
        ),
        (
            "interval_ym",
            Arc::new(IntervalYearMonthArray::from(vec![
                Some(0),
                None,
                Some(13),
                Some(-1),
            ])),
        ),
        (
            "interval_dt",
            Arc::new(IntervalDayTimeArray::from(vec![
                Some(IntervalDayTime::new(1, 2)),
                None,
                Some(IntervalDayTime::new(-1, 0)),
                Some(IntervalDayTime::ZERO),
            ])),
        ),
        (
            "interval_mdn",
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, 2, 3)),
                None,
                Some(IntervalMonthDayNano::new(-1, 0, i64::MAX)),
                Some(IntervalMonthDayNano::ZERO),
            ])),
        ),
        (
            "binary",
            Arc::new(BinaryArray::from_opt_vec(vec![
                Some(b"a"),
                None,
                Some(b""),
                Some(b"\x00\xff"),
            ])),
        ),
        (
            "large_binary",
            Arc::new(LargeBinaryArray::from_opt_vec(vec![
                Some(b"a"),
                None,
                Some(b""),
                Some(b"xyz"),
            ])),
        ),
        (
            "utf8",
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some(""),
                Some("données ✓"),
            ])),
        ),
        (
            "large_utf8",
            Arc::new(LargeStringArray::from(vec![
                Some("a"),
                None,
                Some(""),
                Some("z"),
            ])),
        ),
        (
            "binary_view",
            Arc::new(BinaryViewArray::from(vec![
                Some(b"short" as &[u8]),
                None,
                Some(b"a value longer than twelve bytes"),
                Some(b""),
            ])),
        ),
        (
            "utf8_view",
            Arc::new(StringViewArray::from(vec![
                Some("short"),
                None,
                Some("a string longer than twelve bytes"),
                Some(""),
            ])),
        ),
        (
            "fixed_binary",
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![
                        Some([1u8, 2, 3]),
                        None,
                        Some([0, 0, 0]),
                        Some([255, 254, 253]),
                    ]
                    .into_iter(),
                    3,
                )
                .unwrap(),
            ),
        ),
        (
            "list",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
                Some(vec![Some(4)]),
            ])),
        ),
        (
            "large_list",
            Arc::new(LargeListArray::from_iter_primitive::<Int64Type, _, _>(
                vec![
                    Some(vec![Some(1)]),
                    None,
                    Some(vec![Some(2), Some(3), None]),
                    Some(vec![]),
                ],
            )),
        ),
        (
            "fixed_list",
            Arc::new(
                FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                    vec![
                        Some(vec![Some(1.0), Some(2.0)]),
                        None,
                        Some(vec![None, Some(3.0)]),
                        Some(vec![Some(0.0), Some(0.0)]),
                    ],
                    2,
                ),
            ),
        ),
        (
            "list_view",
            Arc::new(ListViewArray::new(
                item(DataType::Int32),
                ScalarBuffer::from(vec![0, 2, 0, 3]),
                ScalarBuffer::from(vec![2, 0, 0, 2]),
                Arc::new(Int32Array::from(vec![
                    Some(1),
                    Some(2),
                    None,
                    Some(4),
                    Some(5),
                ])),
                nulls([true, false, true, true]),
            )),
        ),
        (
            "large_list_view",
            Arc::new(LargeListViewArray::new(
                item(DataType::Utf8),
                ScalarBuffer::from(vec![1i64, 0, 0, 0]),
                ScalarBuffer::from(vec![2i64, 0, 1, 3]),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
                nulls([true, false, true, true]),
            )),
        ),
        ("struct", struct_column()),
        ("map", map_column()),
        ("sparse_union", sparse_union_column()),
        ("dense_union", dense_union_column()),
        (
            "dict_utf8",
            Arc::new(
                vec![Some("red"), None, Some("blue"), Some("red")]
                    .into_iter()
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
        ),
        ("dict_null_values", dictionary_with_null_values()),
        ("list_of_dict", list_of_dictionary_column()),
        ("struct_of_dict", struct_of_dictionary_column()),
        (
            "run_end",
            Arc::new(
                RunArray::<Int32Type>::try_new(
                    &Int32Array::from(vec![2, 3, 4]),
                    &StringArray::from(vec![Some("run"), None, Some("end")]),
                )
                .unwrap(),
            ),
        ),
        ("nested", nested_column()),
        (
            "uuid",
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![Some([7u8; 16]), None, Some([0; 16]), Some([255; 16])].into_iter(),
                    16,
                )
                .unwrap(),
            ),
        ),
    ];
    cols.shrink_to_fit();
    cols
}

/// The batch: every column of [`every_type_columns`], field metadata marking `uuid` as the
/// canonical `arrow.uuid` extension type and `utf8` as a custom one, and schema metadata.
pub fn every_type_batch() -> RecordBatch {
    let columns = every_type_columns();
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| {
            let field = Field::new(*name, array.data_type().clone(), true);
            match *name {
                "uuid" => field.with_metadata(HashMap::from([
                    ("ARROW:extension:name".to_string(), "arrow.uuid".to_string()),
                    ("ARROW:extension:metadata".to_string(), String::new()),
                ])),
                "utf8" => field.with_metadata(HashMap::from([
                    (
                        "ARROW:extension:name".to_string(),
                        "example.label".to_string(),
                    ),
                    (
                        "ARROW:extension:metadata".to_string(),
                        "{\"lang\":\"fr\"}".to_string(),
                    ),
                ])),
                _ => field,
            }
        })
        .collect();
    let schema = Schema::new(fields).with_metadata(HashMap::from([
        ("origin".to_string(), "flightcache type matrix".to_string()),
        ("empty".to_string(), String::new()),
    ]));
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn struct_column() -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    Arc::new(
        StructArray::try_new(
            fields,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4)])),
                Arc::new(StringArray::from(vec![
                    Some("w"),
                    None,
                    Some("y"),
                    Some("z"),
                ])),
            ],
            nulls([true, false, true, true]),
        )
        .unwrap(),
    )
}

fn map_column() -> ArrayRef {
    let mut builder = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    builder.keys().append_value("one");
    builder.values().append_value(1);
    builder.keys().append_value("none");
    builder.values().append_null();
    builder.append(true).unwrap();
    builder.append(false).unwrap();
    builder.append(true).unwrap();
    builder.keys().append_value("k");
    builder.values().append_value(-7);
    builder.append(true).unwrap();
    Arc::new(builder.finish())
}

fn union_fields() -> UnionFields {
    UnionFields::try_new(
        vec![0, 5],
        vec![
            Field::new("int", DataType::Int32, true),
            Field::new("str", DataType::Utf8, true),
        ],
    )
    .unwrap()
}

fn sparse_union_column() -> ArrayRef {
    Arc::new(
        UnionArray::try_new(
            union_fields(),
            ScalarBuffer::from(vec![0i8, 5, 0, 5]),
            None,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, None, Some(9)])),
                Arc::new(StringArray::from(vec![None, Some("s"), None, None])),
            ],
        )
        .unwrap(),
    )
}

fn dense_union_column() -> ArrayRef {
    Arc::new(
        UnionArray::try_new(
            union_fields(),
            ScalarBuffer::from(vec![0i8, 5, 5, 0]),
            Some(ScalarBuffer::from(vec![0i32, 0, 1, 1])),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("s"), Some("t")])),
            ],
        )
        .unwrap(),
    )
}

fn dictionary_with_null_values() -> ArrayRef {
    let keys = Int8Array::from(vec![Some(0), Some(1), None, Some(0)]);
    let values = LargeStringArray::from(vec![Some("x"), None]);
    Arc::new(DictionaryArray::<Int8Type>::try_new(keys, Arc::new(values)).unwrap())
}

fn small_dictionary() -> DictionaryArray<Int16Type> {
    vec![Some("p"), Some("q"), None, Some("p")]
        .into_iter()
        .collect()
}

fn list_of_dictionary_column() -> ArrayRef {
    let values = small_dictionary();
    Arc::new(
        ListArray::try_new(
            item(values.data_type().clone()),
            OffsetBuffer::new(ScalarBuffer::from(vec![0, 2, 2, 3, 4])),
            Arc::new(values),
            nulls([true, false, true, true]),
        )
        .unwrap(),
    )
}

fn struct_of_dictionary_column() -> ArrayRef {
    let dict = small_dictionary();
    let fields = Fields::from(vec![
        Field::new("tag", dict.data_type().clone(), true),
        Field::new("n", DataType::UInt16, true),
    ]);
    Arc::new(
        StructArray::try_new(
            fields,
            vec![
                Arc::new(dict),
                Arc::new(UInt16Array::from(vec![Some(1), None, Some(3), Some(4)])),
            ],
            None,
        )
        .unwrap(),
    )
}

/// list<struct<tags: list<utf8>, score: float64>>: nesting of nesting.
fn nested_column() -> ArrayRef {
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1)]),
        None,
        Some(vec![]),
    ]);
    let tags_field = Field::new("tags", tags.data_type().clone(), true);
    let inner = StructArray::try_new(
        Fields::from(vec![
            tags_field,
            Field::new("score", DataType::Float64, true),
        ]),
        vec![
            Arc::new(tags),
            Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.0)])),
        ],
        Some(NullBuffer::from(vec![true, true, false])),
    )
    .unwrap();
    Arc::new(
        ListArray::try_new(
            item(inner.data_type().clone()),
            OffsetBuffer::new(ScalarBuffer::from(vec![0, 1, 1, 3, 3])),
            Arc::new(inner),
            nulls([true, false, true, true]),
        )
        .unwrap(),
    )
}
