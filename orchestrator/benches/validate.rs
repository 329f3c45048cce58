//! DAG validation time against the number of tasks (not a test): `parse_str` (TOML, checks,
//! graph, templates, the kinds' own validation) on DAGs of 1k, 10k and 50k tasks in two shapes:
//! a chain where every task reads its predecessor's output through a template (each reference
//! asks "is it upstream?") and a wide fan-out/fan-in (one root, a join depending on every task).
//! Prints seconds and microseconds per task, and the ratio of each size's time per task to the
//! 1k one's: near 1 when validation is linear, growing with the size when it is not.
//!
//! `cargo bench -p orchestrator --bench validate [-- 1000 10000 50000]`

use std::time::Instant;

use orchestrator::dag::parse_str_with_env;

fn chain(n: usize) -> String {
    let mut s = String::from("[dag]\nid = \"chain\"\n");
    for i in 0..n {
        s.push_str(&format!("[[task]]\nid = \"t{i}\"\nkind = \"noop\"\n"));
        if i > 0 {
            s.push_str(&format!(
                "depends_on = [\"t{p}\"]\noutputs = {{ seen = \"{{{{ tasks.t{p}.output.n }}}}\" }}\n",
                p = i - 1
            ));
        } else {
            s.push_str("outputs = { n = 1 }\n");
        }
    }
    s
}

fn wide(n: usize) -> String {
    let mut s = String::from("[dag]\nid = \"wide\"\n");
    s.push_str("[[task]]\nid = \"root\"\nkind = \"noop\"\n");
    for i in 0..n.saturating_sub(2) {
        s.push_str(&format!(
            "[[task]]\nid = \"t{i}\"\nkind = \"noop\"\ndepends_on = [\"root\"]\n"
        ));
    }
    let all: Vec<String> = (0..n.saturating_sub(2))
        .map(|i| format!("\"t{i}\""))
        .collect();
    s.push_str(&format!(
        "[[task]]\nid = \"join\"\nkind = \"noop\"\ndepends_on = [{}]\n",
        all.join(", ")
    ));
    s
}

fn seconds(text: &str, n: usize) -> f64 {
    let env = |_: &str| None;
    // Best of a few runs (one at 50k: a quadratic loader takes minutes there).
    let reps = if n >= 50_000 { 1 } else { 3 };
    (0..reps)
        .map(|_| {
            let started = Instant::now();
            let dag = parse_str_with_env(text, "bench.toml", &env).expect("the DAG validates");
            let took = started.elapsed().as_secs_f64();
            assert_eq!(dag.tasks.len(), n);
            took
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 50_000]
    } else {
        sizes
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("shape  tasks      seconds   us/task  per-task vs first size");
    for (name, make) in [("chain", chain as fn(usize) -> String), ("wide", wide)] {
        let mut first = None;
        for &n in &sizes {
            let text = make(n);
            let s = seconds(&text, n);
            let per_task = s / n as f64;
            let base = *first.get_or_insert(per_task);
            println!(
                "{name:<6} {n:>6}  {s:>10.3}  {:>8.1}  {:>6.2}x",
                per_task * 1e6,
                per_task / base
            );
        }
    }
}
