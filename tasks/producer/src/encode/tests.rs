//! Encoder tests: small Parquet files written with the arrow writer in every shape the TLC files
//! drift through, read back through [`crate::input`], encoded, and compared as JSON.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float32Array,
    Float64Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Int8Type, Schema};
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};

use super::*;
use crate::input::{self, SchemaCheck};

/// Writes `columns` to a Parquet file, reads it back through the input module and encodes it.
fn roundtrip(
    columns: Vec<(&str, ArrayRef)>,
    options: &EncodeOptions,
) -> Vec<(Option<String>, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let file = input::open(&path, SchemaCheck::Any, options).unwrap();
    let mut encoder = RowEncoder::new(&file.schema, options).unwrap();
    let mut out = EncodedRows::default();
    for batch in file.reader(1024).unwrap() {
        encoder.encode(&batch.unwrap(), &mut out);
    }
    out.iter()
        .map(|(key, row)| {
            let key = key.map(|k| String::from_utf8(k.to_vec()).unwrap());
            let text = std::str::from_utf8(row).unwrap();
            (
                key,
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")),
            )
        })
        .collect()
}

fn rows(columns: Vec<(&str, ArrayRef)>) -> Vec<Value> {
    roundtrip(columns, &EncodeOptions::default())
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// 2023-01-01 00:32:10 UTC in seconds.
const T0: i64 = 1_672_533_130;

#[test]
fn tlc_2023_layout_int64_ids_double_counts_ns_timestamps() {
    let out = rows(vec![
        (
            "VendorID",
            Arc::new(Int64Array::from(vec![2, 1])) as ArrayRef,
        ),
        (
            "tpep_pickup_datetime",
            Arc::new(TimestampNanosecondArray::from(vec![
                T0 * 1_000_000_000,
                (T0 + 1) * 1_000_000_000,
            ])),
        ),
        (
            "passenger_count",
            Arc::new(Float64Array::from(vec![Some(1.0), None])),
        ),
        (
            "trip_distance",
            Arc::new(Float64Array::from(vec![0.97, 12.3])),
        ),
        (
            "store_and_fwd_flag",
            Arc::new(StringArray::from(vec!["N", "Y"])),
        ),
        ("PULocationID", Arc::new(Int64Array::from(vec![161, 43]))),
        ("airport_fee", Arc::new(Float64Array::from(vec![0.0, 1.25]))),
    ]);
    assert_eq!(
        out,
        vec![
            json!({"VendorID": 2, "tpep_pickup_datetime": "2023-01-01 00:32:10", "passenger_count": 1.0,
                   "trip_distance": 0.97, "store_and_fwd_flag": "N", "PULocationID": 161, "airport_fee": 0.0}),
            json!({"VendorID": 1, "tpep_pickup_datetime": "2023-01-01 00:32:11", "passenger_count": null,
                   "trip_distance": 12.3, "store_and_fwd_flag": "Y", "PULocationID": 43, "airport_fee": 1.25}),
        ]
    );
}

#[test]
fn tlc_2024_layout_int32_ids_int64_counts_large_strings_capitalised_fee() {
    let out = rows(vec![
        (
            "VendorID",
            Arc::new(Int32Array::from(vec![2, 2])) as ArrayRef,
        ),
        (
            "tpep_pickup_datetime",
            Arc::new(TimestampMicrosecondArray::from(vec![
                T0 * 1_000_000,
                T0 * 1_000_000 + 500_000,
            ])),
        ),
        (
            "passenger_count",
            Arc::new(Int64Array::from(vec![None, Some(3)])),
        ),
        (
            "RatecodeID",
            Arc::new(Int64Array::from(vec![Some(1), None])),
        ),
        (
            "store_and_fwd_flag",
            Arc::new(LargeStringArray::from(vec![Some("N"), None])),
        ),
        ("PULocationID", Arc::new(Int32Array::from(vec![132, 1]))),
        (
            "Airport_fee",
            Arc::new(Float64Array::from(vec![Some(1.75), None])),
        ),
    ]);
    assert_eq!(
        out,
        vec![
            json!({"VendorID": 2, "tpep_pickup_datetime": "2023-01-01 00:32:10", "passenger_count": null,
                   "RatecodeID": 1, "store_and_fwd_flag": "N", "PULocationID": 132, "Airport_fee": 1.75}),
            json!({"VendorID": 2, "tpep_pickup_datetime": "2023-01-01 00:32:10.500000", "passenger_count": 3,
                   "RatecodeID": null, "store_and_fwd_flag": null, "PULocationID": 1, "Airport_fee": null}),
        ]
    );
    // Capitalisation is kept exactly as in the file.
    assert!(out[0].as_object().unwrap().contains_key("Airport_fee"));
}

#[test]
fn tlc_2025_layout_adds_cbd_congestion_fee() {
    let out = rows(vec![
        ("VendorID", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
        (
            "cbd_congestion_fee",
            Arc::new(Float64Array::from(vec![0.75])),
        ),
    ]);
    assert_eq!(
        out,
        vec![json!({"VendorID": 1, "cbd_congestion_fee": 0.75})]
    );
}

#[test]
fn lower_cased_copies_keep_their_names() {
    let out = rows(vec![
        ("vendorid", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("pulocationid", Arc::new(Int64Array::from(vec![7]))),
        (
            "airport_fee",
            Arc::new(Float64Array::from(vec![Option::<f64>::None])),
        ),
    ]);
    assert_eq!(
        out,
        vec![json!({"vendorid": 1, "pulocationid": 7, "airport_fee": null})]
    );
}

#[test]
fn timestamps_of_every_unit_and_time_zone_are_utc_strings() {
    let tz = Arc::<str>::from("America/New_York");
    let out = rows(
        vec![
            (
                "s",
                Arc::new(TimestampSecondArray::from(vec![T0])) as ArrayRef,
            ),
            (
                "ms",
                Arc::new(TimestampMillisecondArray::from(vec![T0 * 1_000 + 7])),
            ),
            (
                "us",
                Arc::new(TimestampMicrosecondArray::from(vec![T0 * 1_000_000])),
            ),
            (
                "ns",
                Arc::new(TimestampNanosecondArray::from(vec![
                    T0 * 1_000_000_000 + 1_000,
                ])),
            ),
            (
                "us_tz",
                Arc::new(TimestampMicrosecondArray::from(vec![T0 * 1_000_000]).with_timezone(tz)),
            ),
            (
                "ns_utc",
                Arc::new(
                    TimestampNanosecondArray::from(vec![Some(T0 * 1_000_000_000), None])
                        .with_timezone("UTC"),
                ),
            ),
            ("date", Arc::new(Date32Array::from(vec![19_358]))),
        ]
        .into_iter()
        .map(|(n, a)| (n, a.slice(0, 1)))
        .collect(),
    );
    assert_eq!(
        out,
        vec![json!({
            "s": "2023-01-01 00:32:10",
            "ms": "2023-01-01 00:32:10.007000",
            "us": "2023-01-01 00:32:10",
            "ns": "2023-01-01 00:32:10.000001",
            "us_tz": "2023-01-01 00:32:10",
            "ns_utc": "2023-01-01 00:32:10",
            "date": "2023-01-01",
        })]
    );
}

#[test]
fn other_types_and_non_finite_floats() {
    let dict: DictionaryArray<Int8Type> = vec!["CASH", "CARD", "CASH"].into_iter().collect();
    let out = rows(vec![
        (
            "b",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])) as ArrayRef,
        ),
        (
            "f",
            Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY, -2.5])),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![0.1, f32::NEG_INFINITY, 3.0])),
        ),
        ("u8", Arc::new(UInt8Array::from(vec![0, 255, 7]))),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(1230), Some(-5), None])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        ("dict", Arc::new(dict)),
        (
            "view",
            Arc::new(StringViewArray::from(vec!["a \"q\"", "é", "line\nbreak"])),
        ),
    ]);
    assert_eq!(
        out,
        vec![
            json!({"b": true, "f": null, "f32": 0.1, "u8": 0, "dec": 12.30, "dict": "CASH", "view": "a \"q\""}),
            json!({"b": false, "f": null, "f32": null, "u8": 255, "dec": -0.05, "dict": "CARD", "view": "é"}),
            json!({"b": null, "f": -2.5, "f32": 3.0, "u8": 7, "dec": null, "dict": "CASH", "view": "line\nbreak"}),
        ]
    );
}

