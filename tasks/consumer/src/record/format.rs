//! Which record format a topic carries (`--format json|protobuf|auto`), and decoding by it.
//!
//! `auto` (the default) looks at the first byte: a JSON object starts with `{` (or whitespace),
//! while a `TaxiTrip` message never does (as a protobuf tag, `{` is field 15 with the deprecated
//! group wire type; the schema has no groups). The other format is tried when the guessed one
//! fails, so a JSON record with unusual leading bytes still decodes; a record neither format
//! takes is dead-lettered with the reason of the format that got further (a record that parses
//! but has a bad value says which field), or, when neither parses, of the format the bytes look
//! like (JSON for text, protobuf otherwise). The check is one byte per record: no Kafka header is
//! needed, so records from any producer (ClickHouse's own `ProtobufSingle` output included) are
//! recognised.

use super::decode::{DecodeError, ErrorKind};
use super::trip::Trip;

/// The record format of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RecordFormat {
    /// Each record is JSON or protobuf, told apart by its first byte.
    #[default]
    Auto,
    /// One JSON object per record (the producer's default).
    Json,
    /// One `TaxiTrip` protobuf message per record (`proto/taxi_trip.proto`, the producer's
    /// `--format protobuf`).
    Protobuf,
}

impl RecordFormat {
    /// The name as `--format` takes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }
}

/// Whether `payload` looks like JSON: its first byte opens an object or is JSON whitespace.
#[inline]
pub fn looks_like_json(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(b'{' | b' ' | b'\n' | b'\r' | b'\t'))
}

/// Decodes one message value in `format`.
#[inline]
pub fn decode(format: RecordFormat, payload: &[u8]) -> Result<Trip, DecodeError> {
    match format {
        RecordFormat::Json => super::decode::decode(payload),
        RecordFormat::Protobuf => super::protobuf::decode(payload),
        RecordFormat::Auto => decode_auto(payload),
    }
}

/// A decoder of one format.
type Decoder = fn(&[u8]) -> Result<Trip, DecodeError>;

fn decode_auto(payload: &[u8]) -> Result<Trip, DecodeError> {
    if payload.is_empty() {
        // Also an empty protobuf message, but no producer of ours sends it.
        return super::decode::decode(payload);
    }
    let json_first = looks_like_json(payload);
    let (first, second): (Decoder, Decoder) = if json_first {
        (super::decode::decode, super::protobuf::decode)
    } else {
        (super::protobuf::decode, super::decode::decode)
    };
    let first_err = match first(payload) {
        Ok(trip) => return Ok(trip),
        Err(err) => err,
    };
    let second_err = match second(payload) {
        Ok(trip) => return Ok(trip),
        Err(err) => err,
    };
    let unparsed = |e: &DecodeError| matches!(e.kind, ErrorKind::NotJson | ErrorKind::NotProtobuf);
    let (json_err, proto_err) = if json_first {
        (first_err, second_err)
    } else {
        (second_err, first_err)
    };
    Err(match (unparsed(&json_err), unparsed(&proto_err)) {
        (false, _) => json_err,
        (true, false) => proto_err,
        (true, true) if std::str::from_utf8(payload).is_ok() => json_err,
        (true, true) => proto_err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::decode::tests::ROW_2023;

    #[test]
    fn auto_reads_both_formats_and_explains_what_neither_takes() {
        let trip = super::super::decode::decode(ROW_2023.as_bytes()).unwrap();
        let proto = crate::record::protobuf::encode(&trip);
        assert!(!looks_like_json(&proto));
        for format in [RecordFormat::Auto, RecordFormat::Json] {
            assert_eq!(decode(format, ROW_2023.as_bytes()), Ok(trip.clone()));
        }
        let spaced = format!("\n {ROW_2023}");
        assert_eq!(
            decode(RecordFormat::Auto, spaced.as_bytes()),
            Ok(trip.clone())
        );
        for format in [RecordFormat::Auto, RecordFormat::Protobuf] {
            assert_eq!(decode(format, &proto), Ok(trip.clone()));
        }
        assert_eq!(
            decode(RecordFormat::Json, &proto).unwrap_err().kind,
            ErrorKind::NotJson
        );
        let e = decode(RecordFormat::Protobuf, ROW_2023.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotProtobuf, "{e}");

        for (payload, kind) in [
            (&b""[..], ErrorKind::NotJson),
            (b"this is not json", ErrorKind::NotJson),
            (b"{\"VendorID\":", ErrorKind::NotJson),
            (&[0x08, 0x02, 0xff][..], ErrorKind::NotProtobuf),
            (&[0x08, 0x02][..], ErrorKind::MissingField),
        ] {
            assert_eq!(
                decode(RecordFormat::Auto, payload).unwrap_err().kind,
                kind,
                "{payload:?}"
            );
        }
        // Parsed as protobuf, with a value out of its column's range: the field is named.
        let mut message = crate::record::protobuf::to_message(&trip);
        message.vendor_id = 300;
        let e = decode(RecordFormat::Auto, &prost::Message::encode_to_vec(&message)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::WrongType);
        assert!(e.message.contains("VendorID"), "{e}");
    }
}
