//! The NYC TLC yellow-taxi schema the pipeline expects, and how much it may drift.
//!
//! TLC files change across years: 2023 has int64 ids, `double` passenger_count/RatecodeID and
//! `airport_fee`; 2024+ has int32 location ids, int64 passenger_count/RatecodeID, `Airport_fee`,
//! `large_string` and nulls; 2025 adds `cbd_congestion_fee`; some copies lower-case every name.
//! So columns are matched ignoring case, and checked by kind of type (integer-like, number,
//! string, timestamp) rather than exact type.

use arrow::datatypes::{DataType, Schema};

use super::Problem;
use crate::encode::find_column;

/// The kinds of type a column may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeClass {
    /// Timestamps of any unit, with or without a time zone.
    Timestamp,
    /// Integers, or floats holding whole numbers (TLC wrote ids as `double` in some years).
    IntegerLike,
    /// Integers, floats or decimals.
    Number,
    /// Strings of any offset size, views or dictionaries.
    String,
}

impl TypeClass {
    fn accepts(self, t: &DataType) -> bool {
        let number = t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..));
        match self {
            Self::Timestamp => matches!(t, DataType::Timestamp(..)),
            Self::IntegerLike => t.is_integer() || t.is_floating(),
            Self::Number => number,
            Self::String => match t {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
                DataType::Dictionary(_, v) => {
                    matches!(
                        **v,
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    )
                }
                _ => false,
            },
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Timestamp => "a timestamp",
            Self::IntegerLike => "an integer (or a float holding whole numbers)",
            Self::Number => "a number (integer, float or decimal)",
            Self::String => "a string",
        }
    }
}

/// Columns every TLC yellow-taxi file since 2015 has, with the kind of type each needs.
pub const TAXI_REQUIRED: &[(&str, TypeClass)] = &[
    ("VendorID", TypeClass::IntegerLike),
    ("tpep_pickup_datetime", TypeClass::Timestamp),
    ("tpep_dropoff_datetime", TypeClass::Timestamp),
    ("passenger_count", TypeClass::IntegerLike),
    ("trip_distance", TypeClass::Number),
    ("RatecodeID", TypeClass::IntegerLike),
    ("store_and_fwd_flag", TypeClass::String),
    ("PULocationID", TypeClass::IntegerLike),
    ("DOLocationID", TypeClass::IntegerLike),
    ("payment_type", TypeClass::IntegerLike),
    ("fare_amount", TypeClass::Number),
    ("extra", TypeClass::Number),
    ("mta_tax", TypeClass::Number),
    ("tip_amount", TypeClass::Number),
    ("tolls_amount", TypeClass::Number),
    ("improvement_surcharge", TypeClass::Number),
    ("total_amount", TypeClass::Number),
];

/// Columns added over the years (2019, 2021, 2025): optional, but checked when present.
pub const TAXI_OPTIONAL: &[(&str, TypeClass)] = &[
    ("congestion_surcharge", TypeClass::Number),
    ("airport_fee", TypeClass::Number),
    ("cbd_congestion_fee", TypeClass::Number),
];

/// Which schema the inputs must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SchemaCheck {
    /// The TLC yellow-taxi columns, in any case, with compatible types.
    #[default]
    Taxi,
    /// Any columns (each still needs a type with a JSON form).
    Any,
}

impl SchemaCheck {
    /// Checks `schema`, reporting every missing required column at once.
    pub fn check(self, schema: &Schema) -> Result<(), Problem> {
        if self == Self::Any {
            return Ok(());
        }
        let mut missing = Vec::new();
        for &(name, class) in TAXI_REQUIRED {
            match find_column(schema, name) {
                None => missing.push(name.to_string()),
                Some(i) => check_type(schema, i, class)?,
            }
        }
        if !missing.is_empty() {
            return Err(Problem::MissingColumns {
                missing,
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            });
        }
        for &(name, class) in TAXI_OPTIONAL {
            if let Some(i) = find_column(schema, name) {
                check_type(schema, i, class)?;
            }
        }
        Ok(())
    }
}

fn check_type(schema: &Schema, i: usize, class: TypeClass) -> Result<(), Problem> {
    let field = schema.field(i);
    if class.accepts(field.data_type()) {
        Ok(())
    } else {
        Err(Problem::WrongType {
            column: field.name().clone(),
            found: field.data_type().to_string(),
            expected: class.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    fn taxi_fields(lower: bool) -> Vec<Field> {
        TAXI_REQUIRED
            .iter()
            .map(|&(name, class)| {
                let t = match class {
                    TypeClass::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
                    TypeClass::IntegerLike => DataType::Int32,
                    TypeClass::Number => DataType::Float64,
                    TypeClass::String => DataType::LargeUtf8,
                };
                let name = if lower {
                    name.to_ascii_lowercase()
                } else {
                    name.to_string()
                };
                Field::new(name, t, true)
            })
            .collect()
    }

    #[test]
    fn accepts_drifted_names_and_types() {
        let mut fields = taxi_fields(true);
        fields.push(Field::new("Airport_fee", DataType::Float64, true));
        fields.push(Field::new("cbd_congestion_fee", DataType::Float64, true));
        SchemaCheck::Taxi.check(&Schema::new(fields)).unwrap();
    }

    #[test]
    fn reports_every_missing_column() {
        let fields: Vec<Field> = taxi_fields(false)
            .into_iter()
            .filter(|f| f.name() != "tpep_pickup_datetime" && f.name() != "fare_amount")
            .collect();
        let err = SchemaCheck::Taxi
            .check(&Schema::new(fields))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing required columns tpep_pickup_datetime, fare_amount"),
            "{err}"
        );
        SchemaCheck::Any
            .check(&Schema::new(Vec::<Field>::new()))
            .unwrap();
    }

    #[test]
    fn rejects_incompatible_types() {
        let mut fields = taxi_fields(false);
        fields[1] = Field::new("tpep_pickup_datetime", DataType::Utf8, true);
        let err = SchemaCheck::Taxi
            .check(&Schema::new(fields))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "column `tpep_pickup_datetime` has type Utf8, expected a timestamp"
        );
        let mut fields = taxi_fields(false);
        fields.push(Field::new("airport_fee", DataType::Utf8, true));
        assert!(SchemaCheck::Taxi.check(&Schema::new(fields)).is_err());
    }
}
