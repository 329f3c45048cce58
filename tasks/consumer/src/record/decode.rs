//! Decodes one message value (a JSON object, the producer's wire format) into a [`Trip`].
//!
//! Keys are matched case-insensitively (`airport_fee`/`Airport_fee`, all-lower-case copies) and
//! unknown keys are ignored. Integers are accepted where floats are expected, and integral floats
//! (`1.0`, as 2023 files store `passenger_count` and `RatecodeID`) where integers are.
//!
//! Required (present and not null): the two timestamps, `VendorID`, `PULocationID`,
//! `DOLocationID`, `payment_type`, `trip_distance` and the seven amount columns, i.e. every column
//! that is not `Nullable` in the table: a made-up default would silently corrupt the data.
//! Optional (absent or null become NULL): `passenger_count`, `RatecodeID`, `store_and_fwd_flag`,
//! `congestion_surcharge`, `airport_fee` and `cbd_congestion_fee`, the columns TLC files have
//! nulls in or lack in some years.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::scan::scan;
use super::timestamp::parse_datetime;
use super::trip::{Flag, Trip};

/// Why a message is not a taxi row. The kind goes into the dead-letter headers and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not a JSON object (syntax error, truncated, empty, an array...).
    NotJson,
    /// A field has the wrong type or an impossible value.
    WrongType,
    /// A required field is absent or null.
    MissingField,
    /// Not a `TaxiTrip` protobuf message (bad wire format, a field of the wrong wire type,
    /// truncated).
    NotProtobuf,
}

