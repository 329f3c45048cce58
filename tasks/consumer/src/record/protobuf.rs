//! Decodes one message value in the binary record format (a `TaxiTrip` of
//! `proto/taxi_trip.proto`, one per record without a length prefix) into a [`Trip`].
//!
//! prost parses the message (unknown fields are skipped, so records of a newer schema are read);
//! the values are then checked against the table's column types, as the JSON path does: a count
//! or ID out of its `UInt8`/`UInt16` range or a timestamp outside `DateTime`'s is a
//! [`WrongType`](ErrorKind::WrongType); a record without one of the two timestamps (the schema's
//! only required fields) is [`MissingField`](ErrorKind::MissingField); bytes that are not a
//! `TaxiTrip` at all are [`NotProtobuf`](ErrorKind::NotProtobuf). Fields with proto3's implicit
//! presence read 0 when absent, as every protobuf reader (ClickHouse's too) reads them (a -0.0
//! amount therefore arrives as 0.0: prost omits a plain field equal to its default).

use prost::Message;
use velostream_common::proto::TaxiTrip;

use super::decode::{DecodeError, ErrorKind};
use super::trip::{Flag, Trip};

/// Decodes one message value.
pub fn decode(payload: &[u8]) -> Result<Trip, DecodeError> {
    let message = TaxiTrip::decode(payload).map_err(|err| {
        DecodeError::new(
            ErrorKind::NotProtobuf,
            format!("not a TaxiTrip protobuf message (proto/taxi_trip.proto): {err}"),
        )
    })?;
    from_message(message)
}

fn narrow<T: TryFrom<u32>>(value: u32, field: &str) -> Result<T, DecodeError> {
    T::try_from(value).map_err(|_| {
        DecodeError::new(
            ErrorKind::WrongType,
            format!(
                "field {field}: {value} is out of the range of {}",
                std::any::type_name::<T>()
            ),
        )
    })
}

fn seconds(value: Option<i64>, field: &str) -> Result<Option<u32>, DecodeError> {
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                DecodeError::new(
                    ErrorKind::WrongType,
                    format!(
                        "field {field}: {v} s is outside the range of a ClickHouse DateTime (1970-01-01 to 2105-12-31)"
                    ),
                )
            })
        })
        .transpose()
}

/// The row of a parsed message, checked against the table's types.
pub fn from_message(m: TaxiTrip) -> Result<Trip, DecodeError> {
    let pickup = seconds(m.tpep_pickup_datetime, "tpep_pickup_datetime")?;
    let dropoff = seconds(m.tpep_dropoff_datetime, "tpep_dropoff_datetime")?;
    let (Some(pickup), Some(dropoff)) = (pickup, dropoff) else {
        let missing: Vec<&str> = [
            (pickup, "tpep_pickup_datetime"),
            (dropoff, "tpep_dropoff_datetime"),
        ]
        .iter()
        .filter(|(v, _)| v.is_none())
        .map(|(_, name)| *name)
        .collect();
        return Err(DecodeError::new(
            ErrorKind::MissingField,
            format!("required field(s) absent: {}", missing.join(", ")),
        ));
    };
    Ok(Trip {
        vendor_id: narrow(m.vendor_id, "VendorID")?,
        pickup,
        dropoff,
        passenger_count: m
            .passenger_count
            .map(|v| narrow(v, "passenger_count"))
            .transpose()?,
        trip_distance: m.trip_distance,
        ratecode_id: m.ratecode_id.map(|v| narrow(v, "RatecodeID")).transpose()?,
        store_and_fwd_flag: m.store_and_fwd_flag.as_deref().map(Flag::parse),
        pu_location_id: narrow(m.pu_location_id, "PULocationID")?,
        do_location_id: narrow(m.do_location_id, "DOLocationID")?,
        payment_type: narrow(m.payment_type, "payment_type")?,
        fare_amount: m.fare_amount,
        extra: m.extra,
        mta_tax: m.mta_tax,
        tip_amount: m.tip_amount,
        tolls_amount: m.tolls_amount,
        improvement_surcharge: m.improvement_surcharge,
        total_amount: m.total_amount,
        congestion_surcharge: m.congestion_surcharge,
        airport_fee: m.airport_fee,
        cbd_congestion_fee: m.cbd_congestion_fee,
    })
}