#[test]
fn keys_come_from_the_key_column_case_insensitively() {
    let options = EncodeOptions {
        key_column: Some("pulocationid".into()),
        ..Default::default()
    };
    let out = roundtrip(
        vec![
            (
                "PULocationID",
                Arc::new(Int32Array::from(vec![Some(161), None])) as ArrayRef,
            ),
            ("zone", Arc::new(StringArray::from(vec!["a", "b"]))),
        ],
        &options,
    );
    assert_eq!(out[0].0.as_deref(), Some("161"));
    assert_eq!(out[1].0, None, "a null key value sends no key");

    let options = EncodeOptions {
        key_column: Some("zone".into()),
        ..Default::default()
    };
    let out = roundtrip(
        vec![(
            "zone",
            Arc::new(StringArray::from(vec!["JFK Airport"])) as ArrayRef,
        )],
        &options,
    );
    assert_eq!(
        out[0].0.as_deref(),
        Some("JFK Airport"),
        "string keys lose their quotes"
    );

    let schema = Schema::new(vec![Field::new("x", DataType::Int32, false)]);
    let err = RowEncoder::new(
        &schema,
        &EncodeOptions {
            key_column: Some("PULocationID".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the key column `PULocationID` is not in the file (its columns: x)"
    );
}

#[test]
fn time_shift_moves_timestamps_only() {
    let options = EncodeOptions {
        key_column: None,
        time_shift_secs: 3,
        ..Default::default()
    };
    let out = roundtrip(
        vec![
            (
                "t",
                Arc::new(TimestampNanosecondArray::from(vec![T0 * 1_000_000_000])) as ArrayRef,
            ),
            ("d", Arc::new(Date32Array::from(vec![19_358]))),
            ("n", Arc::new(Int64Array::from(vec![5]))),
        ],
        &options,
    );
    assert_eq!(
        out[0].1,
        json!({"t": "2023-01-01 00:32:13", "d": "2023-01-01", "n": 5})
    );
}

#[test]
fn many_chunks_keep_rows_and_keys_aligned() {
    let n = 10_000i64;
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| "x".repeat((i % 7) as usize)),
            )),
        ),
    ])
    .unwrap();
    let options = EncodeOptions {
        key_column: Some("id".into()),
        ..Default::default()
    };
    let mut encoder = RowEncoder::new(&batch.schema(), &options).unwrap();
    let mut out = EncodedRows::default();
    encoder.encode(&batch, &mut out);
    encoder.encode(&batch.slice(5, 3), &mut out);
    assert_eq!(out.len(), n as usize + 3);
    for (i, (key, row)) in out.iter().enumerate() {
        let id = if i < n as usize {
            i as i64
        } else {
            i as i64 - n + 5
        };
        let v: Value = serde_json::from_slice(row).unwrap();
        assert_eq!(v, json!({"id": id, "s": "x".repeat((id % 7) as usize)}));
        assert_eq!(key.unwrap(), id.to_string().as_bytes());
    }
    assert_eq!(out.bytes(), out.iter().map(|(_, r)| r.len()).sum::<usize>());
    out.clear();
    assert!(out.is_empty());
}

