//! Graph algorithms on the task dependency graph (petgraph): cycles with their members,
//! topological order, ancestors, and rendering as text and Graphviz DOT.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::Dag;

/// Dependency edges as `upstream[i]` = indices task `i` depends on.
pub(crate) fn build(upstream: &[Vec<usize>]) -> DiGraph<(), ()> {
    let mut g = DiGraph::with_capacity(upstream.len(), upstream.iter().map(Vec::len).sum());
    for _ in upstream {
        g.add_node(());
    }
    for (i, ups) in upstream.iter().enumerate() {
        for &u in ups {
            g.add_edge(NodeIndex::new(u), NodeIndex::new(i), ());
        }
    }
    g
}

/// Every cycle (strongly connected component with more than one task, or a self-dependency),
/// members in file order.
pub(crate) fn cycles(upstream: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let g = build(upstream);
    // Kosaraju, not Tarjan: petgraph's Tarjan recurses once per task of a chain and overflows the
    // stack on a chain of 50k tasks; Kosaraju walks with explicit stacks.
    let mut out: Vec<Vec<usize>> = kosaraju_scc(&g)
        .into_iter()
        .filter(|scc| scc.len() > 1 || upstream[scc[0].index()].contains(&scc[0].index()))
        .map(|scc| {
            let mut v: Vec<usize> = scc.into_iter().map(NodeIndex::index).collect();
            v.sort_unstable();
            v
        })
        .collect();
    out.sort();
    out
}

/// Topological order of an acyclic graph, ties broken by file order (Kahn's algorithm).
pub(crate) fn topo_order(upstream: &[Vec<usize>]) -> Vec<usize> {
    let n = upstream.len();
    let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut downstream = vec![Vec::new(); n];
    for (i, ups) in upstream.iter().enumerate() {
        for &u in ups {
            downstream[u].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downstream[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

/// Every task upstream of `task`, directly or not (works on cyclic graphs too).
#[cfg(test)]
pub(crate) fn ancestors(upstream: &[Vec<usize>], task: usize) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = upstream[task].clone();
    while let Some(u) = stack.pop() {
        if seen.insert(u) {
            stack.extend(upstream[u].iter().copied());
        }
    }
    seen
}

/// Each task's position in [`topo_order`], for [`is_ancestor`]; all zeros when the graph has a
/// cycle (the order is then partial and cannot prune the search).
pub(crate) fn ranks(upstream: &[Vec<usize>]) -> Vec<usize> {
    let order = topo_order(upstream);
    let mut rank = vec![0; upstream.len()];
    if order.len() == upstream.len() {
        for (position, &task) in order.iter().enumerate() {
            rank[task] = position;
        }
    }
    rank
}

/// Whether `anc` is upstream of `task`, directly or not (never of itself). The search walks up
/// from `task` and skips every task ranked before `anc` in the topological order (none of them
/// can lead to it), so asking about a nearby upstream task costs little whatever the DAG's size.
/// Answers the loader's question per reference, instead of computing every task's ancestors
/// (quadratic in the number of tasks).
pub(crate) fn is_ancestor(
    upstream: &[Vec<usize>],
    rank: &[usize],
    anc: usize,
    task: usize,
) -> bool {
    if anc == task {
        return false;
    }
    let floor = rank[anc];
    let mut seen = HashSet::new();
    let mut stack = vec![task];
    while let Some(t) = stack.pop() {
        for &u in &upstream[t] {
            if u == anc {
                return true;
            }
            if rank[u] >= floor && seen.insert(u) {
                stack.push(u);
            }
        }
    }
    false
}

/// The DAG as text: tasks in topological order with kind, upstream tasks and trigger rule.
pub fn render_text(dag: &Dag) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "DAG {} ({} tasks)", dag.id, dag.tasks.len());
    if let Some(d) = &dag.description {
        let _ = writeln!(out, "  {d}");
    }
    if let Some(s) = &dag.schedule {
        let _ = writeln!(out, "  schedule: {}", s.expr);
    }
    let id_w = dag.tasks.iter().map(|t| t.id.len()).max().unwrap_or(0);
    let kind_w = dag
        .tasks
        .iter()
        .map(|t| t.kind.name().len())
        .max()
        .unwrap_or(0);
    for t in &dag.tasks {
        let _ = write!(out, "  {:id_w$}  {:kind_w$}", t.id, t.kind.name());
        if !t.upstream.is_empty() {
            let ups: Vec<&str> = t
                .upstream
                .iter()
                .map(|&u| dag.tasks[u].id.as_str())
                .collect();
            let _ = write!(out, "  <- {}", ups.join(", "));
        }
        if t.trigger_rule != Default::default() {
            let _ = write!(out, "  [{}]", t.trigger_rule.as_str());
        }
        out = out.trim_end().to_owned();
        out.push('\n');
    }
    out
}

/// The DAG in Graphviz DOT (`orchestrator graph FILE --format dot | dot -Tsvg`).
pub fn render_dot(dag: &Dag) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", q(&dag.id));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    for t in &dag.tasks {
        let mut label = format!("{}\\n{}", t.id, t.kind.name());
        if t.trigger_rule != Default::default() {
            label.push_str(&format!("\\n[{}]", t.trigger_rule.as_str()));
        }
        let _ = writeln!(
            out,
            "  {} [label=\"{}\"];",
            q(&t.id),
            label.replace('"', "\\\"")
        );
    }
    for t in &dag.tasks {
        for &u in &t.upstream {
            let _ = writeln!(out, "  {} -> {};", q(&dag.tasks[u].id), q(&t.id));
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_by_search_agree_with_the_full_set() {
        // A diamond, a chain beside it, and a cycle (ranks all zero).
        for up in [
            vec![
                vec![],
                vec![0],
                vec![0],
                vec![1, 2],
                vec![],
                vec![4],
                vec![3, 5],
            ],
            vec![vec![2], vec![0], vec![1], vec![2]],
        ] {
            let rank = ranks(&up);
            for task in 0..up.len() {
                let all = ancestors(&up, task);
                for anc in 0..up.len() {
                    assert_eq!(
                        is_ancestor(&up, &rank, anc, task),
                        all.contains(&anc) && anc != task,
                        "{anc} upstream of {task} in {up:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn cycles_topo_order_and_ancestors() {
        // 0 -> 1 -> 2 -> 1, 3 self-loop, 4 alone.
        let up = vec![vec![], vec![0, 2], vec![1], vec![3], vec![]];
        assert_eq!(cycles(&up), vec![vec![1, 2], vec![3]]);
        assert_eq!(ancestors(&up, 2), HashSet::from([0, 1, 2]));
        let dag = vec![vec![], vec![0], vec![0], vec![1, 2]];
        assert_eq!(topo_order(&dag), vec![0, 1, 2, 3]);
        assert!(cycles(&dag).is_empty());
    }
}
