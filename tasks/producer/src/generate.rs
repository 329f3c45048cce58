//! `generate`: synthetic NYC TLC yellow-taxi Parquet of any size, for benchmarks and tests.
//!
//! Rows look like real trips (sorted pickups across one month, plausible distances, fares that
//! add up to the total, about 2% of rows with the nulls TLC files have) in the column layout of a
//! chosen year, so the drift the producer must survive can be produced at scale. Deterministic
//! for a given seed.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, LargeStringBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Rows built per record batch.
const BATCH_ROWS: usize = 65_536;

/// Which year's column layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// January 2023 like the sample: int64 ids, `double` passenger_count/RatecodeID, `string`,
    /// ns timestamps, `airport_fee`.
    #[value(name = "2023")]
    Y2023,
    /// 2024: int32 VendorID and location ids, int64 passenger_count/RatecodeID, `large_string`,
    /// µs timestamps, `Airport_fee`.
    #[value(name = "2024")]
    Y2024,
    /// 2025: the 2024 layout plus `cbd_congestion_fee`.
    #[value(name = "2025")]
    Y2025,
}

impl Layout {
    fn year(self) -> i64 {
        match self {
            Self::Y2023 => 2023,
            Self::Y2024 => 2024,
            Self::Y2025 => 2025,
        }
    }

    /// The Arrow schema of this layout.
    pub fn schema(self) -> SchemaRef {
        let old = self == Self::Y2023;
        let id = if old {
            DataType::Int64
        } else {
            DataType::Int32
        };
        let count = if old {
            DataType::Float64
        } else {
            DataType::Int64
        };
        let ts = DataType::Timestamp(
            if old {
                TimeUnit::Nanosecond
            } else {
                TimeUnit::Microsecond
            },
            None,
        );
        let text = if old {
            DataType::Utf8
        } else {
            DataType::LargeUtf8
        };
        let f = |name: &str, t: &DataType| Field::new(name, t.clone(), true);
        let money = DataType::Float64;
        let mut fields = vec![
            f("VendorID", &id),
            f("tpep_pickup_datetime", &ts),
            f("tpep_dropoff_datetime", &ts),
            f("passenger_count", &count),
            f("trip_distance", &money),
            f("RatecodeID", &count),
            f("store_and_fwd_flag", &text),
            f("PULocationID", &id),
            f("DOLocationID", &id),
            f("payment_type", &DataType::Int64),
            f("fare_amount", &money),
            f("extra", &money),
            f("mta_tax", &money),
            f("tip_amount", &money),
            f("tolls_amount", &money),
            f("improvement_surcharge", &money),
            f("total_amount", &money),
            f("congestion_surcharge", &money),
            f(if old { "airport_fee" } else { "Airport_fee" }, &money),
        ];
        if self == Self::Y2025 {
            fields.push(f("cbd_congestion_fee", &money));
        }
        Arc::new(Schema::new(fields))
    }
}

/// Parquet compression of generated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileCompression {
    /// Snappy, as TLC files.
    Snappy,
    /// Zstandard.
    Zstd,
    /// None.
    None,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Rows to write.
    pub rows: u64,
    /// Column layout.
    pub layout: Layout,
    /// Random seed.
    pub seed: u64,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Parquet compression.
    pub compression: FileCompression,
}

/// Generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Creating the file failed.
    #[error("cannot create {path}: {error}")]
    Create {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Writing Parquet failed.
    #[error("writing {path} failed: {error}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        error: parquet::errors::ParquetError,
    },
}

/// Writes `config.rows` synthetic trips to `path`; returns the file size.
pub fn generate(path: &Path, config: &GenerateConfig) -> Result<u64, GenerateError> {
    let shown = path.display().to_string();
    let file = File::create(path).map_err(|error| GenerateError::Create {
        path: shown.clone(),
        error,
    })?;
    let compression = match config.compression {
        FileCompression::Snappy => Compression::SNAPPY,
        FileCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        FileCompression::None => Compression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_size(config.row_group_rows.max(1))
        .build();
    let write_err = |error| GenerateError::Write {
        path: shown.clone(),
        error,
    };
    let mut writer =
        ArrowWriter::try_new(file, config.layout.schema(), Some(props)).map_err(write_err)?;
    let mut trips = Trips::new(config);
    let mut written = 0;
    while written < config.rows {
        let n = BATCH_ROWS.min((config.rows - written) as usize);
        writer.write(&trips.batch(n)).map_err(write_err)?;
        written += n as u64;
    }
    writer.close().map_err(write_err)?;
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|error| GenerateError::Create { path: shown, error })
}