#[test]
fn unsupported_types_are_named() {
    let schema = Schema::new(vec![Field::new("blob", DataType::Binary, true)]);
    let err = RowEncoder::new(&schema, &EncodeOptions::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("column `blob` has type Binary"),
        "{err}"
    );
}

#[test]
fn long_values_and_names_spill_without_losing_order() {
    let n = 3_000usize;
    let long_name = "a_column_name_much_longer_than_one_slot_of_thirty_two_bytes";
    let text = |i: usize| {
        if i.is_multiple_of(3) {
            format!("short{i}")
        } else {
            format!("a long value number {i} that does not fit in a slot \"quoted\"")
        }
    };
    let batch = RecordBatch::try_from_iter(vec![
        (
            long_name,
            Arc::new(StringArray::from_iter_values((0..n).map(text))) as ArrayRef,
        ),
        (
            "f",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| i as f64 / 3.0),
            )),
        ),
        (
            "big",
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| i64::MIN + i as i64),
            )),
        ),
    ])
    .unwrap();
    let options = EncodeOptions {
        key_column: Some(long_name.into()),
        ..Default::default()
    };
    let mut encoder = RowEncoder::new(&batch.schema(), &options).unwrap();
    let mut out = EncodedRows::default();
    encoder.encode(&batch, &mut out);
    assert_eq!(out.len(), n);
    for (i, (key, row)) in out.iter().enumerate() {
        let mut v: Value = serde_json::from_slice(row).unwrap();
        // serde_json's default float parsing may be off by an ulp: check the text with std's.
        let row_text = std::str::from_utf8(row).unwrap();
        let f_text = row_text
            .split("\"f\":")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(f_text.parse::<f64>().unwrap(), i as f64 / 3.0, "{f_text}");
        v["f"] = Value::Null;
        assert_eq!(
            v,
            json!({long_name: text(i), "f": null, "big": i64::MIN + i as i64})
        );
        // String keys are the raw JSON string content (escapes kept).
        let expected_key = serde_json::to_string(&text(i)).unwrap();
        assert_eq!(
            key.unwrap(),
            &expected_key.as_bytes()[1..expected_key.len() - 1]
        );
    }
}