impl ErrorKind {
    /// The kind as it appears in headers and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::WrongType => "wrong_type",
            Self::MissingField => "missing_field",
            Self::NotProtobuf => "not_protobuf",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [Self; 4] = [
        Self::NotJson,
        Self::WrongType,
        Self::MissingField,
        Self::NotProtobuf,
    ];
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that is not a taxi row, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DecodeError {
    /// What class of problem.
    pub kind: ErrorKind,
    /// What exactly, naming the field.
    pub message: String,
}

impl DecodeError {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The columns we read, in the order of [`FIELD_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
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

pub(super) const FIELDS: [(Field, &str); 20] = [
    (Field::VendorId, "VendorID"),
    (Field::Pickup, "tpep_pickup_datetime"),
    (Field::Dropoff, "tpep_dropoff_datetime"),
    (Field::PassengerCount, "passenger_count"),
    (Field::TripDistance, "trip_distance"),
    (Field::RatecodeId, "RatecodeID"),
    (Field::StoreAndFwdFlag, "store_and_fwd_flag"),
    (Field::PuLocationId, "PULocationID"),
    (Field::DoLocationId, "DOLocationID"),
    (Field::PaymentType, "payment_type"),
    (Field::FareAmount, "fare_amount"),
    (Field::Extra, "extra"),
    (Field::MtaTax, "mta_tax"),
    (Field::TipAmount, "tip_amount"),
    (Field::TollsAmount, "tolls_amount"),
    (Field::ImprovementSurcharge, "improvement_surcharge"),
    (Field::TotalAmount, "total_amount"),
    (Field::CongestionSurcharge, "congestion_surcharge"),
    (Field::AirportFee, "airport_fee"),
    (Field::CbdCongestionFee, "cbd_congestion_fee"),
];

impl Field {
    /// The field named `key`, ignoring ASCII case.
    pub(super) fn lookup(key: &[u8]) -> Option<Self> {
        FIELDS
            .iter()
            .find(|(_, name)| name.len() == key.len() && name.as_bytes().eq_ignore_ascii_case(key))
            .map(|(field, _)| *field)
    }

    fn name(self) -> &'static str {
        FIELDS[self as usize].1
    }
}

/// Decodes one message value.
pub fn decode(payload: &[u8]) -> Result<Trip, DecodeError> {
    match scan(payload) {
        Some(partial) => partial.finish(),
        None => decode_with_serde(payload),
    }
}

/// The general path: serde_json, with errors that say what is wrong.
fn decode_with_serde(payload: &[u8]) -> Result<Trip, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::new(ErrorKind::NotJson, "empty message"));
    }
    let current = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = de
        .deserialize_map(TripVisitor { current: &current })
        .and_then(|partial| de.end().map(|()| partial));
    match parsed {
        Ok(partial) => partial.finish(),
        Err(err) => Err(classify(&err, current.get())),
    }
}

fn classify(err: &serde_json::Error, field: Option<Field>) -> DecodeError {
    use serde_json::error::Category;
    let kind = match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ErrorKind::NotJson,
        Category::Data => ErrorKind::WrongType,
    };
    let message = match (kind, field) {
        (ErrorKind::WrongType, Some(field)) => format!("field {}: {err}", field.name()),
        _ => err.to_string(),
    };
    DecodeError::new(kind, message)
}

/// Values as read, before the required ones are checked.
#[derive(Default)]
pub(crate) struct Partial {
    pub(super) vendor_id: Option<u8>,
    pub(super) pickup: Option<u32>,
    pub(super) dropoff: Option<u32>,
    pub(super) passenger_count: Option<u8>,
    pub(super) trip_distance: Option<f64>,
    pub(super) ratecode_id: Option<u8>,
    pub(super) store_and_fwd_flag: Option<Flag>,
    pub(super) pu_location_id: Option<u16>,
    pub(super) do_location_id: Option<u16>,
    pub(super) payment_type: Option<u8>,
    pub(super) fare_amount: Option<f64>,
    pub(super) extra: Option<f64>,
    pub(super) mta_tax: Option<f64>,
    pub(super) tip_amount: Option<f64>,
    pub(super) tolls_amount: Option<f64>,
    pub(super) improvement_surcharge: Option<f64>,
    pub(super) total_amount: Option<f64>,
    pub(super) congestion_surcharge: Option<f64>,
    pub(super) airport_fee: Option<f64>,
    pub(super) cbd_congestion_fee: Option<f64>,
}

impl Partial {
    pub(super) fn finish(self) -> Result<Trip, DecodeError> {
        let mut missing: Vec<&str> = Vec::new();
        fn req<T: Default>(value: Option<T>, field: Field, missing: &mut Vec<&str>) -> T {
            value.unwrap_or_else(|| {
                missing.push(field.name());
                T::default()
            })
        }
        let m = &mut missing;
        let trip = Trip {
            vendor_id: req(self.vendor_id, Field::VendorId, m),
            pickup: req(self.pickup, Field::Pickup, m),
            dropoff: req(self.dropoff, Field::Dropoff, m),
            passenger_count: self.passenger_count,
            trip_distance: req(self.trip_distance, Field::TripDistance, m),
            ratecode_id: self.ratecode_id,
            store_and_fwd_flag: self.store_and_fwd_flag,
            pu_location_id: req(self.pu_location_id, Field::PuLocationId, m),
            do_location_id: req(self.do_location_id, Field::DoLocationId, m),
            payment_type: req(self.payment_type, Field::PaymentType, m),
            fare_amount: req(self.fare_amount, Field::FareAmount, m),
            extra: req(self.extra, Field::Extra, m),
            mta_tax: req(self.mta_tax, Field::MtaTax, m),
            tip_amount: req(self.tip_amount, Field::TipAmount, m),
            tolls_amount: req(self.tolls_amount, Field::TollsAmount, m),
            improvement_surcharge: req(self.improvement_surcharge, Field::ImprovementSurcharge, m),
            total_amount: req(self.total_amount, Field::TotalAmount, m),
            congestion_surcharge: self.congestion_surcharge,
            airport_fee: self.airport_fee,
            cbd_congestion_fee: self.cbd_congestion_fee,
        };
        if missing.is_empty() {
            Ok(trip)
        } else {
            Err(DecodeError::new(
                ErrorKind::MissingField,
                format!("required field(s) absent or null: {}", missing.join(", ")),
            ))
        }
    }
}

struct TripVisitor<'c> {
    current: &'c Cell<Option<Field>>,
}

impl<'de> Visitor<'de> for TripVisitor<'_> {
    type Value = Partial;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with the columns of a TLC taxi trip")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Partial, A::Error> {
        let mut p = Partial::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some(field) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            self.current.set(Some(field));
            match field {
                Field::VendorId => p.vendor_id = map.next_value::<Option<Int<u8>>>()?.map(|v| v.0),
                Field::Pickup => p.pickup = map.next_value::<Option<Timestamp>>()?.map(|v| v.0),
                Field::Dropoff => p.dropoff = map.next_value::<Option<Timestamp>>()?.map(|v| v.0),
                Field::PassengerCount => {
                    p.passenger_count = map.next_value::<Option<Int<u8>>>()?.map(|v| v.0)
                }
                Field::TripDistance => p.trip_distance = map.next_value()?,
                Field::RatecodeId => {
                    p.ratecode_id = map.next_value::<Option<Int<u8>>>()?.map(|v| v.0)
                }
                Field::StoreAndFwdFlag => {
                    p.store_and_fwd_flag = map.next_value::<Option<FlagValue>>()?.map(|v| v.0)
                }
                Field::PuLocationId => {
                    p.pu_location_id = map.next_value::<Option<Int<u16>>>()?.map(|v| v.0)
                }
                Field::DoLocationId => {
                    p.do_location_id = map.next_value::<Option<Int<u16>>>()?.map(|v| v.0)
                }
                Field::PaymentType => {
                    p.payment_type = map.next_value::<Option<Int<u8>>>()?.map(|v| v.0)
                }
                Field::FareAmount => p.fare_amount = map.next_value()?,
                Field::Extra => p.extra = map.next_value()?,
                Field::MtaTax => p.mta_tax = map.next_value()?,
                Field::TipAmount => p.tip_amount = map.next_value()?,
                Field::TollsAmount => p.tolls_amount = map.next_value()?,
                Field::ImprovementSurcharge => p.improvement_surcharge = map.next_value()?,
                Field::TotalAmount => p.total_amount = map.next_value()?,
                Field::CongestionSurcharge => p.congestion_surcharge = map.next_value()?,
                Field::AirportFee => p.airport_fee = map.next_value()?,
                Field::CbdCongestionFee => p.cbd_congestion_fee = map.next_value()?,
            }
            self.current.set(None);
        }
        Ok(p)
    }
}

/// Reads a key and maps it to a known field, ignoring case; `None` for unknown keys.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<Field>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<Field>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Field::lookup(key.as_bytes()))
    }
}

/// An integer column: accepts JSON integers, and floats with no fractional part.
struct Int<T>(T);

impl<'de, T: TryFrom<i64> + TryFrom<u64> + fmt::Display> de::Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<i64> + TryFrom<u64>> Visitor<'_> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer in the range of {}", short_type_name::<T>())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
                T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
                T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    // Exact: |v| < 2^53 and no fraction.
                    self.visit_i64(v as i64)
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
        }
        deserializer.deserialize_any(V(PhantomData)).map(Int)
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// A `DateTime` column: a UTC timestamp string.
struct Timestamp(u32);

impl<'de> de::Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UTC timestamp string \"YYYY-MM-DD HH:MM:SS\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
                parse_datetime(v).map_err(|e| E::custom(format_args!("{v:?}: {e}")))
            }
        }
        deserializer.deserialize_str(V).map(Timestamp)
    }
}

/// `store_and_fwd_flag`: a string.
struct FlagValue(Flag);

impl<'de> de::Deserialize<'de> for FlagValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (Y or N)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                Ok(Flag::parse(v))
            }
        }
        deserializer.deserialize_str(V).map(FlagValue)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::record) const ROW_2023: &str = r#"{"VendorID":2,"tpep_pickup_datetime":"2023-01-01 00:32:10","tpep_dropoff_datetime":"2023-01-01 00:40:36","passenger_count":1.0,"trip_distance":0.97,"RatecodeID":1.0,"store_and_fwd_flag":"N","PULocationID":161,"DOLocationID":141,"payment_type":2,"fare_amount":9.3,"extra":1.0,"mta_tax":0.5,"tip_amount":0.0,"tolls_amount":0.0,"improvement_surcharge":1.0,"total_amount":14.3,"congestion_surcharge":2.5,"airport_fee":0.0}"#;

    fn err(text: &str) -> DecodeError {
        decode(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn decodes_a_2023_row() {
        let trip = decode(ROW_2023.as_bytes()).unwrap();
        assert_eq!(trip.vendor_id, 2);
        assert_eq!(trip.pickup, 1_672_533_130);
        assert_eq!(trip.dropoff, 1_672_533_636);
        assert_eq!(trip.passenger_count, Some(1));
        assert_eq!(trip.ratecode_id, Some(1));
        assert_eq!(trip.store_and_fwd_flag, Some(Flag::N));
        assert_eq!((trip.pu_location_id, trip.do_location_id), (161, 141));
        assert_eq!(trip.total_amount, 14.3);
        assert_eq!(trip.airport_fee, Some(0.0));
        assert_eq!(trip.cbd_congestion_fee, None);
    }

    #[test]
    fn keys_match_in_any_case_and_unknown_keys_are_ignored() {
        let lower = ROW_2023.to_ascii_lowercase().replace("\"n\"", "\"N\"");
        assert_eq!(decode(lower.as_bytes()), decode(ROW_2023.as_bytes()));
        let drifted = ROW_2023
            .replace("airport_fee\":0.0", "Airport_fee\":1.25")
            .replace(
                "\"VendorID\"",
                "\"cbd_congestion_fee\":0.75,\"extra_col\":{\"a\":[1,2]},\"VendorID\"",
            );
        let trip = decode(drifted.as_bytes()).unwrap();
        assert_eq!(trip.airport_fee, Some(1.25));
        assert_eq!(trip.cbd_congestion_fee, Some(0.75));
    }

    #[test]
    fn ints_are_accepted_for_floats_and_integral_floats_for_ints() {
        let text = ROW_2023
            .replace("\"fare_amount\":9.3", "\"fare_amount\":9")
            .replace("\"VendorID\":2", "\"VendorID\":2.0");
        let trip = decode(text.as_bytes()).unwrap();
        assert_eq!((trip.fare_amount, trip.vendor_id), (9.0, 2));
    }

    #[test]
    fn nullable_columns_take_null_or_absence() {
        let text = ROW_2023
            .replace("\"passenger_count\":1.0", "\"passenger_count\":null")
            .replace("\"store_and_fwd_flag\":\"N\",", "")
            .replace(",\"airport_fee\":0.0", "");
        let trip = decode(text.as_bytes()).unwrap();
        assert_eq!(trip.passenger_count, None);
        assert_eq!(trip.store_and_fwd_flag, None);
        assert_eq!(trip.airport_fee, None);
    }

    #[test]
    fn bad_records_are_classified_and_name_the_field() {
        for text in ["", "  ", "not json", "{\"VendorID\":", "{}{}"] {
            assert_eq!(err(text).kind, ErrorKind::NotJson, "{text:?}");
        }
        let truncated = &ROW_2023[..ROW_2023.len() - 10];
        assert_eq!(err(truncated).kind, ErrorKind::NotJson);

        let e = err(&ROW_2023.replace("\"fare_amount\":9.3", "\"fare_amount\":\"9.3\""));
        assert_eq!(e.kind, ErrorKind::WrongType);
        assert!(e.message.contains("fare_amount"), "{e}");
        let e = err(&ROW_2023.replace("\"VendorID\":2", "\"VendorID\":300"));
        assert_eq!(e.kind, ErrorKind::WrongType);
        assert!(
            e.message.contains("VendorID") && e.message.contains("u8"),
            "{e}"
        );
        let e = err(&ROW_2023.replace("\"passenger_count\":1.0", "\"passenger_count\":1.5"));
        assert_eq!(e.kind, ErrorKind::WrongType);
        let e = err(&ROW_2023.replace("2023-01-01 00:32:10", "yesterday"));
        assert_eq!(e.kind, ErrorKind::WrongType);
        assert!(e.message.contains("tpep_pickup_datetime"), "{e}");
        assert_eq!(err("[1,2]").kind, ErrorKind::WrongType);
        assert_eq!(err("42").kind, ErrorKind::WrongType);

        let e = err(&ROW_2023.replace("\"tpep_dropoff_datetime\":\"2023-01-01 00:40:36\",", ""));
        assert_eq!(e.kind, ErrorKind::MissingField);
        assert!(e.message.contains("tpep_dropoff_datetime"), "{e}");
        let e = err(&ROW_2023.replace("\"PULocationID\":161", "\"PULocationID\":null"));
        assert_eq!(e.kind, ErrorKind::MissingField);
        assert!(e.message.contains("PULocationID"), "{e}");
        assert_eq!(err("{}").kind, ErrorKind::MissingField);
    }

    mod agreement {
        //! The scanner (fast path) and serde_json (general path) agree on every input: either
        //! the scanner gives up, or it decodes exactly what serde would.
        use super::super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                (-1000i64..100_000).prop_map(|v| v.to_string()),
                (0u32..1_000_000, 0u32..7).prop_map(|(m, k)| {
                    let v = f64::from(m) / 10f64.powi(k as i32);
                    format!("{v}")
                }),
                (0u32..1000, 0u32..3)
                    .prop_map(|(m, k)| format!("{m}.{}", "0".repeat(k as usize + 1))),
                Just("null".to_string()),
                Just("true".to_string()),
                Just("\"N\"".to_string()),
                Just("\"Y\"".to_string()),
                Just("\"x\\ny\"".to_string()),
                Just("[1,2]".to_string()),
                Just("{\"a\":1}".to_string()),
                Just("1e3".to_string()),
                Just("-0".to_string()),
                Just("\"2023-01-01 00:32:10\"".to_string()),
                Just("\"2023-01-01 00:32:10.5\"".to_string()),
                Just("\"2023-02-30 00:00:00\"".to_string()),
                "[a-z0-9 :.-]{0,12}".prop_map(|t| format!("\"{t}\"")),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => (0..FIELDS.len(), any::<bool>()).prop_map(|(i, lower)| {
                    let name = FIELDS[i].1;
                    if lower { name.to_ascii_lowercase() } else { name.to_string() }
                }),
                1 => "[a-zA-Z_]{1,10}",
                1 => Just("tpep_pickup\\u005fdatetime".to_string()),
            ]
        }

        fn object() -> impl Strategy<Value = String> {
            (
                proptest::collection::vec((key(), value()), 0..24),
                prop_oneof![Just(""), Just(" "), Just("\n")],
            )
                .prop_map(|(pairs, ws)| {
                    let body: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
                        .collect();
                    format!("{ws}{{{}}}{ws}", body.join(","))
                })
        }

        /// A well-formed row with every field, in file order, with drifting values.
        fn row() -> impl Strategy<Value = String> {
            proptest::collection::vec(value(), FIELDS.len()).prop_map(|values| {
                let body: Vec<String> = FIELDS
                    .iter()
                    .zip(&values)
                    .map(|((_, k), v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            })
        }

        proptest! {
            #[test]
            fn scanner_agrees_with_serde(text in prop_oneof![object(), row()]) {
                prop_assert_eq!(decode(text.as_bytes()), decode_with_serde(text.as_bytes()), "{}", text);
            }

            #[test]
            fn scanner_agrees_on_damaged_input(text in row(), cut in any::<proptest::sample::Index>(), byte in any::<u8>()) {
                let mut bytes = text.into_bytes();
                let at = cut.index(bytes.len());
                let mut damaged = bytes.clone();
                damaged[at] = byte;
                prop_assert_eq!(decode(&damaged), decode_with_serde(&damaged));
                bytes.truncate(at);
                prop_assert_eq!(decode(&bytes), decode_with_serde(&bytes));
            }
        }

        #[test]
        fn the_scanner_takes_the_producers_rows() {
            let row = super::ROW_2023.as_bytes();
            assert!(crate::record::scan::scan(row).is_some());
            let lower = super::ROW_2023.to_ascii_lowercase();
            assert!(crate::record::scan::scan(lower.as_bytes()).is_some());
        }
    }
}
