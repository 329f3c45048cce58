//! Geometry of the inline SVG drawings: the DAG graph (layered left to right), the Gantt
//! timeline of a run and the lag-over-time chart. Only numbers and labels are computed here; the
//! templates draw them (and escape every label).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::view::{TaskInfo, fmt_secs};
use crate::dag::Dag;
use crate::series::Series;
use crate::store::TaskState;

const NODE_W: i64 = 170;
const NODE_H: i64 = 34;
const COL_GAP: i64 = 56;
const ROW_GAP: i64 = 14;
const PAD: i64 = 10;

/// A task box of the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// Left.
    pub x: i64,
    /// Top.
    pub y: i64,
    /// Width.
    pub w: i64,
    /// Height.
    pub h: i64,
    /// Text baseline x.
    pub tx: i64,
    /// Text baseline y.
    pub ty: i64,
    /// Task id.
    pub task_id: String,
    /// Shown label (shortened).
    pub label: String,
    /// Kind.
    pub kind: String,
    /// State (CSS class suffix), `none` without a run.
    pub state: String,
    /// Where a click goes.
    pub href: Option<String>,
}

/// The DAG drawn as boxes and arrows.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// Boxes.
    pub nodes: Vec<Node>,
    /// Arrow paths (`d` attributes).
    pub edges: Vec<String>,
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Lays out `dag` in columns by depth (a task sits one column right of its deepest upstream),
/// ordering each column by the mean row of its upstream tasks to keep arrows short.
pub fn graph(
    dag: &Dag,
    states: &HashMap<String, TaskState>,
    href: impl Fn(&str) -> Option<String>,
) -> Graph {
    let n = dag.tasks.len();
    let mut depth = vec![0usize; n];
    for (i, t) in dag.tasks.iter().enumerate() {
        // Tasks are in topological order: upstream depths are final.
        depth[i] = t.upstream.iter().map(|&u| depth[u] + 1).max().unwrap_or(0);
    }
    let columns = depth.iter().max().map_or(0, |d| d + 1);
    let mut row = vec![0f64; n];
    let mut per_column: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (i, &d) in depth.iter().enumerate() {
        per_column[d].push(i);
    }
    for col in &mut per_column {
        let key = |i: usize| -> f64 {
            let ups = &dag.tasks[i].upstream;
            if ups.is_empty() {
                i as f64
            } else {
                ups.iter().map(|&u| row[u]).sum::<f64>() / ups.len() as f64
            }
        };
        col.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
        for (r, &i) in col.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let rows = per_column.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let pos = |i: usize| -> (i64, i64) {
        (
            PAD + depth[i] as i64 * (NODE_W + COL_GAP),
            PAD + row[i] as i64 * (NODE_H + ROW_GAP),
        )
    };
    let nodes = dag
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (x, y) = pos(i);
            Node {
                x,
                y,
                w: NODE_W,
                h: NODE_H,
                tx: x + 10,
                ty: y + NODE_H / 2 + 5,
                task_id: t.id.clone(),
                label: shorten(&t.id, 21),
                kind: t.kind.name().to_owned(),
                state: states
                    .get(&t.id)
                    .map_or_else(|| "none".to_owned(), |s| s.as_str().to_owned()),
                href: href(&t.id),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (i, t) in dag.tasks.iter().enumerate() {
        for &u in &t.upstream {
            let (ux, uy) = pos(u);
            let (x, y) = pos(i);
            let (x1, y1) = (ux + NODE_W, uy + NODE_H / 2);
            let (x2, y2) = (x - 6, y + NODE_H / 2);
            let mid = (x1 + x2) / 2;
            edges.push(format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"));
        }
    }
    let cols = columns as i64;
    Graph {
        width: PAD * 2 + cols * NODE_W + (cols - 1).max(0) * COL_GAP,
        height: PAD * 2 + rows * NODE_H + (rows - 1).max(0) * ROW_GAP,
        nodes,
        edges,
    }
}

/// A bar of the Gantt chart.
#[derive(Clone, Debug)]
pub struct Bar {
    /// Task id (the row label).
    pub task_id: String,
    /// Label baseline y.
    pub ty: i64,
    /// Top of the bar.
    pub y: i64,
    /// Left.
    pub x: i64,
    /// Width (at least 2 px; 0 when the task never ran).
    pub w: i64,
    /// State.
    pub state: String,
    /// Tooltip.
    pub title: String,
    /// Log page.
    pub href: String,
}

/// A labelled tick of an axis.
#[derive(Clone, Debug)]
pub struct Tick {
    /// Position along the axis.
    pub at: i64,
    /// Label.
    pub label: String,
}

/// The timeline of a run's tasks.
#[derive(Clone, Debug)]
pub struct Gantt {
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// Left of the time area.
    pub left: i64,
    /// Bottom of the bars (the axis).
    pub axis_y: i64,
    /// Label y of the ticks.
    pub tick_y: i64,
    /// One bar per task.
    pub bars: Vec<Bar>,
    /// Time ticks.
    pub ticks: Vec<Tick>,
}

const GANTT_LEFT: i64 = 190;
const GANTT_AREA: i64 = 620;
const BAR_ROW: i64 = 24;

/// Bars from each task's first start to its last end (or `now` while running), on a time axis
/// from the run's start.
pub fn gantt(run_start: DateTime<Utc>, tasks: &[TaskInfo], now: DateTime<Utc>) -> Gantt {
    let start = tasks
        .iter()
        .filter_map(|t| t.started_at)
        .min()
        .map_or(run_start, |s| s.min(run_start));
    let end_of = |t: &TaskInfo| {
        t.ended_at
            .or((t.state == TaskState::Running).then_some(now))
            .or(t.started_at)
    };
    let end = tasks
        .iter()
        .filter_map(end_of)
        .max()
        .unwrap_or(now)
        .max(start);
    let span_ms = (end - start).num_milliseconds().max(1) as f64;
    let scale = |t: DateTime<Utc>| {
        ((t - start).num_milliseconds() as f64 / span_ms * GANTT_AREA as f64).round() as i64
    };
    let bars: Vec<Bar> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let y = 6 + i as i64 * BAR_ROW;
            let (x, w) = match (t.started_at, end_of(t)) {
                (Some(s), Some(e)) => {
                    let x = scale(s);
                    (x, (scale(e) - x).max(2))
                }
                _ => (0, 0),
            };
            Bar {
                task_id: shorten(&t.task_id, 26),
                ty: y + 13,
                y,
                x: GANTT_LEFT + x,
                w,
                state: t.state.as_str().to_owned(),
                title: format!(
                    "{}: {} (started {}, took {})",
                    t.task_id,
                    t.state,
                    t.started(),
                    t.duration()
                ),
                href: t.log_url.clone(),
            }
        })
        .collect();
    let axis_y = 6 + tasks.len() as i64 * BAR_ROW + 2;
    let ticks = (0..=4)
        .map(|k| Tick {
            at: GANTT_LEFT + GANTT_AREA * k / 4,
            label: format!("+{}", fmt_secs(Some(span_ms / 1000.0 * k as f64 / 4.0))),
        })
        .collect();
    Gantt {
        width: GANTT_LEFT + GANTT_AREA + 40,
        height: axis_y + 22,
        left: GANTT_LEFT,
        axis_y,
        tick_y: axis_y + 16,
        bars,
        ticks,
    }
}

/// A line chart of one time series of a task.
#[derive(Clone, Debug)]
pub struct Chart {
    /// The task that recorded it.
    pub task_id: String,
    /// The series' name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// Left of the plot.
    pub left: i64,
    /// Right of the plot.
    pub right: i64,
    /// Bottom of the plot.
    pub bottom: i64,
    /// `points` attribute of the polyline.
    pub points: String,
    /// Value ticks (y).
    pub y_ticks: Vec<Tick>,
    /// Time ticks (x).
    pub x_ticks: Vec<Tick>,
    /// Highest value.
    pub peak: i64,
    /// Last value.
    pub last: i64,
    /// Number of points.
    pub points_count: usize,
}

/// The chart of a task's series, or `None` when it has no point.
pub fn chart(task_id: &str, s: &Series) -> Option<Chart> {
    let series = &s.points;
    let first = series.first()?;
    let last = series.last()?;
    let (left, right, top, bottom) = (70i64, 800i64, 12i64, 190i64);
    let t0 = first[0];
    let span = (last[0] - t0).max(1) as f64;
    let peak = series.iter().map(|p| p[1]).max().unwrap_or(0).max(0);
    let ymax = nice_ceiling(peak.max(1));
    let x = |t: i64| left + (((t - t0) as f64 / span) * (right - left) as f64).round() as i64;
    let y =
        |v: i64| bottom - ((v.max(0) as f64 / ymax as f64) * (bottom - top) as f64).round() as i64;
    let points = if series.len() == 1 {
        format!("{left},{y0} {right},{y0}", y0 = y(first[1]))
    } else {
        series
            .iter()
            .map(|p| format!("{},{}", x(p[0]), y(p[1])))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(Chart {
        task_id: task_id.to_owned(),
        name: s.name.clone(),
        unit: s.unit.clone(),
        width: right + 20,
        height: bottom + 30,
        left,
        right,
        bottom,
        points,
        y_ticks: (0..=4)
            .map(|k| Tick {
                at: y(ymax * k / 4),
                label: (ymax * k / 4).to_string(),
            })
            .collect(),
        x_ticks: (0..=4)
            .map(|k| Tick {
                at: left + (right - left) * k / 4,
                label: format!("+{}", fmt_secs(Some(span / 1000.0 * k as f64 / 4.0))),
            })
            .collect(),
        peak,
        last: last[1],
        points_count: series.len(),
    })
}

/// The smallest of 1, 2, 5 x 10^k that is at least `v`, and divisible by 4 when large enough.
fn nice_ceiling(v: i64) -> i64 {
    let mut base = 1i64;
    loop {
        for m in [1, 2, 5] {
            let c = m * base;
            if c >= v {
                return c.max(4);
            }
        }
        base = base.saturating_mul(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1), 4);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(37), 50);
        assert_eq!(nice_ceiling(100_000), 100_000);
        assert_eq!(nice_ceiling(120_001), 200_000);
    }

    #[test]
    fn a_chart_spans_the_plot() {
        let lag = |points: &[[i64; 2]]| Series {
            name: "lag".into(),
            unit: "messages".into(),
            points: points.to_vec(),
        };
        let c = chart("wait", &lag(&[[1000, 100], [2000, 40], [3000, 0]])).unwrap();
        assert_eq!(c.points, "70,12 435,119 800,190");
        assert_eq!(c.peak, 100);
        assert_eq!(c.last, 0);
        assert!(chart("wait", &lag(&[])).is_none());
        assert_eq!(chart("w", &lag(&[[5, 3]])).unwrap().points_count, 1);
    }
}
