//! One taxi row: its JSON wire format decoded into the columns of the ClickHouse table.

pub mod decode;
pub mod rowbinary;
pub(crate) mod scan;
pub mod timestamp;
pub mod trip;

pub use decode::{DecodeError, ErrorKind, decode};
pub use trip::{Flag, Record, TaxiRow, Trip};
