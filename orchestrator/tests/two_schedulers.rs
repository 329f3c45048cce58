//! Two `orchestrator serve` processes on one PostgreSQL state, as two hosts would run them (each
//! names its host with `VELOSTREAM_HOST_NAME`, so neither can see the other's pid and only the
//! lease tells them apart from dead): a schedule firing every 2 s, each run a 3 s task that
//! appends its slot to a file when it completes. One server is frozen (SIGSTOP) while the other
//! fires and finishes slots, and then thawed: with `--catchup` it tries every slot it missed, and
//! the claim must turn each down. Then the server driving a run is SIGKILLed mid-task: the other
//! must pick the run up once the lease runs out and finish it. No slot may complete twice, none
//! between the first and the last may be missing, and the killed server's runs end `success`,
//! driven by the survivor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orchestrator::store::{
    PostgresStore, RepairKind, RunFilter, RunRecord, RunState, Store, TaskState, Trigger,
};
use velostream_testkit::{Postgres, free_port, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");
const TOKEN: &str = "two-schedulers-token";
const DAG_ID: &str = "every_two_seconds";
/// Seconds between slots.
const EVERY: i64 = 2;
/// The servers' lease: longer than the freeze below (about 7 s at most), so the frozen server
/// keeps its runs; the killed server's runs are picked up when it runs out.
const LEASE: &str = "10s";

/// A DAG firing every 2 s whose one task takes 3 s and then appends its slot to `fired`; an
/// interrupted try is retried once.
fn dag(fired: &Path) -> String {
    format!(
        r#"
[dag]
id = "{DAG_ID}"
schedule = "*/{EVERY} * * * * *"
max_active_runs = 16

[[task]]
id = "work"
kind = "command"
retries = 1
retry_delay = "0s"
shell = "sleep 3 && echo '{{{{ logical_date }}}} {{{{ run_id }}}} try {{{{ try_number }}}}' >> {fired}"
"#,
        fired = fired.display()
    )
}

/// One `orchestrator serve`, on the shared state, as host `host`.
struct Server {
    host: &'static str,
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Server {
    fn start(host: &'static str, dir: &Path, dags: &Path, url: &str) -> Self {
        let port = free_port();
        let log = dir.join(format!("serve-{host}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--token", TOKEN, "--catchup", "--kill-grace", "1s"])
            .args(["--heartbeat", "500ms", "--lease", LEASE])
            .arg("--dags")
            .arg(dags)
            .args(["--state", url, "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .env("VELOSTREAM_HOST_NAME", host)
            .env("RUST_LOG", "orchestrator=info")
            .env_remove("VELOSTREAM_STATE")
            .env_remove("VELOSTREAM_LOGS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Self {
            host,
            child,
            port,
            log,
        };
        wait_for(
            &format!("server {host} to answer"),
            Duration::from_secs(30),
            || server.get("/api/health").ok(),
        );
        server
    }

    fn get(&self, path: &str) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}{path}", self.port))
                .bearer_auth(TOKEN)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("HTTP {}", r.status()));
            }
            r.text().await.map_err(|e| e.to_string())
        })
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// A counter of its `/metrics`.
    fn counter(&self, name: &str) -> u64 {
        let text = self.get("/metrics").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics of {}:\n{text}", self.host))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scheduled_runs(store: &PostgresStore) -> Vec<RunRecord> {
    store
        .runs(&RunFilter {
            dag_id: Some(DAG_ID.into()),
            trigger: Some(Trigger::Scheduled),
            ..Default::default()
        })
        .unwrap()
}

/// The slots whose task completed, from the file the task appends to, with how often each did.
fn completed(fired: &Path) -> BTreeMap<DateTime<Utc>, u32> {
    let text = std::fs::read_to_string(fired).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let slot = line.split_whitespace().next().unwrap();
        let slot = DateTime::parse_from_rfc3339(slot)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .with_timezone(&Utc);
        *out.entry(slot).or_insert(0) += 1;
    }
    out
}