/// The message of a row (fixtures and tests: the producer writes its own from Arrow).
pub fn to_message(t: &Trip) -> TaxiTrip {
    TaxiTrip {
        vendor_id: t.vendor_id.into(),
        tpep_pickup_datetime: Some(t.pickup.into()),
        tpep_dropoff_datetime: Some(t.dropoff.into()),
        passenger_count: t.passenger_count.map(u32::from),
        trip_distance: t.trip_distance,
        ratecode_id: t.ratecode_id.map(u32::from),
        store_and_fwd_flag: t.store_and_fwd_flag.as_ref().map(|f| f.as_str().to_owned()),
        pu_location_id: t.pu_location_id.into(),
        do_location_id: t.do_location_id.into(),
        payment_type: t.payment_type.into(),
        fare_amount: t.fare_amount,
        extra: t.extra,
        mta_tax: t.mta_tax,
        tip_amount: t.tip_amount,
        tolls_amount: t.tolls_amount,
        improvement_surcharge: t.improvement_surcharge,
        total_amount: t.total_amount,
        congestion_surcharge: t.congestion_surcharge,
        airport_fee: t.airport_fee,
        cbd_congestion_fee: t.cbd_congestion_fee,
    }
}

/// The bytes of a row's message.
pub fn encode(t: &Trip) -> Vec<u8> {
    to_message(t).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::decode::tests::ROW_2023;

    fn trip() -> Trip {
        crate::record::decode(ROW_2023.as_bytes()).unwrap()
    }

    /// `TaxiTrip` as the schema was before `cbd_congestion_fee` (field 20): what a consumer built
    /// before 2025 decodes with.
    #[derive(Clone, PartialEq, prost::Message)]
    struct TaxiTrip2024 {
        #[prost(uint32, tag = "1")]
        vendor_id: u32,
        #[prost(int64, optional, tag = "2")]
        tpep_pickup_datetime: Option<i64>,
        #[prost(int64, optional, tag = "3")]
        tpep_dropoff_datetime: Option<i64>,
        #[prost(string, optional, tag = "7")]
        store_and_fwd_flag: Option<String>,
        #[prost(double, tag = "17")]
        total_amount: f64,
        #[prost(optional, double, tag = "19")]
        airport_fee: Option<f64>,
    }

    #[test]
    fn a_2025_record_carries_the_fee_and_an_older_reader_skips_it() {
        let mut t = trip();
        t.cbd_congestion_fee = Some(0.75);
        let bytes = encode(&t);
        assert_eq!(decode(&bytes), Ok(t.clone()));
        let old = TaxiTrip2024::decode(bytes.as_slice()).unwrap();
        assert_eq!(old.tpep_pickup_datetime, Some(i64::from(t.pickup)));
        assert_eq!((old.total_amount, old.airport_fee), (14.3, Some(0.0)));
        assert_eq!(old.store_and_fwd_flag.as_deref(), Some("N"));
    }

    #[test]
    fn a_record_of_the_older_schema_reads_the_fee_as_null() {
        let old = TaxiTrip2024 {
            vendor_id: 2,
            tpep_pickup_datetime: Some(1_672_533_130),
            tpep_dropoff_datetime: Some(1_672_533_636),
            store_and_fwd_flag: Some("Y".into()),
            total_amount: 14.3,
            airport_fee: Some(1.25),
        };
        let t = decode(&old.encode_to_vec()).unwrap();
        assert_eq!(t.cbd_congestion_fee, None);
        assert_eq!((t.airport_fee, t.total_amount), (Some(1.25), 14.3));
        assert_eq!(t.store_and_fwd_flag, Some(Flag::Y));
        assert_eq!(t.passenger_count, None, "an absent optional field is NULL");
        assert_eq!(
            t.fare_amount, 0.0,
            "an absent plain field is 0, as in proto3"
        );
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let t = trip();
        let mut bytes = encode(&t);
        // Field 21 varint 300, 22 length-delimited "abc", 23 fixed32, 24 fixed64, 1000 varint.
        bytes.extend_from_slice(&[0xa8, 0x01, 0xac, 0x02]);
        bytes.extend_from_slice(&[0xb2, 0x01, 3, b'a', b'b', b'c']);
        bytes.extend_from_slice(&[0xbd, 0x01, 1, 2, 3, 4]);
        bytes.extend_from_slice(&[0xc1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[0xc0, 0x3e, 5]);
        assert_eq!(decode(&bytes), Ok(t));
    }

    #[test]
    fn bad_records_are_classified_and_name_the_field() {
        let t = trip();
        let bytes = encode(&t);
        let e = decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotProtobuf, "{e}");
        // VendorID (field 1) as a length-delimited field: the wrong wire type.
        let e = decode(&[0x0a, 1, 0]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotProtobuf);
        assert!(
            e.message.contains("VendorID") || e.message.contains("vendor_id"),
            "{e}"
        );
        let mut m = to_message(&t);
        m.tpep_dropoff_datetime = None;
        let e = decode(&m.encode_to_vec()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::MissingField);
        assert!(e.message.contains("tpep_dropoff_datetime"), "{e}");
        let mut m = to_message(&t);
        m.tpep_pickup_datetime = Some(-1);
        assert_eq!(
            decode(&m.encode_to_vec()).unwrap_err().kind,
            ErrorKind::WrongType
        );
        let mut m = to_message(&t);
        m.pu_location_id = 70_000;
        let e = decode(&m.encode_to_vec()).unwrap_err();
        assert!(
            e.kind == ErrorKind::WrongType && e.message.contains("PULocationID"),
            "{e}"
        );
    }

    mod agreement {
        //! Any row survives protobuf unchanged: what the JSON path decodes, the protobuf path
        //! decodes equally from the row's message.
        use super::*;
        use proptest::prelude::*;

        fn row() -> impl Strategy<Value = Trip> {
            (
                (
                    any::<u8>(),
                    any::<u32>(),
                    any::<u32>(),
                    any::<Option<u8>>(),
                    any::<f64>(),
                ),
                (
                    any::<Option<u8>>(),
                    prop_oneof![
                        Just(None),
                        Just(Some(Flag::Y)),
                        Just(Some(Flag::N)),
                        "[a-zé]{0,3}".prop_map(|s| Some(Flag::parse(&s)))
                    ],
                ),
                (any::<u16>(), any::<u16>(), any::<u8>()),
                proptest::collection::vec(any::<f64>(), 7),
                (
                    any::<Option<f64>>(),
                    any::<Option<f64>>(),
                    any::<Option<f64>>(),
                ),
            )
                .prop_map(
                    |((v, p, d, pc, td), (rc, flag), (pu, do_, pt), a, (cs, af, cbd))| Trip {
                        vendor_id: v,
                        pickup: p,
                        dropoff: d,
                        passenger_count: pc,
                        trip_distance: td,
                        ratecode_id: rc,
                        store_and_fwd_flag: flag,
                        pu_location_id: pu,
                        do_location_id: do_,
                        payment_type: pt,
                        fare_amount: a[0],
                        extra: a[1],
                        mta_tax: a[2],
                        tip_amount: a[3],
                        tolls_amount: a[4],
                        improvement_surcharge: a[5],
                        total_amount: a[6],
                        congestion_surcharge: cs,
                        airport_fee: af,
                        cbd_congestion_fee: cbd,
                    },
                )
        }

        /// Equal, with NaN equal to itself (bit for bit), and -0.0 of a plain field read as 0.0
        /// (prost omits a plain field equal to its default, and -0.0 == 0.0).
        fn same(a: &Trip, b: &Trip) -> bool {
            let mut b = b.clone();
            for x in [
                &mut b.trip_distance,
                &mut b.fare_amount,
                &mut b.extra,
                &mut b.mta_tax,
                &mut b.tip_amount,
                &mut b.tolls_amount,
                &mut b.improvement_surcharge,
                &mut b.total_amount,
            ] {
                if *x == 0.0 {
                    *x = 0.0;
                }
            }
            format!("{a:?}") == format!("{b:?}")
        }

        proptest! {
            #[test]
            fn every_row_round_trips(t in row()) {
                let back = decode(&encode(&t)).unwrap();
                prop_assert!(same(&back, &t), "{:?} != {:?}", back, t);
            }

            #[test]
            fn damaged_messages_never_panic(t in row(), at in any::<proptest::sample::Index>(), byte in any::<u8>()) {
                let mut bytes = encode(&t);
                let i = at.index(bytes.len());
                bytes[i] = byte;
                let _ = decode(&bytes);
                bytes.truncate(i);
                let _ = decode(&bytes);
            }
        }
    }
}
