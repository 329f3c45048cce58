//! A decoded row written straight into ClickHouse's RowBinary format, in the column order of
//! [`COLUMNS`], so a batch is a few byte buffers (one per Kafka partition, already in the
//! table's sort order) that the clickhouse crate streams as `INSERT ... FORMAT RowBinary`.
//!
//! Compared with `Insert<TaxiRow>` (serde through the crate's serializer, on the inserter's
//! thread) this halves the memory a buffered row takes and takes the per-row serialization off
//! the critical path; [`verify_table`](crate::sink::schema::verify_table) checks at start-up that
//! the table's column types are exactly [`COLUMNS`]' (RowBinary is positional and untyped).
//! `tests/happy_path.rs` checks that both ways store identical rows.

use super::trip::Trip;

/// The columns written, in order, with their exact ClickHouse types.
pub const COLUMNS: [(&str, &str); 23] = [
    ("VendorID", "UInt8"),
    ("tpep_pickup_datetime", "DateTime"),
    ("tpep_dropoff_datetime", "DateTime"),
    ("passenger_count", "Nullable(UInt8)"),
    ("trip_distance", "Float64"),
    ("RatecodeID", "Nullable(UInt8)"),
    ("store_and_fwd_flag", "Nullable(String)"),
    ("PULocationID", "UInt16"),
    ("DOLocationID", "UInt16"),
    ("payment_type", "UInt8"),
    ("fare_amount", "Float64"),
    ("extra", "Float64"),
    ("mta_tax", "Float64"),
    ("tip_amount", "Float64"),
    ("tolls_amount", "Float64"),
    ("improvement_surcharge", "Float64"),
    ("total_amount", "Float64"),
    ("congestion_surcharge", "Nullable(Float64)"),
    ("airport_fee", "Nullable(Float64)"),
    ("cbd_congestion_fee", "Nullable(Float64)"),
    ("_topic", "String"),
    ("_partition", "Int32"),
    ("_offset", "Int64"),
];

/// Typical encoded size of a TLC row (with a short topic name), for the stated memory bound.
pub const TYPICAL_ROW_BYTES: usize = 150;

/// The column list of the `INSERT`.
pub fn column_list() -> String {
    COLUMNS.map(|(name, _)| name).join(", ")
}

#[inline]
fn nullable_u8(out: &mut Vec<u8>, v: Option<u8>) {
    match v {
        Some(v) => out.extend_from_slice(&[0, v]),
        None => out.push(1),
    }
}

#[inline]
fn nullable_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => {
            out.push(0);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(1),
    }
}

/// A String: LEB128 length, then the bytes.
#[inline]
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let mut len = s.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s);
}

/// Appends `trip`, read from `topic`/`partition`/`offset`, to `out`.
#[inline]
pub fn encode(trip: &Trip, topic: &str, partition: i32, offset: i64, out: &mut Vec<u8>) {
    out.reserve(TYPICAL_ROW_BYTES + topic.len());
    out.push(trip.vendor_id);
    out.extend_from_slice(&trip.pickup.to_le_bytes());
    out.extend_from_slice(&trip.dropoff.to_le_bytes());
    nullable_u8(out, trip.passenger_count);
    out.extend_from_slice(&trip.trip_distance.to_le_bytes());
    nullable_u8(out, trip.ratecode_id);
    match &trip.store_and_fwd_flag {
        Some(flag) => {
            out.push(0);
            string(out, flag.as_str().as_bytes());
        }
        None => out.push(1),
    }
    out.extend_from_slice(&trip.pu_location_id.to_le_bytes());
    out.extend_from_slice(&trip.do_location_id.to_le_bytes());
    out.push(trip.payment_type);
    for v in [
        trip.fare_amount,
        trip.extra,
        trip.mta_tax,
        trip.tip_amount,
        trip.tolls_amount,
        trip.improvement_surcharge,
        trip.total_amount,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    nullable_f64(out, trip.congestion_surcharge);
    nullable_f64(out, trip.airport_fee);
    nullable_f64(out, trip.cbd_congestion_fee);
    string(out, topic.as_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Flag;

    #[test]
    fn columns_match_the_ddl_file() {
        let ddl = crate::sink::schema::taxi_table_ddl("t");
        for (name, ty) in COLUMNS {
            let line = ddl
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing from the DDL"));
            assert_eq!(
                line.split_whitespace()
                    .nth(1)
                    .map(|t| t.trim_end_matches(',')),
                Some(ty),
                "{line}"
            );
        }
    }

    #[test]
    fn encodes_rowbinary_byte_for_byte() {
        let trip = Trip {
            vendor_id: 2,
            pickup: 1,
            dropoff: 0x0102_0304,
            passenger_count: None,
            trip_distance: 1.5,
            ratecode_id: Some(99),
            store_and_fwd_flag: Some(Flag::N),
            pu_location_id: 0x0102,
            do_location_id: 7,
            payment_type: 1,
            fare_amount: 0.0,
            extra: 0.0,
            mta_tax: 0.0,
            tip_amount: 0.0,
            tolls_amount: 0.0,
            improvement_surcharge: 0.0,
            total_amount: -2.0,
            congestion_surcharge: Some(2.5),
            airport_fee: None,
            cbd_congestion_fee: None,
        };
        let mut out = Vec::new();
        encode(&trip, "tx", 3, 258, &mut out);
        let mut want = vec![2, 1, 0, 0, 0, 4, 3, 2, 1, 1];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0, 99, 0, 1, b'N', 2, 1, 7, 0, 1]);
        for _ in 0..6 {
            want.extend_from_slice(&0.0f64.to_le_bytes());
        }
        want.extend_from_slice(&(-2.0f64).to_le_bytes());
        want.push(0);
        want.extend_from_slice(&2.5f64.to_le_bytes());
        want.extend_from_slice(&[1, 1, 2, b't', b'x', 3, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(out, want);
    }

    #[test]
    fn long_strings_get_a_leb128_length() {
        let mut out = Vec::new();
        string(&mut out, &[b'a'; 300]);
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
    }
}
