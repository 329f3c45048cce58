//! Arrow record batches -> one `TaxiTrip` protobuf message per row (`proto/taxi_trip.proto`,
//! `--format protobuf`), the binary record format that ClickHouse reads too (`ProtobufSingle`).
//!
//! Unlike JSON, which carries any columns, a message has the fixed taxi trip layout: each column
//! is mapped to its field by name once per file (ignoring ASCII case, so 2024's `Airport_fee`
//! is `airport_fee`), and a file with a column the message has no field for, or without a column
//! of a field that has no NULL (everything but the `optional` fields), is refused before anything
//! is sent. Values are converted to the field's type: integers (and integral floats, as 2023 files
//! store `passenger_count`) to `uint32`, numbers to `double`, timestamps of any unit to whole
//! seconds (the table's `DateTime`; JSON's fraction is dropped by the consumer the same way). A
//! value the field cannot hold (a negative or fractional count, a NULL where the table has none)
//! stops the run with an error naming the column and the row; `--format json` sends such rows
//! and lets the consumer dead-letter them.
//!
//! One [`TaxiTrip`] is reused for every row (its flag string keeps its allocation) and prost
//! appends each message to the chunk's buffer.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use prost::Message;
use velostream_common::proto::TaxiTrip;

use super::column::{Kind, View, decode_dictionaries, nulls_of};
use super::slot::SLOT;
use super::{EncodeError, EncodeOptions, EncodedRows, find_column};

/// A field of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    VendorId,
    Pickup,
    Dropoff,
    PassengerCount,
    TripDistance,
    RatecodeId,
    StoreAndFwdFlag,
    PuLocationId,
    DoLocationId,
    PaymentType,
    FareAmount,
    Extra,
    MtaTax,
    TipAmount,
    TollsAmount,
    ImprovementSurcharge,
    TotalAmount,
    CongestionSurcharge,
    AirportFee,
    CbdCongestionFee,
}

/// The message's fields: name (= ClickHouse column), target, and whether it has a NULL
/// (`optional` in the schema; the timestamps are `optional` but required by the consumer).
const FIELDS: [(&str, Target, bool); 20] = [
    ("VendorID", Target::VendorId, false),
    ("tpep_pickup_datetime", Target::Pickup, false),
    ("tpep_dropoff_datetime", Target::Dropoff, false),
    ("passenger_count", Target::PassengerCount, true),
    ("trip_distance", Target::TripDistance, false),
    ("RatecodeID", Target::RatecodeId, true),
    ("store_and_fwd_flag", Target::StoreAndFwdFlag, true),
    ("PULocationID", Target::PuLocationId, false),
    ("DOLocationID", Target::DoLocationId, false),
    ("payment_type", Target::PaymentType, false),
    ("fare_amount", Target::FareAmount, false),
    ("extra", Target::Extra, false),
    ("mta_tax", Target::MtaTax, false),
    ("tip_amount", Target::TipAmount, false),
    ("tolls_amount", Target::TollsAmount, false),
    ("improvement_surcharge", Target::ImprovementSurcharge, false),
    ("total_amount", Target::TotalAmount, false),
    ("congestion_surcharge", Target::CongestionSurcharge, true),
    ("airport_fee", Target::AirportFee, true),
    ("cbd_congestion_fee", Target::CbdCongestionFee, true),
];

/// What a field is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Count,
    Seconds,
    Number,
    Text,
}

impl Target {
    fn class(self) -> Class {
        match self {
            Self::VendorId
            | Self::PassengerCount
            | Self::RatecodeId
            | Self::PuLocationId
            | Self::DoLocationId
            | Self::PaymentType => Class::Count,
            Self::Pickup | Self::Dropoff => Class::Seconds,
            Self::StoreAndFwdFlag => Class::Text,
            _ => Class::Number,
        }
    }
}

/// One column feeding one field.
#[derive(Debug)]
struct Mapped {
    column: usize,
    target: Target,
    nullable: bool,
    /// Timestamps: units per second of the column.
    per_second: i64,
    /// Decimals: the scale.
    scale: i8,
}

/// Encodes the batches of one file (one schema) into `TaxiTrip` messages.
pub struct ProtobufEncoder {
    mapped: Vec<Mapped>,
    names: Vec<String>,
    /// The key column and how its value is written (as the JSON encoder does, so keys, and so
    /// partitions, are the same in both formats).
    key: Option<(usize, Kind)>,
    shift_secs: i64,
    message: TaxiTrip,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ProtobufEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufEncoder")
            .field("fields", &self.mapped.len())
            .field("key", &self.key.as_ref().map(|(k, _)| k))
            .finish()
    }
}

