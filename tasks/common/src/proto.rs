//! The binary record format: `proto/taxi_trip.proto`, one `TaxiTrip` message per Kafka record
//! (ClickHouse's `ProtobufSingle`), as prost types generated at build time (`build.rs`).
//!
//! The producer writes it with `--format protobuf`; the consumer reads it (and JSON); ClickHouse
//! reads the same records natively with the schema [`CLICKHOUSE_SCHEMA`] from its format schema
//! directory, which the local servers point at `proto/`.

/// The types generated from `proto/taxi_trip.proto` (package `velostream.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/velostream.v1.rs"));
}

pub use v1::TaxiTrip;

/// The schema file's text, as the repository holds it.
pub const SCHEMA: &str = include_str!("../../../proto/taxi_trip.proto");

/// The schema file's name in ClickHouse's format schema directory.
pub const SCHEMA_FILE: &str = "taxi_trip.proto";

/// The message of one record.
pub const MESSAGE: &str = "TaxiTrip";

/// ClickHouse's `format_schema` / `kafka_schema` value for the records.
pub const CLICKHOUSE_SCHEMA: &str = "taxi_trip.proto:TaxiTrip";

/// ClickHouse's name of the format: one message per record, no length prefix.
pub const CLICKHOUSE_FORMAT: &str = "ProtobufSingle";

/// The directory holding the schema (the repository's `proto/`), for a ClickHouse server's
/// `format_schema_path`.
pub fn schema_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_generated_type_round_trips_and_names_the_clickhouse_columns() {
        let trip = TaxiTrip {
            vendor_id: 2,
            tpep_pickup_datetime: Some(1_672_533_130),
            store_and_fwd_flag: Some("N".into()),
            cbd_congestion_fee: Some(0.75),
            ..TaxiTrip::default()
        };
        let bytes = trip.encode_to_vec();
        assert_eq!(TaxiTrip::decode(bytes.as_slice()).unwrap(), trip);
        for column in ["VendorID", "RatecodeID", "PULocationID", "DOLocationID"] {
            assert!(SCHEMA.contains(&format!(" {column} = ")), "{column}");
        }
        assert!(schema_dir().join(SCHEMA_FILE).is_file());
    }
}
