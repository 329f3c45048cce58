//! A run's background processes, by the id of the task that started them: process.spawn
//! registers them (one program, or each replica of a fleet), process.stop takes them all, and the
//! engine stops whatever is left when the run ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Child, ExitInfo, ProcessError};

/// Background processes of one run.
#[derive(Debug, Default)]
pub struct ProcessRegistry {
    children: Mutex<HashMap<String, Vec<Child>>>,
}

impl ProcessRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Child>>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `children` (a program and its replicas, in replica order) under `task_id`.
    pub fn register(&self, task_id: &str, children: Vec<Child>) -> Result<(), ProcessError> {
        let mut registered = self.lock();
        if registered.contains_key(task_id) {
            return Err(ProcessError::AlreadyRegistered(task_id.to_owned()));
        }
        registered.insert(task_id.to_owned(), children);
        Ok(())
    }

    /// Takes the processes registered under `task_id`, in replica order (the caller stops them).
    pub fn take(&self, task_id: &str) -> Option<Vec<Child>> {
        self.lock().remove(task_id)
    }

    /// Whether `task_id` has registered processes.
    pub fn contains(&self, task_id: &str) -> bool {
        self.lock().contains_key(task_id)
    }

    /// Task ids with registered processes, sorted.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Stops every registered process (SIGTERM to its group, `grace`, SIGKILL), all at once.
    pub async fn stop_all(&self, grace: Duration) -> Vec<(String, Result<ExitInfo, ProcessError>)> {
        let children: Vec<(String, Child)> = self
            .lock()
            .drain()
            .flat_map(|(task_id, children)| children.into_iter().map(move |c| (task_id.clone(), c)))
            .collect();
        let stops = children.into_iter().map(|(task_id, mut child)| async move {
            tracing::info!(task_id, pid = child.pid(), "Stopping background process");
            let result = child.terminate(grace).await;
            (task_id, result)
        });
        futures::future::join_all(stops).await
    }
}
