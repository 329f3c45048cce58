//! One taxi row: its wire formats (JSON, the protobuf `TaxiTrip`) decoded into the columns of the
//! ClickHouse table.

pub mod decode;
pub mod format;
pub mod protobuf;
pub mod rowbinary;
pub(crate) mod scan;
pub mod timestamp;
pub mod trip;

pub use decode::{DecodeError, ErrorKind, decode};
pub use format::RecordFormat;
pub use trip::{Flag, Record, TaxiRow, Trip};
