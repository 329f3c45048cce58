//! Real TLC months on demand: `velostream-producer fetch 2023-01..2024-02` downloads NYC TLC
//! yellow-taxi months from the public trip-record URL pattern into a cache directory.
//!
//! Each month is `<base-url>/yellow_tripdata_YYYY-MM.parquet`. A month already in the cache and
//! valid is not fetched again; otherwise it is downloaded to `<file>.part`, resumed with an HTTP
//! `Range` request after a cut connection, checked (the size the server announced, and the Parquet
//! magic and footer length at both ends, so a truncated file is caught) and only then renamed into
//! place. Months download a few at a time (`--parallel`), with a progress bar per file on a
//! terminal and `::velostream::` progress lines otherwise. `--into DIR` links the requested
//! months into a directory of their own, the input of one producer run.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use crate::report::ProgressMode;

/// Where TLC publishes its trip records.
pub const DEFAULT_BASE_URL: &str = "https://d37ci6vzurychx.cloudfront.net/trip-data";

/// The Parquet magic at both ends of a file.
const MAGIC: &[u8; 4] = b"PAR1";

/// A month of trip records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// The year.
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Month {
    /// The file name TLC publishes the month under.
    pub fn file_name(self) -> String {
        format!("yellow_tripdata_{self}.parquet")
    }

    fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    fn parse(s: &str) -> Result<Self, FetchError> {
        let bad = || FetchError::BadMonths(s.to_owned());
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        let (year, month): (i32, u32) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(2009..=2100).contains(&year) || !(1..=12).contains(&month) || y.len() != 4 {
            return Err(bad());
        }
        Ok(Self { year, month })
    }
}

/// Parses `2023-01`, `2023-01..2024-02` (both ends included) or a comma-separated list of either.
pub fn parse_months(spec: &str) -> Result<Vec<Month>, FetchError> {
    let mut months = Vec::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once("..") {
            Some((a, b)) => {
                let (mut m, last) = (Month::parse(a)?, Month::parse(b)?);
                if last < m {
                    return Err(FetchError::BadMonths(part.to_owned()));
                }
                while m <= last {
                    months.push(m);
                    m = m.next();
                }
            }
            None => months.push(Month::parse(part)?),
        }
    }
    if months.is_empty() {
        return Err(FetchError::BadMonths(spec.to_owned()));
    }
    months.sort();
    months.dedup();
    Ok(months)
}

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The months argument is not understood.
    #[error(
        "cannot read the months {0:?}: write YYYY-MM, a range YYYY-MM..YYYY-MM, or a comma-separated list (TLC yellow-taxi data starts in 2009-01)"
    )]
    BadMonths(String),
    /// The server does not have the month.
    #[error(
        "month {month} does not exist at {url} (HTTP {status}); TLC publishes a month about two months after it ends"
    )]
    NoSuchMonth {
        /// The month.
        month: Month,
        /// The URL asked.
        url: String,
        /// The answer.
        status: StatusCode,
    },
    /// The server answered with an error.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The answer.
        status: StatusCode,
    },
    /// The server could not be reached, or the connection broke and could not be resumed.
    #[error(
        "cannot download {url}: {source}; are we offline? Copy the files into the cache ({cache}) by hand, or pass --base-url"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The cache directory.
        cache: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// A downloaded file is not a whole Parquet file.
    #[error("{path} is not a whole Parquet file after downloading it again: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// How to fetch.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Where trip-record files are published (no trailing slash needed).
    pub base_url: String,
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Downloads at once.
    pub parallel: usize,
    /// Attempts per file (resuming after each cut).
    pub attempts: usize,
    /// Time limit to connect and between two chunks of a download.
    pub timeout: Duration,
    /// Progress display.
    pub progress: ProgressMode,
}

/// What happened to one month.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fetched {
    /// The month.
    pub month: String,
    /// The file in the cache.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Whether it was downloaded now (false: it was in the cache).
    pub downloaded: bool,
    /// Rows in the file (from its Parquet footer).
    pub rows: i64,
}

