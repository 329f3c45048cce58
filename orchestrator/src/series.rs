//! Time series that tasks record while they run (a sensor's lag, a program's rows per second):
//! a typed [`Series`] of `[unix_ms, value]` points, bounded by thinning, sent live as
//! [`RunEvent::Point`](crate::events::RunEvent::Point) and kept with the try's outputs under
//! [`OUTPUT_KEY`]. Front ends chart every series the same way, whatever task recorded it.

use serde::{Deserialize, Serialize};

/// At most this many points are kept per series: past it, every other point is dropped, so a long
/// series keeps its whole time span at half the resolution.
pub const MAX_POINTS: usize = 2000;

/// The output key under which a try's series are stored: `{"<name>": {"unit": ..., "points": ...}}`.
pub const OUTPUT_KEY: &str = "series";

/// One named series of a task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// What is measured (`lag`, `rows_per_sec`).
    pub name: String,
    /// Its unit (`messages`, `rows/s`).
    pub unit: String,
    /// `[unix_ms, value]`, oldest first.
    pub points: Vec<[i64; 2]>,
}

impl Series {
    /// An empty series.
    pub fn new(name: impl Into<String>, unit: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            points: Vec::new(),
        }
    }

    /// Appends a point, thinning the series first when it holds [`MAX_POINTS`].
    pub fn push(&mut self, at_ms: i64, value: i64) {
        if self.points.len() >= MAX_POINTS {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        self.points.push([at_ms, value]);
    }

    /// The highest value (0 for an empty series).
    pub fn peak(&self) -> i64 {
        self.points.iter().map(|p| p[1]).max().unwrap_or(0)
    }

    /// The last value, when there is one.
    pub fn last(&self) -> Option<i64> {
        self.points.last().map(|p| p[1])
    }
}

/// Series keyed by name, as stored in outputs and kept live.
pub type SeriesMap = std::collections::BTreeMap<String, Series>;

/// Records a point into `map`, creating the series on its first point.
pub fn record(map: &mut SeriesMap, name: &str, unit: &str, at_ms: i64, value: i64) {
    map.entry(name.to_owned())
        .or_insert_with(|| Series::new(name, unit))
        .push(at_ms, value);
}

/// The stored form of `map`: the value of [`OUTPUT_KEY`].
pub fn to_output(map: &SeriesMap) -> serde_json::Value {
    serde_json::Value::Object(
        map.iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({"unit": s.unit, "points": s.points}),
                )
            })
            .collect(),
    )
}

/// The series stored in a try's outputs (none when the key is missing or not in the stored form).
pub fn from_outputs(outputs: &serde_json::Map<String, serde_json::Value>) -> Vec<Series> {
    #[derive(Deserialize)]
    struct Stored {
        unit: String,
        points: Vec<[i64; 2]>,
    }
    let Some(serde_json::Value::Object(map)) = outputs.get(OUTPUT_KEY) else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(name, v)| {
            let s: Stored = serde_json::from_value(v.clone()).ok()?;
            Some(Series {
                name: name.clone(),
                unit: s.unit,
                points: s.points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_series_is_thinned_and_keeps_its_span() {
        let mut s = Series::new("lag", "messages");
        for i in 0..(MAX_POINTS as i64 + 1) {
            s.push(i, i);
        }
        assert_eq!(s.points.len(), MAX_POINTS / 2 + 1);
        assert_eq!(s.points[0], [0, 0]);
        assert_eq!(s.last(), Some(MAX_POINTS as i64));
    }

    #[test]
    fn a_long_series_is_thinned_not_truncated() {
        let mut s = Series::new("lag", "messages");
        for i in 0..(MAX_POINTS as i64 * 3) {
            s.push(i, i);
        }
        assert!(s.points.len() <= MAX_POINTS);
        assert_eq!(s.points[0], [0, 0]);
        assert_eq!(*s.points.last().unwrap(), [MAX_POINTS as i64 * 3 - 1; 2]);
    }

    #[test]
    fn series_round_trip_through_outputs() {
        let mut map = SeriesMap::new();
        record(&mut map, "lag", "messages", 1, 10);
        record(&mut map, "lag", "messages", 2, 4);
        record(&mut map, "rows_per_sec", "rows/s", 1, 900);
        let mut outputs = serde_json::Map::new();
        outputs.insert(OUTPUT_KEY.into(), to_output(&map));
        let back = from_outputs(&outputs);
        assert_eq!(back, map.into_values().collect::<Vec<_>>());
        assert_eq!(back[0].peak(), 10);
    }
}
