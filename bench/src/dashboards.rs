//! Checks of the Grafana dashboards in `observability/grafana/dashboards`: each file parses, has a
//! unique uid and title, every panel queries the provisioned Prometheus datasource, and every
//! PromQL query (panels and template variables) names only metrics our programs export. The
//! exported names come from the caller, who scrapes the real `/metrics` endpoints.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::promql;

/// The datasource uid the dashboards use, provisioned by
/// `observability/grafana/provisioning/datasources/prometheus.yml`.
pub const DATASOURCE_UID: &str = "velostream-prometheus";

/// A dashboard file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The folder or a file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file is not JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
    /// The folder holds no dashboard.
    #[error("no *.json dashboard in {0}")]
    Empty(PathBuf),
}

/// A query of a dashboard: a panel target or a template variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The panel's title, or `variable <name>`.
    pub owner: String,
    /// The PromQL (or Grafana variable query).
    pub expr: String,
    /// Whether it is a template variable's query.
    pub variable: bool,
}

/// A parsed dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The file it came from.
    pub file: PathBuf,
    /// The whole JSON.
    pub json: Value,
}

/// One thing wrong with a dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dashboard file.
    pub file: PathBuf,
    /// The panel or variable.
    pub owner: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.owner,
            self.message
        )
    }
}

/// Loads every `*.json` file of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Dashboard>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty(dir.to_path_buf()));
    }
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
                path: file.clone(),
                source,
            })?;
            let json = serde_json::from_str(&text).map_err(|source| LoadError::Json {
                path: file.clone(),
                source,
            })?;
            Ok(Dashboard { file, json })
        })
        .collect()
}

impl Dashboard {
    /// Every panel, rows' nested panels included, rows themselves excluded.
    pub fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
            for p in panels {
                if p["type"] == "row" {
                    if let Some(inner) = p["panels"].as_array() {
                        walk(inner, out);
                    }
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        if let Some(panels) = self.json["panels"].as_array() {
            walk(panels, &mut out);
        }
        out
    }

    /// Every query: panel targets' `expr`, then template variables' queries.
    pub fn queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        owner: panel_name(panel),
                        expr: expr.to_string(),
                        variable: false,
                    });
                }
            }
        }
        for var in self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .unwrap_or_default();
            out.push(Query {
                owner: format!("variable {}", var["name"].as_str().unwrap_or("?")),
                expr: query.to_string(),
                variable: true,
            });
        }
        out
    }

    /// Every metric name the dashboard's queries select.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.queries()
            .iter()
            .filter_map(|q| names_of(q).ok())
            .flatten()
            .collect()
    }
}

fn panel_name(panel: &Value) -> String {
    format!(
        "panel {} {:?}",
        panel["id"],
        panel["title"].as_str().unwrap_or("(untitled)")
    )
}

fn names_of(q: &Query) -> Result<Vec<String>, promql::PromqlError> {
    if q.variable {
        promql::variable_metric_names(&q.expr)
    } else {
        promql::metric_names(&q.expr)
    }
}

