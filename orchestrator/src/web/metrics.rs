//! `/metrics` in Prometheus text format:
//!
//! - `velostream_orchestrator_runs{dag,state}`: runs in the store per DAG and state (gauge, read
//!   from the store at each scrape, so runs started by `orchestrator run` count too);
//! - `velostream_orchestrator_task_instances{state}`: task instances per state (gauge, ditto);
//! - `velostream_orchestrator_task_duration_seconds`: histogram of task instance durations (first
//!   try's start to last try's end) of tasks that finished while the server ran;
//! - `velostream_orchestrator_scheduling_delay_seconds`: histogram of how late scheduled runs
//!   started after their cron slot;
//! - `velostream_orchestrator_notifications_total{event,state}`: `[[dag.notify]]` deliveries this
//!   server ended, `delivered` or `gave_up` (counted by the notifier as they end);
//! - `velostream_orchestrator_schedule_slots_claimed_total`, `..._claimed_elsewhere_total`: schedule
//!   slots this server claimed, and found claimed by another server on the state;
//! - `velostream_orchestrator_runs_picked_up_total`: runs of dead servers this server took over.
//!
//! The histograms are fed by [`Metrics::observe`], which the server calls every couple of seconds
//! over the newest runs of the store: the store is the one record every run writes to, whoever
//! drives it (this server or a CLI next to it).

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{RunFilter, RunState, StateCounts, Store, StoreError, TaskState, Trigger};

/// How many of the newest runs each observation looks at.
const OBSERVE_RUNS: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    dag: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Default)]
struct Seen {
    /// Whether the first look (which only records history) happened.
    primed: bool,
    /// Runs whose start was handled.
    started: HashSet<String>,
    /// Finished runs whose tasks were all handled.
    done: HashSet<String>,
    /// (run, task) instances whose end was handled, for runs not yet done.
    tasks: HashSet<(String, String)>,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Gauge>,
    task_instances: Family<StateLabel, Gauge>,
    task_duration: Histogram,
    scheduling_delay: Histogram,
    seen: Mutex<Seen>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<RunLabels, Gauge>::default();
        let task_instances = Family::<StateLabel, Gauge>::default();
        // 0.1 s to about 3.6 h.
        let task_duration = Histogram::new(exponential_buckets(0.1, 2.0, 18));
        // 10 ms to about 10 min.
        let scheduling_delay = Histogram::new(exponential_buckets(0.01, 2.0, 17));
        registry.register(
            "velostream_orchestrator_runs",
            "DAG runs in the state store, per DAG and state",
            runs.clone(),
        );
        registry.register(
            "velostream_orchestrator_task_instances",
            "Task instances in the state store, per state",
            task_instances.clone(),
        );
        registry.register(
            "velostream_orchestrator_task_duration_seconds",
            "Time from a task's first try start to its last try end, for tasks that finished while the server ran",
            task_duration.clone(),
        );
        registry.register(
            "velostream_orchestrator_scheduling_delay_seconds",
            "How long after its cron slot a scheduled run started",
            scheduling_delay.clone(),
        );
        Self {
            registry,
            runs,
            task_instances,
            task_duration,
            scheduling_delay,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Registers the notifier's delivery outcomes (call once, before sharing the metrics).
    pub fn with_notifications(
        mut self,
        outcomes: &Family<
            crate::notify::OutcomeLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Self {
        self.registry.register(
            "velostream_orchestrator_notifications",
            "Notification deliveries ended by this server, per event and final state (delivered or gave_up)",
            outcomes.clone(),
        );
        self
    }

    /// Registers what the server counts of the work it shares with other servers on the state
    /// (call once, before sharing the metrics).
    pub fn with_sharing(mut self, counters: &crate::cron::SharingCounters) -> Self {
        self.registry.register(
            "velostream_orchestrator_schedule_slots_claimed",
            "Schedule slots this server claimed and started a run for",
            counters.slots_claimed.clone(),
        );
        self.registry.register(
            "velostream_orchestrator_schedule_slots_claimed_elsewhere",
            "Schedule slots this server found already claimed by another server on the state",
            counters.slots_claimed_elsewhere.clone(),
        );
        self.registry.register(
            "velostream_orchestrator_runs_picked_up",
            "Runs of dead servers (or of an earlier start of this one) this server took over",
            counters.runs_picked_up.clone(),
        );
        self
    }

    /// Sets the gauges from `counts`; `dags` get zeros for states they have no runs in.
    pub fn set_counts<'a>(&self, counts: &StateCounts, dags: impl IntoIterator<Item = &'a String>) {
        self.runs.clear();
        for dag in dags {
            for state in [RunState::Running, RunState::Success, RunState::Failed] {
                self.runs
                    .get_or_create(&RunLabels {
                        dag: dag.clone(),
                        state: state.as_str().into(),
                    })
                    .set(0);
            }
        }
        for ((dag, state), n) in &counts.runs {
            self.runs
                .get_or_create(&RunLabels {
                    dag: dag.clone(),
                    state: state.as_str().into(),
                })
                .set(*n as i64);
        }
        for state in TaskState::ALL {
            let n = counts.task_instances.get(&state).copied().unwrap_or(0);
            self.task_instances
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(n as i64);
        }
    }

    /// Looks at the newest runs of `store` and observes what happened since the last look: the
    /// scheduling delay of new scheduled runs, the duration of newly finished task instances. The
    /// first look only records what already happened.
    pub fn observe(&self, store: &dyn Store) -> Result<(), StoreError> {
        let runs = store.runs(&RunFilter {
            limit: OBSERVE_RUNS,
            ..RunFilter::default()
        })?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let primed = seen.primed;
        for run in runs {
            if seen.done.contains(&run.run_id) {
                continue;
            }
            if seen.started.insert(run.run_id.clone())
                && primed
                && run.trigger == Trigger::Scheduled
            {
                let delay = (run.started_at - run.logical_date)
                    .num_milliseconds()
                    .max(0);
                self.scheduling_delay.observe(delay as f64 / 1000.0);
            }
            for ti in store.task_instances(&run.run_id)? {
                if !ti.state.is_finished() {
                    continue;
                }
                if !seen.tasks.insert((run.run_id.clone(), ti.task_id.clone())) || !primed {
                    continue;
                }
                if let (Some(start), Some(end)) = (ti.started_at, ti.ended_at) {
                    let ms = (end - start).num_milliseconds().max(0);
                    self.task_duration.observe(ms as f64 / 1000.0);
                }
            }
            if run.state != RunState::Running {
                seen.tasks.retain(|(r, _)| r != &run.run_id);
                seen.started.remove(&run.run_id);
                seen.done.insert(run.run_id);
            }
        }
        seen.primed = true;
        Ok(())
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
