//! What every benchmark reads about the host it runs on: the machine's
//! description, knobs from the environment, this process's CPU time and
//! memory (Linux `/proc`). Included by each bench with `mod host;`.
#![allow(dead_code)] // each bench uses only some of these

use std::time::Duration;

/// CPUs, CPU model and RAM, for the figures' record.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |m| m.trim().to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or("?".into(), |kb| {
            format!("{:.1} GB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{cpus} CPUs (nproc), {model}, {mem} RAM")
}

/// A number from the environment (`_` allowed as a separator), or
/// `default`; anything else stops the bench.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// User + system CPU time of this process.
pub fn cpu_time() -> Option<Duration> {
    let (_, ticks) = stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(ticks_to_duration(ticks[0] + ticks[1]))
}

/// User + system CPU time of every `postgres` process on the machine,
/// including the children they have reaped (a backend's time moves into the
/// postmaster's when its connection closes): the database's share of a
/// bench that runs PostgreSQL on this machine (run it with no other cluster
/// busy).
pub fn postgres_cpu_time() -> Duration {
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", t)) = stat_ticks(&stat) {
            ticks += t.iter().sum::<u64>();
        }
    }
    ticks_to_duration(ticks)
}

/// A `/proc/<pid>/stat` line's command name and its utime, stime, cutime
/// and cstime (fields 14 to 17), in clock ticks.
fn stat_ticks(stat: &str) -> Option<(&str, [u64; 4])> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((name, [field(11)?, field(12)?, field(13)?, field(14)?]))
}

/// The kernel's USER_HZ is 100 on every Linux this runs on.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// A `kB` field of `/proc/self/status`, e.g. `"VmRSS:"`.
pub fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
