//! Loader validation: every kind of problem is reported with file:line:column, all problems of a
//! file at once, and no input makes the loader panic (property test).

use orchestrator::dag::{LoadError, parse_str_with_env};
use proptest::prelude::*;

fn errors(text: &str) -> LoadError {
    match parse_str_with_env(text, "t.toml", &|_| None) {
        Ok(_) => panic!("the DAG should be rejected:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that the errors include `needle` at `line:col`.
#[track_caller]
fn has(e: &LoadError, line: usize, col: usize, needle: &str) {
    let found = e
        .problems
        .iter()
        .any(|p| p.line == Some(line) && p.column == Some(col) && p.message.contains(needle));
    assert!(found, "no problem {needle:?} at {line}:{col} in:\n{e}");
}

const HEAD: &str = "[dag]\nid = \"d\"\n\n";

#[test]
fn toml_syntax_errors_point_at_the_spot() {
    let e = errors("[dag]\nid = \"d\"\n\n[[task]]\nid = \"a\nkind = \"noop\"\n");
    assert!(e.to_string().starts_with("t.toml:5:"), "{e}");
    let e = errors("[dag\nid = 1\n");
    assert!(e.to_string().starts_with("t.toml:1:"), "{e}");
}

#[test]
fn unknown_kind() {
    let e = errors(&format!(
        "{HEAD}[[task]]\nid = \"a\"\nkind = \"kafka.bogus\"\n"
    ));
    has(
        &e,
        6,
        8,
        "unknown variant `kafka.bogus`, expected one of `command`",
    );
}

#[test]
fn missing_required_fields() {
    let e = errors(&format!(
        "{HEAD}[[task]]\nid = \"a\"\nkind = \"sleep\"\n\n[[task]]\nkind = \"noop\"\n"
    ));
    has(&e, 4, 1, "missing field `duration`");
    has(&e, 8, 1, "missing field `id`");
    let e = errors("[[task]]\nid = \"a\"\nkind = \"noop\"\n");
    has(&e, 1, 1, "missing [dag] section");
    let e = errors("[dag]\ndescription = \"no id\"\n[[task]]\nid = \"a\"\nkind = \"noop\"\n");
    has(&e, 1, 1, "missing field `id`");
    let e = errors(HEAD);
    assert!(e.to_string().contains("the DAG has no tasks"), "{e}");
    let e = errors(&format!("{HEAD}[[task]]\nid = \"a\"\nkind = \"command\"\n"));
    has(&e, 5, 6, "needs `program` (with `args`) or `shell`");
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    let e = errors(
        "[dag]\nid = \"d\"\nowner = \"me\"\n[dag.defaults]\nretires = 3\n[connections.kafka]\nbroker = \"x\"\n[extra]\n[[task]]\nid = \"a\"\nkind = \"noop\"\nfial = true\n",
    );
    has(&e, 3, 1, "unknown field `owner` in [dag]");
    has(&e, 5, 1, "unknown field `retires`");
    has(&e, 7, 1, "unknown field `broker`");
    has(&e, 8, 2, "unknown section `extra`");
    has(&e, 12, 1, "unknown field `fial`");
}

#[test]
fn duplicate_task_ids() {
    let e = errors(&format!(
        "{HEAD}[[task]]\nid = \"a\"\nkind = \"noop\"\n\n[[task]]\nid = \"a\"\nkind = \"noop\"\n"
    ));
    has(&e, 9, 6, "duplicate task id `a` (first defined on line 5)");
}

#[test]
fn unknown_dependency() {
    let e = errors(&format!(
        "{HEAD}[[task]]\nid = \"a\"\nkind = \"noop\"\ndepends_on = [\"b\", \"ghost\"]\n\n[[task]]\nid = \"b\"\nkind = \"noop\"\n"
    ));
    has(
        &e,
        7,
        20,
        "task `a` depends on `ghost`, which is not a task of this DAG",
    );
}

#[test]
fn cycles_name_their_tasks() {
    let e = errors(&format!(
        "{HEAD}[[task]]\nid = \"a\"\nkind = \"noop\"\ndepends_on = [\"c\"]\n\n[[task]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n\n[[task]]\nid = \"c\"\nkind = \"noop\"\ndepends_on = [\"b\"]\n\n[[task]]\nid = \"self\"\nkind = \"noop\"\ndepends_on = [\"self\"]\n"
    ));
    has(
        &e,
        5,
        6,
        "dependency cycle among tasks a, b, c: a depends on c; b depends on a; c depends on b",
    );
    has(&e, 20, 6, "dependency cycle among tasks self");
}

#[test]
fn bad_cron_and_bad_durations() {
    let e = errors(
        "[dag]\nid = \"d\"\nschedule = \"61 * * * *\"\n[dag.defaults]\ntimeout = \"forever\"\n[[task]]\nid = \"a\"\nkind = \"sleep\"\nduration = \"3 parsecs\"\n[[task]]\nid = \"b\"\nkind = \"noop\"\nretry_delay = \"soon\"\n",
    );
    has(&e, 3, 12, "bad cron expression \"61 * * * *\"");
    has(&e, 5, 11, "expected a duration");
    has(&e, 9, 12, "expected a duration");
    has(&e, 13, 15, "expected a duration");
}

#[test]
fn templates_must_name_known_params_and_upstream_tasks() {
    let e = errors(
        "[dag]\nid = \"d\"\n[dag.params]\ntopic = \"t\"\n[[task]]\nid = \"a\"\nkind = \"noop\"\n[[task]]\nid = \"b\"\nkind = \"command\"\nshell = \"echo {{ params.topc }} {{ tasks.a.output.rows }} {{ tasks.zz.output.x }}\"\n[[task]]\nid = \"c\"\nkind = \"command\"\ndepends_on = [\"a\"]\nargs = [\"{{ tasks.a.output.rows }}\", \"{{ nonsense }}\", \"{{ params.topic | upper }}\"]\nprogram = \"echo\"\n",
    );
    has(&e, 11, 9, "unknown param `topc`");
    has(
        &e,
        11,
        9,
        "reads an output of `a`, which is not upstream of this task",
    );
    has(&e, 11, 9, "names task `zz`, which does not exist");
    has(&e, 16, 38, "unknown template variable `nonsense`");
    has(&e, 16, 56, "filters and expressions are not supported");
    assert_eq!(e.problems.len(), 5, "{e}");
}

#[test]
fn other_checks() {
    let e = errors(
        "[dag]\nid = \"bad id\"\nmax_active_runs = 0\n[connections.clickhouse]\npassword = \"${CH_PASSWORD}\"\n[[task]]\nid = \"a.b\"\nkind = \"noop\"\ntrigger_rule = \"sometimes\"\n[[task]]\nid = \"c\"\nkind = \"command\"\nprogram = \"x\"\nshell = \"y\"\n",
    );
    has(&e, 2, 6, "DAG id \"bad id\"");
    has(&e, 3, 19, "max_active_runs must be at least 1");
    has(&e, 5, 12, "environment variable CH_PASSWORD is not set");
    has(&e, 7, 6, "task id \"a.b\"");
    has(&e, 9, 16, "unknown variant `sometimes`");
    has(
        &e,
        14,
        9,
        "give either `program` (with `args`) or `shell`, not both",
    );
}

#[test]
fn a_shell_line_too_long_for_the_os_is_refused_at_load() {
    // Linux passes at most 128 KiB as one argument: a longer `sh -c` line would fail at run time
    // with "Argument list too long".
    let long = format!("echo {}", "x".repeat(200 * 1024));
    let e = errors(&format!(
        "{HEAD}[[task]]\nid = \"big\"\nkind = \"command\"\nshell = \"{long}\"\n"
    ));
    has(
        &e,
        7,
        9,
        "`shell` is 204805 bytes; the OS passes at most 131071 bytes",
    );
    // Just under the limit is fine.
    let fits = format!("echo {}", "x".repeat(100 * 1024));
    parse_str_with_env(
        &format!("{HEAD}[[task]]\nid = \"ok\"\nkind = \"command\"\nshell = \"{fits}\"\n"),
        "t.toml",
        &|_| None,
    )
    .unwrap();
}

#[test]
fn a_file_that_is_not_utf8_gets_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    // "caf\xe9" in Latin-1, on line 4 after "description = \"caf".
    let mut bytes = b"[dag]\nid = \"d\"\n\ndescription = \"caf".to_vec();
    bytes.push(0xe9);
    bytes.extend_from_slice(b"\"\n");
    std::fs::write(&path, &bytes).unwrap();
    let e = orchestrator::dag::load(&path).unwrap_err();
    has(
        &e,
        4,
        19,
        "the file is not UTF-8 text (byte 0xe9 at offset 34)",
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{}:4:19: ", path.display())),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let e = errors(
        "[dag]\nid = \"d\"\nschedule = \"nope\"\n[[task]]\nid = \"a\"\nkind = \"noop\"\ndepends_on = [\"x\"]\n[[task]]\nid = \"a\"\nkind = \"wat\"\n[[task]]\nid = \"c\"\nkind = \"sleep\"\nduration = \"1s\"\ntimeout = \"1 fortnight\"\n",
    );
    let lines: Vec<usize> = e.problems.iter().filter_map(|p| p.line).collect();
    assert_eq!(lines, [3, 7, 9, 10, 15], "{e}");
    let text = e.to_string();
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().all(|l| l.starts_with("t.toml:")), "{text}");
}

#[test]
fn a_complete_dag_loads_with_defaults_applied() {
    let dag = parse_str_with_env(
        r#"
[dag]
id = "full"
schedule = "@hourly"
max_active_tasks = 3

[dag.params]
rows = 10

[dag.defaults]
retries = 2
retry_delay = "3s"
timeout = "1m"

[connections.clickhouse]
url = "http://${CH_HOST:-localhost}:8123"

[[task]]
id = "b"
kind = "noop"
depends_on = ["a"]
retries = 0

[[task]]
id = "a"
kind = "command"
shell = "echo {{ params.rows }}"
"#,
        "full.toml",
        &|k| (k == "CH_HOST").then(|| "ch".into()),
    )
    .unwrap();
    assert_eq!(
        dag.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(dag.tasks[0].retry.retries, 2);
    assert_eq!(dag.tasks[1].retry.retries, 0);
    assert_eq!(dag.tasks[1].retry.delay, std::time::Duration::from_secs(3));
    assert_eq!(
        dag.tasks[0].timeout,
        Some(std::time::Duration::from_secs(60))
    );
    assert!(dag.tasks[0].templates.is_some() && dag.tasks[1].templates.is_none());
    assert_eq!(dag.connections.clickhouse.url, "http://ch:8123");
    assert_eq!(dag.max_active_tasks, 3);
    assert_eq!(dag.max_active_runs, 16);
    assert_eq!(dag.tasks[1].upstream, [0]);
}

const VALID: &str = r#"[dag]
id = "p"
schedule = "*/5 * * * *"
[dag.params]
n = 1
[dag.defaults]
retries = 1
retry_delay = "1s"
[connections.kafka]
brokers = "${B:-localhost:9092}"
[[task]]
id = "a"
kind = "command"
shell = "echo {{ params.n }}"
[[task]]
id = "b"
kind = "sleep"
duration = "1s"
depends_on = ["a"]
trigger_rule = "all_done"
[[task]]
id = "c"
kind = "noop"
depends_on = ["a", "b"]
outputs = { x = "{{ tasks.a.output.rows }}" }
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the loader.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse_str_with_env(&text, "fuzz.toml", &|_| None);
    }

    /// Mutations of a valid DAG (byte edits, deleted and duplicated lines) never panic it, and
    /// every rejection has at least one problem.
    #[test]
    fn mutated_dags_never_panic(
        edits in proptest::collection::vec((0usize..2000, any::<char>()), 0..6),
        drop_line in proptest::option::of(0usize..30),
        dup_line in proptest::option::of(0usize..30),
        template in proptest::option::of("\\{\\{[ a-z._\"|{}-]{0,20}(\\}\\})?"),
    ) {
        let mut lines: Vec<String> = VALID.lines().map(str::to_owned).collect();
        if let Some(i) = dup_line { let i = i % lines.len(); let l = lines[i].clone(); lines.insert(i, l); }
        if let Some(i) = drop_line { let i = i % lines.len(); lines.remove(i); }
        if let Some(t) = template { lines.push(format!("shell = \"{t}\"")); }
        let mut text: Vec<char> = lines.join("\n").chars().collect();
        for (pos, c) in edits {
            let pos = pos % (text.len() + 1);
            text.insert(pos, c);
        }
        let text: String = text.into_iter().collect();
        if let Err(e) = parse_str_with_env(&text, "fuzz.toml", &|_| None) {
            prop_assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }
}

#[test]
fn a_chain_of_20k_tasks_reading_each_others_outputs_validates() {
    // Loading used to be quadratic (every task's ancestors, every task's line found by a scan of
    // the text) and the cycle search recursed once per task, overflowing a test thread's stack.
    // Timings are for the benchmark (`cargo bench -p orchestrator --bench validate`); this checks
    // that a long chain loads at all, with its references checked.
    let n = 20_000;
    let mut text = String::from(HEAD);
    for i in 0..n {
        text.push_str(&format!("[[task]]\nid = \"t{i}\"\nkind = \"noop\"\n"));
        if i > 0 {
            text.push_str(&format!(
                "depends_on = [\"t{p}\"]\noutputs = {{ seen = \"{{{{ tasks.t{p}.output.n }}}}\" }}\n",
                p = i - 1
            ));
        }
    }
    let dag = parse_str_with_env(&text, "t.toml", &|_| None).unwrap();
    assert_eq!(dag.tasks.len(), n);
    // A reference to a task that is not upstream is still found at the end of the chain.
    text.push_str("[[task]]\nid = \"last\"\nkind = \"noop\"\ndepends_on = [\"t5\"]\noutputs = { x = \"{{ tasks.t9999.output.n }}\" }\n");
    let e = errors(&text);
    assert!(e.to_string().contains("t9999"), "{e}");
}