/// Fetches every month (a few at a time) into the cache; returns them in month order.
pub async fn fetch(months: &[Month], config: &FetchConfig) -> Result<Vec<Fetched>, FetchError> {
    std::fs::create_dir_all(&config.cache_dir).map_err(io("creating", &config.cache_dir))?;
    let client = reqwest::Client::builder()
        .connect_timeout(config.timeout)
        .read_timeout(config.timeout)
        .build()
        .map_err(|source| FetchError::Unreachable {
            url: config.base_url.clone(),
            cache: config.cache_dir.display().to_string(),
            source,
        })?;
    let display = Display::new(config.progress);
    let results: Vec<Result<Fetched, FetchError>> = futures::stream::iter(months.iter().copied())
        .map(|m| fetch_month(&client, m, config, &display))
        .buffered(config.parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn fetch_month(
    client: &reqwest::Client,
    month: Month,
    config: &FetchConfig,
    display: &Display,
) -> Result<Fetched, FetchError> {
    let path = config.cache_dir.join(month.file_name());
    let fetched = |downloaded: bool| -> Result<Fetched, FetchError> {
        let bytes = std::fs::metadata(&path)
            .map_err(io("reading", &path))?
            .len();
        Ok(Fetched {
            month: month.to_string(),
            bytes,
            downloaded,
            rows: parquet_rows(&path)?,
            path: path.clone(),
        })
    };
    if path.is_file() {
        match check_parquet(&path) {
            Ok(()) => {
                tracing::info!(%month, path = %path.display(), "In the cache");
                return fetched(false);
            }
            Err(reason) => {
                tracing::warn!(%month, path = %path.display(), %reason, "Cached file is not whole; fetching it again");
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
            }
        }
    }
    let url = format!(
        "{}/{}",
        config.base_url.trim_end_matches('/'),
        month.file_name()
    );
    let part = path.with_extension("parquet.part");
    let bar = display.bar(&month.to_string());
    let attempt = || download(client, &url, &part, month, &bar, config);
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(config.attempts.saturating_sub(1)),
        )
        .when(FetchError::is_transient)
        .notify(|e, delay| {
            tracing::warn!(%month, error = %e, ?delay, "Download interrupted; resuming");
        })
        .await?;
    if let Err(reason) = check_parquet(&part) {
        // Complete as announced but not Parquet: start over once, then give up.
        std::fs::remove_file(&part).map_err(io("removing", &part))?;
        download(client, &url, &part, month, &bar, config).await?;
        check_parquet(&part).map_err(|_| FetchError::Invalid {
            path: part.display().to_string(),
            reason,
        })?;
    }
    std::fs::rename(&part, &path).map_err(io("renaming", &part))?;
    bar.finish();
    tracing::info!(%month, path = %path.display(), "Downloaded");
    fetched(true)
}

impl FetchError {
    /// Whether another attempt may succeed (a cut or timed-out connection, a server error).
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { source, .. } => !source.is_connect() && !source.is_builder(),
            Self::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// Downloads `url` into `part`, resuming from its current length when the server supports ranges.
async fn download(
    client: &reqwest::Client,
    url: &str,
    part: &Path,
    month: Month,
    bar: &Bar,
    config: &FetchConfig,
) -> Result<(), FetchError> {
    let unreachable = |source| FetchError::Unreachable {
        url: url.to_owned(),
        cache: config.cache_dir.display().to_string(),
        source,
    };
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN {
        // The public bucket answers 403 for keys it does not have.
        return Err(FetchError::NoSuchMonth {
            month,
            url: url.to_owned(),
            status,
        });
    }
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let resumed = status == StatusCode::PARTIAL_CONTENT;
    let start = if resumed { have } else { 0 };
    let length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let total = match response.headers().get(CONTENT_RANGE) {
        Some(range) => range
            .to_str()
            .ok()
            .and_then(|r| r.rsplit('/').next()?.parse::<u64>().ok()),
        None => length.map(|l| l + start),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!resumed)
        .append(resumed)
        .open(part)
        .map_err(io("writing", part))?;
    bar.start(total, start);
    let mut written = start;
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        file.write_all(&chunk).map_err(io("writing", part))?;
        written += chunk.len() as u64;
        bar.set(written);
    }
    file.flush().map_err(io("writing", part))?;
    if let Some(total) = total
        && written != total
    {
        return Err(FetchError::Invalid {
            path: part.display().to_string(),
            reason: format!("{written} of {total} bytes arrived"),
        });
    }
    Ok(())
}

/// Checks the Parquet magic at both ends and that the footer length fits in the file.
pub fn check_parquet(path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < 12 {
        return Err(format!("{len} bytes is too short for Parquet"));
    }
    let mut head = [0u8; 4];
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    let mut tail = [0u8; 8];
    f.seek(SeekFrom::End(-8)).map_err(|e| e.to_string())?;
    f.read_exact(&mut tail).map_err(|e| e.to_string())?;
    if &head != MAGIC || &tail[4..] != MAGIC {
        return Err("no PAR1 magic at both ends (a truncated download)".into());
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer + 12 > len {
        return Err(format!(
            "its footer claims {footer} bytes, more than the file holds"
        ));
    }
    Ok(())
}

/// Rows of a Parquet file, from its footer.
fn parquet_rows(path: &Path) -> Result<i64, FetchError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(io("reading", path))?;
    SerializedFileReader::new(file)
        .map(|r| r.metadata().file_metadata().num_rows())
        .map_err(|e| FetchError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Links the fetched months into `dir` (emptied of `*.parquet` first): the input of one run.
pub fn link_into(fetched: &[Fetched], dir: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    for entry in std::fs::read_dir(dir).map_err(io("reading", dir))? {
        let path = entry.map_err(io("reading", dir))?.path();
        if path.extension().is_some_and(|e| e == "parquet") {
            std::fs::remove_file(&path).map_err(io("removing", &path))?;
        }
    }
    for f in fetched {
        let Some(name) = f.path.file_name() else {
            continue;
        };
        let target = std::path::absolute(&f.path).map_err(io("resolving", &f.path))?;
        let link = dir.join(name);
        std::os::unix::fs::symlink(&target, &link).map_err(io("linking", &link))?;
    }
    Ok(())
}

/// Progress of the downloads: bars on a terminal, protocol lines for the orchestrator.
struct Display {
    mode: ProgressMode,
    bars: Option<MultiProgress>,
    /// Bytes done and expected over every download, for the protocol lines.
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Display {
    fn new(mode: ProgressMode) -> Self {
        let mode = mode.resolve();
        Self {
            bars: (mode == ProgressMode::Bar)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            mode,
            done: Arc::default(),
            total: Arc::default(),
        }
    }

    fn bar(&self, name: &str) -> Bar {
        let bar = self.bars.as_ref().map(|mp| {
            let bar = mp.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(name.to_owned());
            bar
        });
        Bar {
            bar,
            lines: self.mode == ProgressMode::Lines,
            done: self.done.clone(),
            total: self.total.clone(),
            mine: Default::default(),
        }
    }
}

/// One download's progress.
struct Bar {
    bar: Option<ProgressBar>,
    lines: bool,
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    /// (bytes counted in `done`, bytes counted in `total`) by this download.
    mine: std::sync::Mutex<(u64, u64)>,
}

impl Bar {
    fn start(&self, total: Option<u64>, at: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.unwrap_or(0));
            bar.set_position(at);
        }
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        let total = total.unwrap_or(0);
        self.total
            .fetch_add(total.saturating_sub(mine.1), Ordering::Relaxed);
        mine.1 = mine.1.max(total);
        drop(mine);
        self.set(at);
    }

    fn set(&self, written: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(written);
        }
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        if written > mine.0 {
            self.done.fetch_add(written - mine.0, Ordering::Relaxed);
            mine.0 = written;
        }
        drop(mine);
        if self.lines {
            velostream_common::protocol::Message::Progress(velostream_common::protocol::Progress {
                done: self.done.load(Ordering::Relaxed),
                total: Some(self.total.load(Ordering::Relaxed)),
                unit: Some("bytes".into()),
            })
            .emit();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_ranges_and_lists() {
        let m = parse_months("2023-11..2024-02").unwrap();
        assert_eq!(
            m.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["2023-11", "2023-12", "2024-01", "2024-02"]
        );
        assert_eq!(
            parse_months("2024-01,2023-01..2023-01,2024-01")
                .unwrap()
                .len(),
            2
        );
        for bad in ["2024-13", "24-01", "2024-02..2024-01", "", "jan", "2024-1x"] {
            assert!(parse_months(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Month::parse("2023-01").unwrap().file_name(),
            "yellow_tripdata_2023-01.parquet"
        );
    }

    #[test]
    fn a_truncated_parquet_file_is_told_from_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.parquet");
        let mut bytes = b"PAR1".to_vec();
        bytes.extend_from_slice(&[0u8; 20]);
        bytes.extend_from_slice(&16u32.to_le_bytes());
        bytes.extend_from_slice(b"PAR1");
        std::fs::write(&whole, &bytes).unwrap();
        assert_eq!(check_parquet(&whole), Ok(()));
        let cut = dir.path().join("cut.parquet");
        std::fs::write(&cut, &bytes[..20]).unwrap();
        assert!(check_parquet(&cut).unwrap_err().contains("truncated"));
    }
}