/// Everything wrong with `dashboards`, given the series names our programs export.
pub fn check(dashboards: &[Dashboard], exported: &BTreeSet<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut uids = HashSet::new();
    for d in dashboards {
        let mut problem = |owner: &str, message: String| {
            problems.push(Problem {
                file: d.file.clone(),
                owner: owner.to_string(),
                message,
            })
        };
        match d.json["uid"].as_str() {
            Some(uid) if !uid.is_empty() => {
                if !uids.insert(uid.to_string()) {
                    problem(
                        "dashboard",
                        format!("uid {uid:?} is used by another dashboard: give each its own"),
                    );
                }
            }
            _ => problem(
                "dashboard",
                "has no uid: set one so links and provisioning stay stable".into(),
            ),
        }
        if d.json["title"].as_str().is_none_or(str::is_empty) {
            problem("dashboard", "has no title".into());
        }
        let panels = d.panels();
        if panels.is_empty() {
            problem("dashboard", "has no panels".into());
        }
        let mut ids = HashSet::new();
        for panel in &panels {
            let name = panel_name(panel);
            if !ids.insert(panel["id"].to_string()) {
                problem(&name, "duplicate panel id".into());
            }
            if panel["gridPos"]["w"].as_u64().is_none() || panel["gridPos"]["h"].as_u64().is_none()
            {
                problem(&name, "has no gridPos width and height".into());
            }
            let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
            if targets.is_empty() {
                problem(&name, "has no query".into());
            }
            for ds in std::iter::once(&panel["datasource"])
                .chain(targets.iter().map(|t| &t["datasource"]))
            {
                if ds["uid"] != DATASOURCE_UID {
                    problem(
                        &name,
                        format!(
                            "queries datasource {ds} instead of the provisioned uid {DATASOURCE_UID:?}"
                        ),
                    );
                }
            }
            for t in targets {
                if t["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                    problem(&name, format!("target {} has no PromQL expr", t["refId"]));
                }
            }
        }
        for q in d.queries() {
            match names_of(&q) {
                Err(e) => problem(&q.owner, e.to_string()),
                Ok(names) if names.is_empty() && !q.variable => {
                    problem(&q.owner, format!("query `{}` names no metric", q.expr))
                }
                Ok(names) => {
                    for name in names.iter().filter(|n| !exported.contains(*n)) {
                        problem(
                            &q.owner,
                            format!(
                                "query `{}` names {name}, which no velostream program exports; \
                                 fix the name or export it (see observability/README.md)",
                                q.expr
                            ),
                        );
                    }
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard(json: Value) -> Dashboard {
        Dashboard {
            file: "t.json".into(),
            json,
        }
    }

    fn ds() -> Value {
        serde_json::json!({"type": "prometheus", "uid": DATASOURCE_UID})
    }

    fn panel(id: u32, expr: &str) -> Value {
        serde_json::json!({
            "id": id, "type": "timeseries", "title": format!("p{id}"), "datasource": ds(),
            "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
            "targets": [{"refId": "A", "datasource": ds(), "expr": expr}]
        })
    }

    fn exported() -> BTreeSet<String> {
        [
            "velostream_consumer_rows_inserted_total",
            "velostream_orchestrator_runs",
        ]
        .map(String::from)
        .into()
    }

    #[test]
    fn a_good_dashboard_passes() {
        let d = dashboard(serde_json::json!({
            "uid": "a", "title": "A",
            "panels": [
                {"id": 1, "type": "row", "title": "r", "panels": [panel(2, "sum(rate(velostream_consumer_rows_inserted_total[5m]))")]},
                panel(3, r#"velostream_orchestrator_runs{state="failed"}"#),
            ],
            "templating": {"list": [{"name": "dag", "type": "query", "query": {"query": "label_values(velostream_orchestrator_runs, dag)"}}]}
        }));
        assert_eq!(check(std::slice::from_ref(&d), &exported()), []);
        assert_eq!(d.panels().len(), 2);
        assert_eq!(d.queries().len(), 3);
    }

    #[test]
    fn an_unknown_metric_fails_wherever_it_is() {
        let d = dashboard(serde_json::json!({
            "uid": "a", "title": "A",
            "panels": [panel(1, "rate(velostream_consumer_rows_inserted[5m])")],
            "templating": {"list": [{"name": "v", "type": "query", "query": "label_values(velostream_nope, dag)"}]}
        }));
        let problems = check(&[d], &exported());
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0]
                .message
                .contains("names velostream_consumer_rows_inserted,")
        );
        assert!(problems[1].message.contains("velostream_nope"));
    }

    #[test]
    fn structure_problems_are_all_reported() {
        let mut bad = panel(1, "sum(velostream_orchestrator_runs)");
        bad["datasource"] = serde_json::json!({"uid": "other"});
        let empty = serde_json::json!({"id": 1, "type": "stat", "title": "s", "gridPos": {"w": 1, "h": 1}, "datasource": ds()});
        let d1 = dashboard(serde_json::json!({"uid": "a", "title": "A", "panels": [bad, empty]}));
        let d2 = dashboard(serde_json::json!({"uid": "a", "panels": [panel(1, "42")]}));
        let messages: Vec<String> = check(&[d1, d2], &exported())
            .into_iter()
            .map(|p| p.message)
            .collect();
        for want in [
            "queries datasource",
            "duplicate panel id",
            "has no query",
            "is used by another dashboard",
            "has no title",
            "names no metric",
        ] {
            assert!(
                messages.iter().any(|m| m.contains(want)),
                "{want} not in {messages:#?}"
            );
        }
    }
}