#[test]
fn two_servers_fire_each_slot_once_and_the_survivor_finishes_the_killed_servers_runs() {
    let pg = Postgres::start();
    let url = pg.create_database("two_schedulers");
    let dir = tempfile::tempdir().unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let fired = dir.path().join("fired.log");
    std::fs::write(dags.join("every_two_seconds.toml"), dag(&fired)).unwrap();
    let store = PostgresStore::open(&url).unwrap();

    let a = Server::start("server-a", dir.path(), &dags, &url);
    let b = Server::start("server-b", dir.path(), &dags, &url);
    wait_for("four slots to complete", Duration::from_secs(60), || {
        (completed(&fired).len() >= 4).then_some(())
    });

    // B stalls while A fires and finishes slots; thawed, B (with --catchup) tries every slot it
    // missed, and the slots whose runs A finished meanwhile are no longer running: only their
    // claim keeps B from firing them again. (The freeze stays shorter than the lease: a server
    // stalled longer is taken for dead and its runs picked up.)
    b.signal(Signal::SIGSTOP);
    let frozen_at = Utc::now();
    wait_for(
        "A to complete two slots fired while B is frozen",
        Duration::from_secs(30),
        || (completed(&fired).range(frozen_at..).count() >= 2).then_some(()),
    );
    b.signal(Signal::SIGCONT);
    let thawed_at = Utc::now();
    wait_for(
        "a slot to complete after B's thaw",
        Duration::from_secs(30),
        || {
            let thawed = thawed_at - chrono::Duration::seconds(1);
            (completed(&fired).range(thawed..).count() >= 1).then_some(())
        },
    );

    // Kill a server while it drives a run whose task is running.
    let victim_host = wait_for(
        "a run with its task running",
        Duration::from_secs(60),
        || {
            scheduled_runs(&store)
                .into_iter()
                .find(|r| {
                    r.state == RunState::Running
                        && store.task_instances(&r.run_id).unwrap()[0].state == TaskState::Running
                })
                .map(|r| r.owner.host)
        },
    );
    let (victim, survivor) = if victim_host == a.host {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let claimed_by_victim = victim.counter("velostream_orchestrator_schedule_slots_claimed_total");
    victim.signal(Signal::SIGKILL);
    let killed_at = Utc::now();
    let orphaned: Vec<String> = scheduled_runs(&store)
        .into_iter()
        .filter(|r| r.state == RunState::Running && r.owner.host == victim.host)
        .map(|r| r.run_id)
        .collect();
    assert!(
        !orphaned.is_empty(),
        "the killed server drove no run any more"
    );

    // The survivor picks the runs up (after the 2 s lease) and finishes them, and goes on firing.
    for run_id in &orphaned {
        let run = wait_for(
            &format!("the killed server's run {run_id} to end"),
            Duration::from_secs(60),
            || {
                store
                    .run(run_id)
                    .unwrap()
                    .filter(|r| r.state != RunState::Running)
            },
        );
        assert_eq!(run.state, RunState::Success, "{run:?}");
        assert_eq!(run.owner.host, survivor.host, "{run:?}");
        let actions = store.run_actions(run_id).unwrap();
        assert!(
            actions
                .iter()
                .any(|a| a.kind == RepairKind::Resume && a.by.host == survivor.host),
            "{actions:?}"
        );
        let work = &store.task_instances(run_id).unwrap()[0];
        assert_eq!(
            (work.state, work.try_number),
            (TaskState::Success, 2),
            "the interrupted try was retried: {work:?}"
        );
        assert!(
            survivor.log_text().contains(&format!(
                "Picked up run {run_id} from dead server {}",
                victim.host
            )),
            "{}",
            survivor.log_text()
        );
    }
    wait_for(
        "three more slots to complete after the kill",
        Duration::from_secs(60),
        || (completed(&fired).range(killed_at..).count() >= 3).then_some(()),
    );
    let picked_up = survivor.counter("velostream_orchestrator_runs_picked_up_total");
    let claimed_by_survivor =
        survivor.counter("velostream_orchestrator_schedule_slots_claimed_total");
    let claimed_elsewhere =
        survivor.counter("velostream_orchestrator_schedule_slots_claimed_elsewhere_total");

    // Every slot between the first and the last completed exactly once.
    let done = completed(&fired);
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "slots that completed more than once: {twice:?}"
    );
    let (first, last) = (*done.keys().next().unwrap(), *done.keys().last().unwrap());
    let mut missing = Vec::new();
    let mut slot = first;
    while slot <= last {
        if !done.contains_key(&slot) {
            missing.push(slot);
        }
        slot += chrono::Duration::seconds(EVERY);
    }
    // Runs still going at the end have not completed: what lies between the first and the last
    // completed slot counts (slots start in order, and the picked-up runs ended above).
    assert!(
        missing.is_empty(),
        "slots lost between {first} and {last}: {missing:?}"
    );
    let runs = scheduled_runs(&store);
    let mut per_slot: BTreeMap<DateTime<Utc>, u32> = BTreeMap::new();
    for r in &runs {
        *per_slot.entry(r.logical_date).or_default() += 1;
    }
    assert!(per_slot.values().all(|n| *n == 1), "{per_slot:?}");
    let by_host = |host: &str| {
        runs.iter()
            .filter(|r| r.owner.host == host && done.contains_key(&r.logical_date))
            .count()
    };
    let hosts: BTreeSet<&str> = runs.iter().map(|r| r.owner.host.as_str()).collect();
    assert!(
        hosts.contains(a.host) && hosts.contains(b.host),
        "both servers drove runs: {hosts:?}"
    );
    assert_eq!(picked_up, orphaned.len() as u64);
    println!(
        "two schedulers: {} slots completed once each ({first} to {last}), none twice, none \
         missing; runs driven to the end by {}: {}, by {}: {}; slots claimed by {}: {} (until \
         killed), by {}: {} (and {} found claimed by the other); {} killed while it drove {} \
         run(s), picked up by {}: {}",
        done.len(),
        a.host,
        by_host(a.host),
        b.host,
        by_host(b.host),
        victim.host,
        claimed_by_victim,
        survivor.host,
        claimed_by_survivor,
        claimed_elsewhere,
        victim.host,
        orphaned.len(),
        survivor.host,
        picked_up,
    );
}
