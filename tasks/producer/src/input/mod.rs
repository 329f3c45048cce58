//! The Parquet inputs: which files a path, directory or glob names ([`resolve`]), checking every
//! one of them before anything is sent ([`open_all`]: readable, really Parquet, not truncated,
//! the columns the pipeline needs with usable types), then reading them as Arrow record batches.

pub mod schema;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;

use crate::encode::{EncodeError, EncodeOptions, Encoder};
pub use schema::SchemaCheck;

const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// What is wrong with one input file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file cannot be opened or read.
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    /// Zero bytes: nothing to read (an interrupted download, a placeholder).
    #[error("the file is empty (0 bytes); nothing to send: give a Parquet file with rows")]
    Empty,
    /// Neither header nor footer says Parquet.
    #[error("not a Parquet file (it does not start or end with the `PAR1` magic bytes)")]
    NotParquet,
    /// A Parquet header without a footer, or data past the end: the file was cut short.
    #[error("truncated Parquet file: {0}; copy or download it again")]
    Truncated(String),
    /// The footer does not decode.
    #[error("corrupt Parquet metadata: {0}")]
    Metadata(ParquetError),
    /// The data pages do not decode (corruption inside the file).
    #[error("cannot decode its data: {0}")]
    Decode(arrow::error::ArrowError),
    /// Required columns are absent.
    #[error(
        "missing required column{} {} (the file has: {}); pass --schema any to send files of another schema",
        if .missing.len() == 1 { "" } else { "s" },
        .missing.join(", "),
        .available.join(", ")
    )]
    MissingColumns {
        /// The required columns not found (any case).
        missing: Vec<String>,
        /// The file's columns.
        available: Vec<String>,
    },
    /// A required column has a type the pipeline cannot use.
    #[error("column `{column}` has type {found}, expected {expected}")]
    WrongType {
        /// The column, as named in the file.
        column: String,
        /// Its Arrow type.
        found: String,
        /// What would do.
        expected: &'static str,
    },
    /// A column cannot be encoded, or the key column is missing.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

// The message already shows the I/O error: not a `#[source]`, so `{:#}` does not repeat it.
impl From<std::io::Error> for Problem {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// A problem with the inputs, naming the file or pattern.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Something about one file.
    #[error("{}: {problem}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: Problem,
    },
    /// A glob or directory with nothing to read.
    #[error("`{0}` matches no Parquet file")]
    NoMatch(String),
    /// An invalid glob.
    #[error("`{pattern}` is not a valid glob: {error}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        error: glob::PatternError,
    },
    /// Nothing at a path.
    #[error("{}: no such file or directory", .0.display())]
    NotFound(PathBuf),
}

/// Every problem found in the inputs, reported together.
#[derive(Debug)]
pub struct InputErrors(pub Vec<InputError>);

impl std::fmt::Display for InputErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems with the inputs:", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InputErrors {}

/// A checked input file.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Rows, from the footer.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Its Arrow schema.
    pub schema: SchemaRef,
    metadata: ArrowReaderMetadata,
}

impl InputFile {
    /// A reader of the file's record batches, `batch_size` rows each.
    pub fn reader(&self, batch_size: usize) -> Result<ParquetRecordBatchReader, InputError> {
        let file = File::open(&self.path).map_err(|e| self.error(e.into()))?;
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
            .with_batch_size(batch_size)
            .build()
            .map_err(|e| self.error(Problem::Metadata(e)))
    }

    /// Uncompressed size of the file's column data: about its size decoded in memory.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.total_byte_size().max(0) as u64)
            .sum()
    }

    /// Nulls per Parquet leaf column (its dotted path), from the row-group statistics; `None`
    /// when a row group does not say.
    pub fn null_counts(&self) -> Vec<(String, Option<u64>)> {
        let meta = self.metadata.metadata();
        let schema = meta.file_metadata().schema_descr();
        (0..schema.num_columns())
            .map(|i| {
                let nulls = meta.row_groups().iter().try_fold(0u64, |sum, g| {
                    let n = g.column(i).statistics()?.null_count_opt()?;
                    Some(sum + n)
                });
                (schema.column(i).path().string(), nulls)
            })
            .collect()
    }

    /// Row groups in the file.
    pub fn row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    /// An error about this file.
    pub fn error(&self, problem: Problem) -> InputError {
        InputError::File {
            path: self.path.clone(),
            problem,
        }
    }
}

