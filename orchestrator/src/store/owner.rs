//! Who owns a run: this host, pid and process start time, and whether such an owner still lives:
//! on this host by its pid, elsewhere by its server lease ([`Liveness`]).

use std::collections::HashMap;

use super::{Owner, Store, StoreError};

/// The variable that names this machine in the state instead of the kernel's host name: give
/// each its own when processes on several machines (containers sharing a host name but not
/// their process ids) share one database.
pub const HOST_NAME_VAR: &str = "VELOSTREAM_HOST_NAME";

/// The current process as an [`Owner`].
pub fn current_owner() -> Owner {
    let pid = std::process::id();
    Owner {
        host: host_name(),
        pid,
        start_ticks: process_start_ticks(pid).unwrap_or(0),
    }
}

/// Whether `owner` is a live process: on this host, its pid exists and started at the same time.
/// Owners on other hosts are assumed alive (this cannot tell; [`Liveness`] asks their leases).
pub fn is_alive(owner: &Owner) -> bool {
    if owner.host != host_name() {
        return true;
    }
    match process_start_ticks(owner.pid) {
        Some(ticks) => owner.start_ticks == 0 || ticks == owner.start_ticks,
        None => false,
    }
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), or `None` if
/// there is no such process.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state); the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This machine's name in the state: [`HOST_NAME_VAR`], or the kernel's host name.
fn host_name() -> String {
    if let Some(name) = std::env::var(HOST_NAME_VAR)
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        return name.trim().to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether run owners live, as far as this process can tell: an owner on this host by its pid
/// and start time ([`is_alive`], at once), an owner on another host by its server lease (alive
/// while the lease runs; an `orchestrator serve` renews it every heartbeat), and an owner on
/// another host without a lease (a CLI command there) is taken as alive.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// Whether each server's lease had run out when read.
    expired: HashMap<Owner, bool>,
}

impl Liveness {
    /// The leases as the store has them now.
    pub fn read(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(Self {
            expired: store
                .leases()?
                .into_iter()
                .map(|l| (l.owner, l.expired))
                .collect(),
        })
    }

    /// Whether `owner` lives (see the type's doc).
    pub fn is_alive(&self, owner: &Owner) -> bool {
        if owner.host == host_name() {
            return is_alive(owner);
        }
        self.expired.get(owner).is_none_or(|expired| !expired)
    }

    /// Whether `owner` is a server whose lease ran out (the reason it is taken for dead).
    pub fn lease_expired(&self, owner: &Owner) -> bool {
        self.expired.get(owner).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn an_owner_elsewhere_lives_while_its_lease_runs() {
        let store = MemoryStore::new();
        let elsewhere = Owner {
            host: "another-host.invalid".into(),
            pid: 42,
            start_ticks: 7,
        };
        let no_lease = Owner {
            pid: 43,
            ..elsewhere.clone()
        };
        store
            .renew_lease(&elsewhere, std::time::Duration::from_secs(60))
            .unwrap();
        let live = Liveness::read(&store).unwrap();
        assert!(live.is_alive(&elsewhere) && !live.lease_expired(&elsewhere));
        assert!(live.is_alive(&no_lease), "a CLI elsewhere has no lease");
        store.end_lease(&elsewhere).unwrap();
        let live = Liveness::read(&store).unwrap();
        assert!(!live.is_alive(&elsewhere) && live.lease_expired(&elsewhere));
        assert!(
            store
                .renew_lease(&elsewhere, std::time::Duration::from_secs(60))
                .unwrap(),
            "renewing a lease that ran out says so"
        );
        let me = current_owner();
        store.end_lease(&me).unwrap();
        assert!(
            Liveness::read(&store).unwrap().is_alive(&me),
            "on this host the pid decides"
        );
    }

    #[test]
    fn the_current_process_is_alive_and_a_dead_pid_is_not() {
        let me = current_owner();
        assert!(me.start_ticks > 0);
        assert!(is_alive(&me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Owner { pid, ..me.clone() };
        assert!(!is_alive(&dead));
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!is_alive(&reused));
    }
}
