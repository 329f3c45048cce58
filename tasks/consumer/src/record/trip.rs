//! The decoded taxi row and the ClickHouse row it is inserted as (RowBinary through the
//! clickhouse crate), with the `_topic`/`_partition`/`_offset` columns that make it unique.

use std::borrow::Cow;

use clickhouse::Row;
use serde::{Serialize, Serializer};

/// `store_and_fwd_flag`: `Y`/`N` in every TLC file, anything else kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// `"Y"`: the trip was held in the vehicle before being sent.
    Y,
    /// `"N"`.
    N,
    /// Any other string.
    Other(Box<str>),
}

impl Flag {
    /// The flag from its text, without allocating for `Y` and `N`.
    pub fn parse(text: &str) -> Self {
        match text {
            "Y" => Self::Y,
            "N" => Self::N,
            other => Self::Other(other.into()),
        }
    }

    /// The flag's text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Y => "Y",
            Self::N => "N",
            Self::Other(text) => text,
        }
    }
}

impl Serialize for Flag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One taxi trip as decoded from a message. Field types are the ClickHouse column types of
/// `infrastructure/clickhouse/taxi_trips.sql`; timestamps are seconds since the epoch (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    /// `VendorID` (`UInt8`).
    pub vendor_id: u8,
    /// `tpep_pickup_datetime` (`DateTime`): also the table's partition key (month).
    pub pickup: u32,
    /// `tpep_dropoff_datetime` (`DateTime`).
    pub dropoff: u32,
    /// `passenger_count` (`Nullable(UInt8)`).
    pub passenger_count: Option<u8>,
    /// `trip_distance` (`Float64`), miles.
    pub trip_distance: f64,
    /// `RatecodeID` (`Nullable(UInt8)`).
    pub ratecode_id: Option<u8>,
    /// `store_and_fwd_flag` (`Nullable(String)`).
    pub store_and_fwd_flag: Option<Flag>,
    /// `PULocationID` (`UInt16`).
    pub pu_location_id: u16,
    /// `DOLocationID` (`UInt16`).
    pub do_location_id: u16,
    /// `payment_type` (`UInt8`).
    pub payment_type: u8,
    /// `fare_amount` (`Float64`).
    pub fare_amount: f64,
    /// `extra` (`Float64`).
    pub extra: f64,
    /// `mta_tax` (`Float64`).
    pub mta_tax: f64,
    /// `tip_amount` (`Float64`).
    pub tip_amount: f64,
    /// `tolls_amount` (`Float64`).
    pub tolls_amount: f64,
    /// `improvement_surcharge` (`Float64`).
    pub improvement_surcharge: f64,
    /// `total_amount` (`Float64`).
    pub total_amount: f64,
    /// `congestion_surcharge` (`Nullable(Float64)`).
    pub congestion_surcharge: Option<f64>,
    /// `airport_fee` (`Nullable(Float64)`; `Airport_fee` in 2024+ files).
    pub airport_fee: Option<f64>,
    /// `cbd_congestion_fee` (`Nullable(Float64)`; absent before 2025).
    pub cbd_congestion_fee: Option<f64>,
}

/// A decoded trip with the Kafka coordinates it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The source partition.
    pub partition: i32,
    /// The source offset: with topic and partition, the row's identity.
    pub offset: i64,
    /// The row.
    pub trip: Trip,
}

/// The row as the clickhouse crate writes it (RowBinary). Column names are the TLC names; the
/// order does not matter since the `INSERT` names its columns.
#[derive(Debug, Row, Serialize)]
pub struct TaxiRow<'a> {
    /// See [`Trip::vendor_id`].
    #[serde(rename = "VendorID")]
    pub vendor_id: u8,
    /// See [`Trip::pickup`].
    pub tpep_pickup_datetime: u32,
    /// See [`Trip::dropoff`].
    pub tpep_dropoff_datetime: u32,
    /// See [`Trip::passenger_count`].
    pub passenger_count: Option<u8>,
    /// See [`Trip::trip_distance`].
    pub trip_distance: f64,
    /// See [`Trip::ratecode_id`].
    #[serde(rename = "RatecodeID")]
    pub ratecode_id: Option<u8>,
    /// See [`Trip::store_and_fwd_flag`].
    pub store_and_fwd_flag: Option<&'a Flag>,
    /// See [`Trip::pu_location_id`].
    #[serde(rename = "PULocationID")]
    pub pu_location_id: u16,
    /// See [`Trip::do_location_id`].
    #[serde(rename = "DOLocationID")]
    pub do_location_id: u16,
    /// See [`Trip::payment_type`].
    pub payment_type: u8,
    /// See [`Trip::fare_amount`].
    pub fare_amount: f64,
    /// See [`Trip::extra`].
    pub extra: f64,
    /// See [`Trip::mta_tax`].
    pub mta_tax: f64,
    /// See [`Trip::tip_amount`].
    pub tip_amount: f64,
    /// See [`Trip::tolls_amount`].
    pub tolls_amount: f64,
    /// See [`Trip::improvement_surcharge`].
    pub improvement_surcharge: f64,
    /// See [`Trip::total_amount`].
    pub total_amount: f64,
    /// See [`Trip::congestion_surcharge`].
    pub congestion_surcharge: Option<f64>,
    /// See [`Trip::airport_fee`].
    pub airport_fee: Option<f64>,
    /// See [`Trip::cbd_congestion_fee`].
    pub cbd_congestion_fee: Option<f64>,
    /// Source topic.
    #[serde(rename = "_topic")]
    pub topic: Cow<'a, str>,
    /// Source partition.
    #[serde(rename = "_partition")]
    pub partition: i32,
    /// Source offset.
    #[serde(rename = "_offset")]
    pub offset: i64,
}

impl<'a> TaxiRow<'a> {
    /// The row to insert for `record`, read from `topic`.
    pub fn new(topic: &'a str, record: &'a Record) -> Self {
        let t = &record.trip;
        Self {
            vendor_id: t.vendor_id,
            tpep_pickup_datetime: t.pickup,
            tpep_dropoff_datetime: t.dropoff,
            passenger_count: t.passenger_count,
            trip_distance: t.trip_distance,
            ratecode_id: t.ratecode_id,
            store_and_fwd_flag: t.store_and_fwd_flag.as_ref(),
            pu_location_id: t.pu_location_id,
            do_location_id: t.do_location_id,
            payment_type: t.payment_type,
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
            topic: Cow::Borrowed(topic),
            partition: record.partition,
            offset: record.offset,
        }
    }
}