/// SplitMix64: small, fast, good enough for synthetic data, and reproducible.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Builds batches of trips in order through the month.
struct Trips {
    layout: Layout,
    rng: Rng,
    total: u64,
    index: u64,
    month_start_us: i64,
}

/// Seconds in 31 days.
const MONTH_SECS: i64 = 31 * 86_400;

impl Trips {
    fn new(config: &GenerateConfig) -> Self {
        let days = (config.layout.year() - 1970) * 365 + (config.layout.year() - 1969) / 4;
        Self {
            layout: config.layout,
            rng: Rng(config.seed),
            total: config.rows.max(1),
            index: 0,
            month_start_us: days * 86_400 * 1_000_000,
        }
    }

    fn batch(&mut self, n: usize) -> RecordBatch {
        let old = self.layout == Layout::Y2023;
        let mut vendor = Vec::with_capacity(n);
        let mut cbd_fees = Vec::with_capacity(n);
        let mut pickup = Vec::with_capacity(n);
        let mut dropoff = Vec::with_capacity(n);
        let mut passengers = Vec::with_capacity(n);
        let mut ratecode = Vec::with_capacity(n);
        let mut flag: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut pu = Vec::with_capacity(n);
        let mut du = Vec::with_capacity(n);
        let mut payment = Int64Builder::with_capacity(n);
        let mut money: [Float64Builder; 10] =
            std::array::from_fn(|_| Float64Builder::with_capacity(n));
        for _ in 0..n {
            let r = &mut self.rng;
            let unknown = r.unit() < 0.02;
            vendor.push(if r.unit() < 0.72 { 2 } else { 1 });
            let base_s = self.index as i64 * MONTH_SECS / self.total as i64;
            let start_us = self.month_start_us + (base_s + r.below(90) as i64) * 1_000_000;
            let distance = cents((-(1.0 - r.unit()).ln() * 3.2).min(60.0) + 0.1);
            let minutes = distance * (2.5 + r.unit() * 3.0) + 1.0 + r.unit() * 4.0;
            let end_us = start_us + (minutes * 60.0) as i64 * 1_000_000;
            pickup.push(start_us);
            dropoff.push(end_us);
            let pickup_zone = 1 + r.below(265) as i64;
            let airport = pickup_zone == 132 || pickup_zone == 138;
            pu.push(pickup_zone);
            du.push(1 + r.below(265) as i64);
            let rate = if airport && r.unit() < 0.5 { 2 } else { 1 };
            let kind = r.unit();
            let pay = if unknown {
                0
            } else if kind < 0.78 {
                1
            } else if kind < 0.97 {
                2
            } else {
                3 + r.below(2) as i64
            };
            payment.append_value(pay);
            let fare = if rate == 2 {
                70.0
            } else {
                cents(3.0 + distance * 3.5 + minutes * 0.7)
            };
            let extra = [0.0, 1.0, 2.5, 5.0][r.below(4) as usize];
            let mta = 0.5;
            let tolls = if r.unit() < 0.06 { 6.94 } else { 0.0 };
            let improvement = 1.0;
            let congestion = if unknown {
                None
            } else if r.unit() < 0.9 {
                Some(2.5)
            } else {
                Some(0.0)
            };
            let airport_fee = if unknown {
                None
            } else if airport {
                Some(1.75)
            } else {
                Some(0.0)
            };
            let cbd = if r.unit() < 0.6 { 0.75 } else { 0.0 };
            let tip = if pay == 1 {
                cents(fare * (0.1 + r.unit() * 0.2))
            } else {
                0.0
            };
            let total = cents(
                fare + extra
                    + mta
                    + tip
                    + tolls
                    + improvement
                    + congestion.unwrap_or(0.0)
                    + airport_fee.unwrap_or(0.0)
                    + if self.layout == Layout::Y2025 {
                        cbd
                    } else {
                        0.0
                    },
            );
            if unknown {
                passengers.push(None);
                ratecode.push(None);
                flag.push(None);
            } else {
                passengers.push(Some(
                    [1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 6][r.below(11) as usize],
                ));
                ratecode.push(Some(rate));
                flag.push(Some(if r.unit() < 0.995 { "N" } else { "Y" }));
            }
            money[0].append_value(distance);
            money[1].append_value(fare);
            money[2].append_value(extra);
            money[3].append_value(mta);
            money[4].append_value(tip);
            money[5].append_value(tolls);
            money[6].append_value(improvement);
            money[7].append_value(total);
            money[8].append_option(congestion);
            money[9].append_option(airport_fee);
            cbd_fees.push(cbd);
            self.index += 1;
        }

        let ids = |v: Vec<i64>| -> ArrayRef {
            if old {
                Arc::new(arrow::array::Int64Array::from(v))
            } else {
                let mut b = Int32Builder::with_capacity(v.len());
                for x in v {
                    b.append_value(x as i32);
                }
                Arc::new(b.finish())
            }
        };
        let times = |v: &[i64]| -> ArrayRef {
            if old {
                let mut b = TimestampNanosecondBuilder::with_capacity(v.len());
                for &x in v {
                    b.append_value(x * 1_000);
                }
                Arc::new(b.finish())
            } else {
                let mut b = TimestampMicrosecondBuilder::with_capacity(v.len());
                for &x in v {
                    b.append_value(x);
                }
                Arc::new(b.finish())
            }
        };
        let counts = |v: Vec<Option<i64>>| -> ArrayRef {
            if old {
                Arc::new(arrow::array::Float64Array::from_iter(
                    v.into_iter().map(|x| x.map(|x| x as f64)),
                ))
            } else {
                Arc::new(arrow::array::Int64Array::from(v))
            }
        };
        let text: ArrayRef = if old {
            let mut b = StringBuilder::with_capacity(n, n);
            for x in &flag {
                b.append_option(*x);
            }
            Arc::new(b.finish())
        } else {
            let mut b = LargeStringBuilder::with_capacity(n, n);
            for x in &flag {
                b.append_option(*x);
            }
            Arc::new(b.finish())
        };
        let [
            distance,
            fare,
            extra,
            mta,
            tip,
            tolls,
            improvement,
            total,
            congestion,
            airport,
        ] = money.map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let mut columns: Vec<ArrayRef> = vec![
            ids(vendor),
            times(&pickup),
            times(&dropoff),
            counts(passengers),
            distance,
            counts(ratecode),
            text,
            ids(pu),
            ids(du),
            Arc::new(payment.finish()),
            fare,
            extra,
            mta,
            tip,
            tolls,
            improvement,
            total,
            congestion,
            airport,
        ];
        if self.layout == Layout::Y2025 {
            columns.push(Arc::new(arrow::array::Float64Array::from(cbd_fees)));
        }
        RecordBatch::try_new(self.layout.schema(), columns)
            .unwrap_or_else(|e| unreachable!("generated columns match the layout: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::EncodeOptions;
    use crate::input::{self, SchemaCheck};

    #[test]
    fn every_layout_passes_the_taxi_check_and_has_nulls() {
        let dir = tempfile::tempdir().unwrap();
        for layout in [Layout::Y2023, Layout::Y2024, Layout::Y2025] {
            let path = dir.path().join("g.parquet");
            let config = GenerateConfig {
                rows: 70_000,
                layout,
                seed: 7,
                row_group_rows: 50_000,
                compression: FileCompression::Zstd,
            };
            generate(&path, &config).unwrap();
            let file = input::open(&path, SchemaCheck::Taxi, &EncodeOptions::default()).unwrap();
            assert_eq!(file.rows, 70_000);
            assert_eq!(file.schema, layout.schema());
            let batches: Vec<_> = file.reader(100_000).unwrap().map(Result::unwrap).collect();
            let nulls: usize = batches.iter().map(|b| b.column(3).null_count()).sum();
            assert!(
                nulls > 700 && nulls < 2_100,
                "{layout:?}: {nulls} null passenger counts"
            );
        }
    }

    #[test]
    fn same_seed_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = GenerateConfig {
            rows: 1_000,
            layout: Layout::Y2024,
            seed: 42,
            row_group_rows: 1_000,
            compression: FileCompression::Snappy,
        };
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        generate(&a, &config).unwrap();
        generate(&b, &config).unwrap();
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
}
