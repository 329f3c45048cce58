//! Reading what a `/metrics` endpoint serves (Prometheus text or OpenMetrics): the metric families
//! it declares, the series names a PromQL query can select, and sample values (the benchmark reads
//! the consumer's lag and insert latency this way).

use std::collections::{BTreeMap, BTreeSet};

/// The kind a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter: its samples are `<name>_total` (and `<name>_created`).
    Counter,
    /// A gauge: its samples are `<name>`.
    Gauge,
    /// A histogram: `<name>_bucket`, `<name>_sum`, `<name>_count`.
    Histogram,
    /// A summary: `<name>`, `<name>_sum`, `<name>_count`.
    Summary,
    /// An info metric: `<name>_info`.
    Info,
    /// Anything else (`unknown`, `stateset`, `gaugehistogram`...): `<name>` as is.
    Other,
}

impl Kind {
    fn parse(s: &str) -> Self {
        match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            _ => Self::Other,
        }
    }

    /// The series names a family of this kind produces.
    fn series(self, family: &str) -> Vec<String> {
        let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{family}{s}")).collect();
        match self {
            Self::Counter if family.ends_with("_total") => vec![family.to_string()],
            Self::Counter => with(&["_total", "_created"]),
            Self::Gauge | Self::Other => vec![family.to_string()],
            Self::Histogram => with(&["_bucket", "_sum", "_count", "_created"]),
            Self::Summary => with(&["", "_sum", "_count", "_created"]),
            Self::Info => with(&["_info"]),
        }
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series name.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Families declared by `# TYPE` lines.
    pub families: BTreeMap<String, Kind>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics text is not a sample or a comment: {text:?}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
}

impl Exposition {
    /// Parses Prometheus text or OpenMetrics.
    pub fn parse(text: &str) -> Result<Self, ExpositionError> {
        let mut out = Self::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE")
                    && let (Some(name), Some(kind)) = (words.next(), words.next())
                {
                    out.families.insert(name.to_string(), Kind::parse(kind));
                }
                continue;
            }
            let sample = parse_sample(line).ok_or_else(|| ExpositionError {
                line: n + 1,
                text: raw.to_string(),
            })?;
            out.samples.push(sample);
        }
        Ok(out)
    }

    /// Every series name a query can select: those the declared families produce, and those of the
    /// samples present.
    pub fn series_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .families
            .iter()
            .flat_map(|(family, kind)| kind.series(family))
            .collect();
        names.extend(self.samples.iter().map(|s| s.name.clone()));
        names
    }

    /// Samples of series `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of every sample of series `name`; `None` if there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut values = self.series(name).map(|s| s.value).peekable();
        values.peek()?;
        Some(values.sum())
    }

    /// Mean of histogram `family` (`_sum / _count`), `None` before the first observation.
    pub fn histogram_mean(&self, family: &str) -> Option<f64> {
        let count = self.sum(&format!("{family}_count"))?;
        let sum = self.sum(&format!("{family}_sum"))?;
        (count > 0.0).then(|| sum / count)
    }
}

/// `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels up to the closing `}`; returns them and the text after the brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = s[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP velostream_consumer_rows_inserted Rows ClickHouse acknowledged.
# TYPE velostream_consumer_rows_inserted counter
velostream_consumer_rows_inserted_total 5
# TYPE velostream_consumer_partition_lag gauge
velostream_consumer_partition_lag{topic="taxi",partition="3"} 7
velostream_consumer_partition_lag{topic="ta\"xi",partition="4"} 2
# TYPE velostream_consumer_insert_duration_seconds histogram
velostream_consumer_insert_duration_seconds_sum 1.5
velostream_consumer_insert_duration_seconds_count 3
velostream_consumer_insert_duration_seconds_bucket{le="0.005"} 0
velostream_consumer_insert_duration_seconds_bucket{le="+Inf"} 3
# TYPE velostream_orchestrator_runs gauge
# EOF
"#;

    #[test]
    fn families_give_the_series_names_queries_use() {
        let e = Exposition::parse(TEXT).unwrap();
        let names = e.series_names();
        for n in [
            "velostream_consumer_rows_inserted_total",
            "velostream_consumer_partition_lag",
            "velostream_consumer_insert_duration_seconds_bucket",
            "velostream_consumer_insert_duration_seconds_count",
            // Declared without samples yet: still exported.
            "velostream_orchestrator_runs",
        ] {
            assert!(names.contains(n), "{n} missing from {names:?}");
        }
        assert!(!names.contains("velostream_consumer_rows_inserted"));
    }

    #[test]
    fn samples_labels_and_aggregates() {
        let e = Exposition::parse(TEXT).unwrap();
        assert_eq!(e.sum("velostream_consumer_partition_lag"), Some(9.0));
        let quoted = e
            .series("velostream_consumer_partition_lag")
            .nth(1)
            .unwrap();
        assert_eq!(quoted.label("topic"), Some("ta\"xi"));
        assert_eq!(quoted.label("partition"), Some("4"));
        assert_eq!(
            e.histogram_mean("velostream_consumer_insert_duration_seconds"),
            Some(0.5)
        );
        assert_eq!(e.sum("nope"), None);
    }

    #[test]
    fn garbage_is_reported_with_its_line() {
        let err = Exposition::parse("# ok\nnot a sample\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