#[test]
fn cached_float_texts_match_fresh_ones() {
    // Few distinct values, in an order that hits the last-value and the table caches, with
    // signed zeros, non-finite values, ryu-path values and nulls mixed in.
    let palette = [
        0.0,
        -0.0,
        1.0,
        2.5,
        14.35,
        0.125,
        1.0 / 3.0,
        f64::NAN,
        1e300,
        -7.77,
        70.0,
        0.97,
    ];
    let mut state = 7u64;
    let values: Vec<Option<f64>> = (0..50_000)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            if i % 97 == 0 {
                None
            } else if i % 3 == 0 {
                // Runs of the same value.
                Some(palette[(i / 30) % palette.len()])
            } else {
                Some(palette[(state >> 33) as usize % palette.len()])
            }
        })
        .collect();
    let batch = RecordBatch::try_from_iter(vec![(
        "f",
        Arc::new(Float64Array::from(values.clone())) as ArrayRef,
    )])
    .unwrap();
    let mut encoder = RowEncoder::new(&batch.schema(), &EncodeOptions::default()).unwrap();
    let mut out = EncodedRows::default();
    // Two calls: the caches must not carry output positions from one buffer to another.
    encoder.encode(&batch.slice(0, 20_000), &mut out);
    let mut second = EncodedRows::default();
    encoder.encode(&batch.slice(20_000, 30_000), &mut second);
    let rows = out.iter().chain(second.iter()).map(|(_, r)| r);
    for (row, value) in rows.zip(&values) {
        let mut expected = b"{\"f\":".to_vec();
        match value {
            None => expected.extend_from_slice(b"null"),
            Some(x) if !x.is_finite() => expected.extend_from_slice(b"null"),
            Some(x) => number::write_f64(&mut expected, *x),
        }
        expected.push(b'}');
        assert_eq!(
            std::str::from_utf8(row).unwrap(),
            std::str::from_utf8(&expected).unwrap()
        );
    }
}