fn accepts(class: Class, data_type: &DataType) -> bool {
    use DataType as D;
    let integer = matches!(
        data_type,
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64
    );
    let float = matches!(data_type, D::Float16 | D::Float32 | D::Float64);
    match class {
        Class::Count => integer || float || matches!(data_type, D::Null),
        Class::Number => integer || float || matches!(data_type, D::Decimal128(..) | D::Null),
        Class::Seconds => matches!(data_type, D::Timestamp(..) | D::Null),
        Class::Text => matches!(
            data_type,
            D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Dictionary(..) | D::Null
        ),
    }
}

impl ProtobufEncoder {
    /// An encoder for batches of `schema`: fails when a column has no field, a field without a
    /// NULL has no column, a column's type does not fit its field, or the key column is missing.
    pub fn new(schema: &Schema, options: &EncodeOptions) -> Result<Self, EncodeError> {
        let mut mapped = Vec::new();
        let mut unknown = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let Some(&(name, target, nullable)) = FIELDS
                .iter()
                .find(|(name, ..)| name.eq_ignore_ascii_case(field.name()))
            else {
                unknown.push(field.name().clone());
                continue;
            };
            if !accepts(target.class(), field.data_type()) {
                return Err(EncodeError::ProtobufType {
                    column: field.name().clone(),
                    data_type: field.data_type().clone(),
                    field: name,
                });
            }
            let per_second = match field.data_type() {
                DataType::Timestamp(TimeUnit::Second, _) => 1,
                DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000,
                DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000_000,
                DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000_000,
                _ => 1,
            };
            let scale = match field.data_type() {
                DataType::Decimal128(_, s) => *s,
                _ => 0,
            };
            mapped.push(Mapped {
                column: i,
                target,
                nullable,
                per_second,
                scale,
            });
        }
        if !unknown.is_empty() {
            return Err(EncodeError::NoProtobufField {
                columns: unknown.join(", "),
            });
        }
        let missing: Vec<&str> = FIELDS
            .iter()
            .filter(|(_, target, nullable)| {
                !nullable && !mapped.iter().any(|m| m.target == *target)
            })
            .map(|(name, ..)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(EncodeError::ProtobufMissing {
                columns: missing.join(", "),
            });
        }
        let key = match &options.key_column {
            None => None,
            Some(name) => {
                let k = find_column(schema, name).ok_or_else(|| EncodeError::MissingKeyColumn {
                    column: name.clone(),
                    available: schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
                let data_type = schema.field(k).data_type();
                let kind =
                    Kind::for_type(data_type).ok_or_else(|| EncodeError::UnsupportedType {
                        column: schema.field(k).name().clone(),
                        data_type: data_type.clone(),
                    })?;
                Some((k, kind))
            }
        };
        let mut encoder = Self {
            mapped,
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            key,
            shift_secs: 0,
            message: TaxiTrip::default(),
            scratch: Vec::new(),
        };
        encoder.set_time_shift_secs(options.time_shift_secs);
        Ok(encoder)
    }

    /// Sets the shift added to timestamps from now on.
    pub fn set_time_shift_secs(&mut self, secs: i64) {
        self.shift_secs = secs;
        if let Some((_, Kind::Timestamp(f))) = &mut self.key {
            f.set_shift_secs(secs);
        }
    }

    /// Appends every row of `batch` to `out`; fails on a value its field cannot hold.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        out: &mut EncodedRows,
    ) -> Result<(), EncodeError> {
        let decoded;
        let arrays = if batch
            .columns()
            .iter()
            .any(|c| matches!(c.data_type(), DataType::Dictionary(..)))
        {
            decoded = decode_dictionaries(batch);
            decoded.as_slice()
        } else {
            batch.columns()
        };
        let views: Vec<(View<'_>, _)> = arrays.iter().map(|a| (View::of(a), nulls_of(a))).collect();
        if let Some((_, kind)) = &mut self.key {
            kind.reset();
        }
        out.keys_apart = true;
        out.data.truncate(out.len_bytes);
        out.ends.reserve(batch.num_rows());
        for row in 0..batch.num_rows() {
            self.fill(&views, row)?;
            self.message
                .encode(&mut out.data)
                .unwrap_or_else(|_| unreachable!("a Vec grows to any size"));
            out.ends.push(out.data.len());
            if let Some((k, kind)) = &mut self.key {
                let (view, nulls) = &views[*k];
                if nulls.is_some_and(|n| n.is_null(row)) {
                    out.keys.push(None);
                    continue;
                }
                let start = out.key_data.len();
                out.key_data.resize(start + SLOT, 0);
                let end = kind.write(view, row, &mut out.key_data, start, SLOT, &mut self.scratch);
                // String keys lose their quotes, as in the JSON encoder.
                let q = usize::from(kind.is_string());
                out.keys.push(Some((start + q, end - q)));
                out.key_data.truncate(end - q);
            }
        }
        out.len_bytes = out.data.len();
        Ok(())
    }

    /// Sets every field of the reused message from row `row`.
    fn fill(
        &mut self,
        views: &[(View<'_>, Option<&arrow::buffer::NullBuffer>)],
        row: usize,
    ) -> Result<(), EncodeError> {
        let m = &mut self.message;
        for map in &self.mapped {
            let (view, nulls) = &views[map.column];
            let null = matches!(view, View::Null) || nulls.is_some_and(|n| n.is_null(row));
            let bad = |reason: &str| EncodeError::ProtobufValue {
                column: self.names[map.column].clone(),
                row,
                reason: reason.to_string(),
            };
            if null {
                if !map.nullable && !matches!(map.target, Target::Pickup | Target::Dropoff) {
                    return Err(bad("is null, and its field has no NULL"));
                }
                match map.target {
                    Target::Pickup => m.tpep_pickup_datetime = None,
                    Target::Dropoff => m.tpep_dropoff_datetime = None,
                    Target::PassengerCount => m.passenger_count = None,
                    Target::RatecodeId => m.ratecode_id = None,
                    Target::StoreAndFwdFlag => m.store_and_fwd_flag = None,
                    Target::CongestionSurcharge => m.congestion_surcharge = None,
                    Target::AirportFee => m.airport_fee = None,
                    Target::CbdCongestionFee => m.cbd_congestion_fee = None,
                    _ => {}
                }
                continue;
            }
            match map.target.class() {
                Class::Count => {
                    let v = count(view, row).ok_or_else(|| {
                        bad("is not a whole number from 0 to 4294967295, which its uint32 field needs")
                    })?;
                    match map.target {
                        Target::VendorId => m.vendor_id = v,
                        Target::PassengerCount => m.passenger_count = Some(v),
                        Target::RatecodeId => m.ratecode_id = Some(v),
                        Target::PuLocationId => m.pu_location_id = v,
                        Target::DoLocationId => m.do_location_id = v,
                        _ => m.payment_type = v,
                    }
                }
                Class::Number => {
                    let v = number(view, row, map.scale);
                    if !v.is_finite() {
                        // JSON writes NaN and infinities as null: the same here.
                        if !map.nullable {
                            return Err(bad("is not a finite number, and its field has no NULL"));
                        }
                        match map.target {
                            Target::CongestionSurcharge => m.congestion_surcharge = None,
                            Target::AirportFee => m.airport_fee = None,
                            _ => m.cbd_congestion_fee = None,
                        }
                        continue;
                    }
                    match map.target {
                        Target::TripDistance => m.trip_distance = v,
                        Target::FareAmount => m.fare_amount = v,
                        Target::Extra => m.extra = v,
                        Target::MtaTax => m.mta_tax = v,
                        Target::TipAmount => m.tip_amount = v,
                        Target::TollsAmount => m.tolls_amount = v,
                        Target::ImprovementSurcharge => m.improvement_surcharge = v,
                        Target::TotalAmount => m.total_amount = v,
                        Target::CongestionSurcharge => m.congestion_surcharge = Some(v),
                        Target::AirportFee => m.airport_fee = Some(v),
                        _ => m.cbd_congestion_fee = Some(v),
                    }
                }
                Class::Seconds => {
                    let View::Ts(values) = view else {
                        unreachable!("a Seconds field is mapped from a timestamp column only")
                    };
                    let secs = values[row]
                        .div_euclid(map.per_second)
                        .saturating_add(self.shift_secs);
                    if map.target == Target::Pickup {
                        m.tpep_pickup_datetime = Some(secs);
                    } else {
                        m.tpep_dropoff_datetime = Some(secs);
                    }
                }
                Class::Text => {
                    let text = match view {
                        View::Str(a) => a.value(row),
                        View::LargeStr(a) => a.value(row),
                        View::StrView(a) => a.value(row),
                        _ => unreachable!("a Text field is mapped from a string column only"),
                    };
                    match &mut m.store_and_fwd_flag {
                        Some(s) => {
                            s.clear();
                            s.push_str(text);
                        }
                        None => m.store_and_fwd_flag = Some(text.to_owned()),
                    }
                }
            }
        }
        Ok(())
    }
}

/// An integer (or integral float) value as `uint32`, `None` when it does not fit.
fn count(view: &View<'_>, row: usize) -> Option<u32> {
    let float =
        |x: f64| (x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&x)).then_some(x as u32);
    match view {
        View::I8(v) => u32::try_from(v[row]).ok(),
        View::I16(v) => u32::try_from(v[row]).ok(),
        View::I32(v) => u32::try_from(v[row]).ok(),
        View::I64(v) => u32::try_from(v[row]).ok(),
        View::U8(v) => Some(u32::from(v[row])),
        View::U16(v) => Some(u32::from(v[row])),
        View::U32(v) => Some(v[row]),
        View::U64(v) => u32::try_from(v[row]).ok(),
        View::F16(v) => float(f64::from(v[row].to_f32())),
        View::F32(v) => float(f64::from(v[row])),
        View::F64(v) => float(v[row]),
        _ => None,
    }
}

/// A numeric value as `double`.
fn number(view: &View<'_>, row: usize, scale: i8) -> f64 {
    match view {
        View::I8(v) => f64::from(v[row]),
        View::I16(v) => f64::from(v[row]),
        View::I32(v) => f64::from(v[row]),
        View::I64(v) => v[row] as f64,
        View::U8(v) => f64::from(v[row]),
        View::U16(v) => f64::from(v[row]),
        View::U32(v) => f64::from(v[row]),
        View::U64(v) => v[row] as f64,
        View::F16(v) => f64::from(v[row].to_f32()),
        View::F32(v) => f64::from(v[row]),
        View::F64(v) => v[row],
        // As the JSON encoder writes it (`12.30`) and the consumer parses it back: the decimal
        // text's nearest double.
        View::Dec(v) => decimal(v[row], scale),
        _ => 0.0,
    }
}

fn decimal(unscaled: i128, scale: i8) -> f64 {
    let mut text = Vec::new();
    super::number::write_decimal(&mut text, unscaled, scale);
    std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use serde_json::Value;

    use super::super::{Encoder, RecordFormat, RowEncoder};
    use super::*;
    use crate::input::{self, SchemaCheck};

    fn options(format: RecordFormat) -> EncodeOptions {
        EncodeOptions {
            key_column: Some("PULocationID".into()),
            time_shift_secs: 7,
            format,
        }
    }

    /// The seconds of a JSON timestamp string, as the consumer reads it (fraction dropped).
    fn seconds(text: &str) -> i64 {
        let t = text.as_bytes();
        let n = |a: usize, b: usize| text[a..b].parse::<i64>().unwrap();
        assert_eq!(t[10], b' ');
        let (y, m, d) = (n(0, 4), n(5, 7) as u32, n(8, 10) as u32);
        // Days from civil (Howard Hinnant), as the consumer computes it.
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = i64::from((m + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)
    }

    #[test]
    fn every_sample_row_carries_the_json_rows_values_and_key() {
        let path = velostream_testkit::taxi_sample();
        let json_options = options(RecordFormat::Json);
        let file = input::open(&path, SchemaCheck::Taxi, &json_options).unwrap();
        let mut json = RowEncoder::new(&file.schema, &json_options).unwrap();
        let mut proto = Encoder::new(&file.schema, &options(RecordFormat::Protobuf)).unwrap();
        let (mut a, mut b) = (EncodedRows::default(), EncodedRows::default());
        let mut rows = 0;
        for batch in file.reader(8192).unwrap() {
            let batch = batch.unwrap();
            a.clear();
            b.clear();
            json.encode(&batch, &mut a);
            proto.encode(&batch, &mut b).unwrap();
            assert_eq!(a.len(), b.len());
            for i in 0..a.len() {
                assert_eq!(a.key(i), b.key(i), "row {i}");
                let j: Value = serde_json::from_slice(a.row(i)).unwrap();
                let p = TaxiTrip::decode(b.row(i)).unwrap();
                let f = |k: &str| j[k].as_f64();
                let u = |k: &str| j[k].as_f64().map(|v| v as u32);
                assert_eq!(Some(p.vendor_id), u("VendorID"));
                assert_eq!(
                    p.tpep_pickup_datetime,
                    j["tpep_pickup_datetime"].as_str().map(seconds)
                );
                assert_eq!(
                    p.tpep_dropoff_datetime,
                    j["tpep_dropoff_datetime"].as_str().map(seconds)
                );
                assert_eq!(p.passenger_count, u("passenger_count"));
                assert_eq!(p.ratecode_id, u("RatecodeID"));
                assert_eq!(
                    p.store_and_fwd_flag.as_deref(),
                    j["store_and_fwd_flag"].as_str()
                );
                assert_eq!(
                    (Some(p.pu_location_id), Some(p.do_location_id)),
                    (u("PULocationID"), u("DOLocationID"))
                );
                assert_eq!(Some(p.payment_type), u("payment_type"));
                for (have, key) in [
                    (p.trip_distance, "trip_distance"),
                    (p.fare_amount, "fare_amount"),
                    (p.extra, "extra"),
                    (p.mta_tax, "mta_tax"),
                    (p.tip_amount, "tip_amount"),
                    (p.tolls_amount, "tolls_amount"),
                    (p.improvement_surcharge, "improvement_surcharge"),
                    (p.total_amount, "total_amount"),
                ] {
                    assert_eq!(Some(have), f(key), "{key}");
                }
                assert_eq!(p.congestion_surcharge, f("congestion_surcharge"));
                assert_eq!(p.airport_fee, f("airport_fee"));
                assert_eq!(p.cbd_congestion_fee, None);
                rows += 1;
            }
        }
        assert_eq!(rows, 100_000);
        assert!(b.bytes() < a.bytes() / 2, "{} vs {}", b.bytes(), a.bytes());
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn minimal(extra: Vec<(&'static str, ArrayRef)>) -> RecordBatch {
        let ts = || Arc::new(TimestampMicrosecondArray::from(vec![1_500_000i64])) as ArrayRef;
        let int = || Arc::new(Int64Array::from(vec![1i64])) as ArrayRef;
        let num = || Arc::new(Float64Array::from(vec![2.5])) as ArrayRef;
        let mut columns = vec![
            ("VendorID", int()),
            ("tpep_pickup_datetime", ts()),
            ("tpep_dropoff_datetime", ts()),
            ("trip_distance", num()),
            ("PULocationID", int()),
            ("DOLocationID", int()),
            ("payment_type", int()),
            ("fare_amount", num()),
            ("extra", num()),
            ("mta_tax", num()),
            ("tip_amount", num()),
            ("tolls_amount", num()),
            ("improvement_surcharge", num()),
            ("total_amount", num()),
        ];
        columns.extend(extra);
        batch(columns)
    }

    #[test]
    fn the_2025_fee_is_sent_and_optional_columns_may_be_absent() {
        let b = minimal(vec![(
            "cbd_congestion_fee",
            Arc::new(Float64Array::from(vec![0.75])) as ArrayRef,
        )]);
        let mut e = ProtobufEncoder::new(&b.schema(), &options(RecordFormat::Protobuf)).unwrap();
        let mut out = EncodedRows::default();
        e.encode(&b, &mut out).unwrap();
        let p = TaxiTrip::decode(out.row(0)).unwrap();
        assert_eq!(p.cbd_congestion_fee, Some(0.75));
        assert_eq!(p.airport_fee, None);
        assert_eq!(
            p.tpep_pickup_datetime,
            Some(1 + 7),
            "µs to whole seconds, shifted"
        );
        assert_eq!(out.key(0), Some(&b"1"[..]));
    }

    #[test]
    fn files_and_values_protobuf_cannot_carry_are_refused_with_the_column() {
        let opts = options(RecordFormat::Protobuf);
        let b = minimal(vec![(
            "zone",
            Arc::new(StringArray::from(vec!["JFK"])) as ArrayRef,
        )]);
        let err = ProtobufEncoder::new(&b.schema(), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zone") && err.contains("--format json"),
            "{err}"
        );

        let b = batch(vec![(
            "PULocationID",
            Arc::new(Int64Array::from(vec![1i64])) as ArrayRef,
        )]);
        let err = ProtobufEncoder::new(&b.schema(), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VendorID") && err.contains("tpep_pickup_datetime"),
            "{err}"
        );

        let b = minimal(vec![(
            "passenger_count",
            Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
        )]);
        let mut e = ProtobufEncoder::new(&b.schema(), &opts).unwrap();
        let err = e
            .encode(&b, &mut EncodedRows::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("passenger_count") && err.contains("row 0"),
            "{err}"
        );

        let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
        for (name, array) in minimal(vec![])
            .schema()
            .fields()
            .iter()
            .zip(minimal(vec![]).columns())
        {
            let array = if name.name() == "fare_amount" {
                Arc::new(Float64Array::from(vec![None])) as ArrayRef
            } else {
                array.clone()
            };
            columns.push((Box::leak(name.name().clone().into_boxed_str()), array));
        }
        let b = batch(columns);
        let mut e = ProtobufEncoder::new(&b.schema(), &opts).unwrap();
        let err = e
            .encode(&b, &mut EncodedRows::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("fare_amount") && err.contains("null"), "{err}");
    }
}
