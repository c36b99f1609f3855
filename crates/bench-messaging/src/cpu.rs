//! CPU time, from `/proc`: what this process used during a run (every thread: servers,
//! load generator, engine), and what the rest of the machine used meanwhile. On a shared
//! machine the first says what a run costs whatever the others do; the second says how much
//! of the machine the run did not have.

use serde_json::{Value, json};
use std::time::Instant;

/// `/proc` counts in USER_HZ, 100 on Linux (x86 and arm alike).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    process: u64,
    /// Counted apart only when the run uses PostgreSQL; otherwise it is other load.
    postgres: Option<u64>,
    busy: u64,
    at: Instant,
}

/// CPU used between two snapshots, in CPU-seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Use {
    pub wall_secs: f64,
    pub process_secs: f64,
    /// PostgreSQL's server processes (zero when none runs): part of the system measured,
    /// not other load.
    pub postgres_secs: f64,
    /// Busy time of the whole machine minus this process's and PostgreSQL's.
    pub others_secs: f64,
    pub cpus: usize,
}

impl Use {
    /// This process's CPU time per unit of work, in milliseconds.
    pub fn ms_per(&self, units: usize) -> f64 {
        self.process_secs * 1000.0 / units.max(1) as f64
    }

    /// Share of the machine's capacity (all CPUs) used by other processes.
    pub fn others_share(&self) -> f64 {
        self.others_secs / (self.wall_secs * self.cpus as f64).max(1e-9)
    }

    pub fn process_share(&self) -> f64 {
        self.process_secs / (self.wall_secs * self.cpus as f64).max(1e-9)
    }

    /// PostgreSQL's CPU time per unit of work, in milliseconds.
    pub fn postgres_ms_per(&self, units: usize) -> f64 {
        self.postgres_secs * 1000.0 / units.max(1) as f64
    }

    /// "1.234", or "1.234 + 0.567 PostgreSQL" when a PostgreSQL server worked too.
    pub fn ms_per_cell(&self, units: usize) -> String {
        if self.postgres_secs > 0.0 {
            format!(
                "{:.3} + {:.3} PostgreSQL",
                self.ms_per(units),
                self.postgres_ms_per(units)
            )
        } else {
            format!("{:.3}", self.ms_per(units))
        }
    }

    pub fn postgres_share(&self) -> f64 {
        self.postgres_secs / (self.wall_secs * self.cpus as f64).max(1e-9)
    }

    pub fn describe(&self) -> String {
        let postgres = if self.postgres_secs > 0.0 {
            format!(
                ", the PostgreSQL server {:.0}%",
                self.postgres_share() * 100.0
            )
        } else {
            String::new()
        };
        format!(
            "this process used {:.0}% of the {} CPUs{postgres}, other processes {:.0}%",
            self.process_share() * 100.0,
            self.cpus,
            self.others_share() * 100.0
        )
    }

    pub fn json(&self, units: usize) -> Value {
        json!({
            "process_cpu_secs": crate::stats::round3(self.process_secs),
            "postgres_cpu_secs": crate::stats::round3(self.postgres_secs),
            "others_cpu_secs": crate::stats::round3(self.others_secs),
            "wall_secs": crate::stats::round3(self.wall_secs),
            "process_cpu_ms_per_unit": crate::stats::round3(self.ms_per(units)),
            "others_share": crate::stats::round3(self.others_share()),
        })
    }
}

/// (command name, utime + stime, cutime + cstime) from a `/proc/PID/stat`.
fn stat_ticks(stat: &str) -> Option<(&str, u64, u64)> {
    // The command name may hold spaces, inside parentheses; after it, state is field 3,
    // utime 14, stime 15, cutime 16 (reaped children), cstime 17.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    Some((comm, field(14) + field(15), field(16) + field(17)))
}

fn process_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s).map(|(_, own, _)| own))
        .unwrap_or(0)
}

/// Every `postgres` process, its reaped children included (backends come and go).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| {
            stat_ticks(&s).and_then(|(comm, own, children)| {
                (comm == "postgres" || comm.starts_with("postgres:")).then_some(own + children)
            })
        })
        .sum()
}

fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    get(0) + get(1) + get(2) + get(5) + get(6) + get(7)
}

impl Snapshot {
    /// For a run that does not use PostgreSQL (a PostgreSQL server busy meanwhile is other
    /// load).
    pub fn now() -> Snapshot {
        Snapshot::take(false)
    }

    /// For a run on PostgreSQL: its server's CPU time is counted apart.
    pub fn with_postgres() -> Snapshot {
        Snapshot::take(true)
    }

    pub fn for_backend(backend: crate::db::Backend) -> Snapshot {
        Snapshot::take(backend == crate::db::Backend::Postgres)
    }

    fn take(postgres: bool) -> Snapshot {
        Snapshot {
            process: process_ticks(),
            postgres: postgres.then(postgres_ticks),
            busy: machine_busy_ticks(),
            at: Instant::now(),
        }
    }

    /// What was used from `self` until now.
    pub fn used(&self) -> Use {
        let end = Snapshot::take(self.postgres.is_some());
        let process = end.process.saturating_sub(self.process) as f64 / TICKS_PER_SECOND;
        let postgres = match (end.postgres, self.postgres) {
            (Some(end), Some(start)) => end.saturating_sub(start) as f64 / TICKS_PER_SECOND,
            _ => 0.0,
        };
        let busy = end.busy.saturating_sub(self.busy) as f64 / TICKS_PER_SECOND;
        Use {
            wall_secs: end.at.duration_since(self.at).as_secs_f64(),
            process_secs: process,
            postgres_secs: postgres,
            others_secs: (busy - process - postgres).max(0.0),
            cpus: crate::report::cpus(),
        }
    }
}
