//! CPU time of processes, read from `/proc`: what the producer and the consumer report in their
//! summaries, and what the benchmark samples of the broker and ClickHouse.

/// Linux reports `/proc/<pid>/stat` times in USER_HZ, fixed at 100 for user space on every
/// architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds `pid` has spent, all its threads; `None` if there is no such
/// process (or no `/proc`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User plus system CPU seconds this process has spent so far, all its threads (0 without
/// `/proc`).
pub fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu_seconds(&stat))
        .unwrap_or(0.0)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_summed_past_a_command_with_spaces() {
        let stat = "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(stat_cpu_seconds(stat), Some(3.25));
        assert_eq!(stat_cpu_seconds("4242 (short"), None);
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        // Burn a little CPU so the 10 ms resolution sees it.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(own_cpu_seconds() > 0.0);
        assert_eq!(cpu_seconds(std::process::id()).map(|s| s > 0.0), Some(true));
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