/// The files named by `specs`, in order: a file as is, a directory's `*.parquet` files (sorted,
/// not recursive), a glob's matches (sorted). Every spec that names nothing is reported.
pub fn resolve(specs: &[String]) -> Result<Vec<PathBuf>, InputErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for spec in specs {
        let path = Path::new(spec);
        if path.is_dir() {
            match parquet_files_in(path) {
                Ok(found) if found.is_empty() => errors.push(InputError::NoMatch(spec.clone())),
                Ok(found) => files.extend(found),
                Err(e) => errors.push(InputError::File {
                    path: path.to_path_buf(),
                    problem: e.into(),
                }),
            }
        } else if path.exists() {
            files.push(path.to_path_buf());
        } else if spec.contains(['*', '?', '[']) {
            match glob::glob(spec) {
                Err(error) => errors.push(InputError::Pattern {
                    pattern: spec.clone(),
                    error,
                }),
                Ok(paths) => {
                    let mut found: Vec<PathBuf> = paths
                        .filter_map(Result::ok)
                        .filter(|p| p.is_file())
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        errors.push(InputError::NoMatch(spec.clone()));
                    }
                    files.extend(found);
                }
            }
        } else {
            errors.push(InputError::NotFound(path.to_path_buf()));
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(InputErrors(errors))
    }
}

fn parquet_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        if is_parquet && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Opens and checks every file; returns all of them or every problem found.
pub fn open_all(
    paths: &[PathBuf],
    check: SchemaCheck,
    encode: &EncodeOptions,
) -> Result<Vec<InputFile>, InputErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match open(path, check, encode) {
            Ok(file) => files.push(file),
            Err(problem) => errors.push(InputError::File {
                path: path.clone(),
                problem,
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(InputErrors(errors))
    }
}

/// Opens and checks one file.
pub fn open(path: &Path, check: SchemaCheck, encode: &EncodeOptions) -> Result<InputFile, Problem> {
    let file = File::open(path)?;
    let bytes = file.metadata()?.len();
    if bytes == 0 {
        return Err(Problem::Empty);
    }
    check_magic(&file, bytes)?;
    let metadata =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| match e {
            ParquetError::EOF(_) | ParquetError::NeedMoreData(_) => {
                Problem::Truncated(e.to_string())
            }
            other => Problem::Metadata(other),
        })?;
    check_chunks_in_file(&metadata, bytes)?;
    let schema = Arc::clone(metadata.schema());
    check.check(&schema)?;
    // Builds (and drops) the encoder to find unsupported column types and a missing key now.
    Encoder::new(&schema, encode)?;
    let rows = metadata.metadata().file_metadata().num_rows().max(0) as u64;
    Ok(InputFile {
        path: path.to_path_buf(),
        rows,
        bytes,
        schema,
        metadata,
    })
}

fn check_magic(file: &File, len: u64) -> Result<(), Problem> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 4];
    let head_ok = len >= 4 && file.read_exact_at(&mut head, 0).is_ok() && &head == PARQUET_MAGIC;
    let mut tail = [0u8; 4];
    let tail_ok =
        len >= 12 && file.read_exact_at(&mut tail, len - 4).is_ok() && &tail == PARQUET_MAGIC;
    match (head_ok, tail_ok) {
        (true, true) => Ok(()),
        (true, false) => Err(Problem::Truncated(format!(
            "it starts like Parquet but has no footer ({len} bytes)"
        ))),
        _ => Err(Problem::NotParquet),
    }
}

/// A file cut inside its data but with a footer written later cannot exist, but a footer that
/// points past the end can (a copy spliced together, a bad writer): catch it before sending.
fn check_chunks_in_file(metadata: &ArrowReaderMetadata, len: u64) -> Result<(), Problem> {
    for (g, group) in metadata.metadata().row_groups().iter().enumerate() {
        for column in group.columns() {
            let (start, size) = column.byte_range();
            if start.saturating_add(size) > len {
                return Err(Problem::Truncated(format!(
                    "column `{}` of row group {g} ends at byte {} but the file has {len} bytes",
                    column.column_path(),
                    start.saturating_add(size)
                )));
            }
        }
    }
    Ok(())
}
