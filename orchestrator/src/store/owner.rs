//! Who owns a run: this host, pid and process start time, and whether such an owner still lives.

use super::Owner;

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
/// Owners on other hosts are assumed alive (we cannot tell).
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

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
