//! Where results go: printed, one section per benchmark in
//! `<target>/bench/messaging-results.md` (replaced on each run of that benchmark), and one
//! JSON line per run appended to `<target>/bench/results.jsonl`.

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

/// `<target>/bench`, found from this executable (`<target>/release/<bin>`), unless
/// `RAPPORT_BENCH_DIR` says otherwise.
pub fn bench_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RAPPORT_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|t| t.join("bench")))
        .unwrap_or_else(|| PathBuf::from("target/bench"))
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine, and the load on it, for the record.
pub fn machine(load_start: &str) -> Value {
    json!({
        "cpus": cpus(),
        "cpu": cpu_model(),
        "load_start": load_start,
        "load_end": load_average(),
    })
}

pub fn machine_line(load_start: &str) -> String {
    format!(
        "{} CPUs ({}); load average (1/5/15 min) {} at start, {} at end",
        cpus(),
        cpu_model(),
        load_start,
        load_average()
    )
}

/// The checkout's revision (`RAPPORT_BENCH_GIT_REVISION` overrides it, for a build of
/// another tree).
pub fn git_revision() -> String {
    if let Ok(rev) = std::env::var("RAPPORT_BENCH_GIT_REVISION") {
        return rev;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

/// Replaces (or adds) the section `name` of `messaging-results.md`.
pub fn write_section(name: &str, markdown: &str) -> anyhow::Result<PathBuf> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("messaging-results.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Messaging benchmarks (rapport-bench-messaging)\n\n\
         Written by `bench/messaging.sh` and `bench/webhooks.sh`; each section is replaced \
         when its benchmark runs again.\n"
            .to_owned()
    });
    let begin = format!("<!-- begin {name} -->");
    let end = format!("<!-- end {name} -->");
    let block = format!("{begin}\n{}\n{end}", markdown.trim_end());
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{}{}", &existing[..b], block, &existing[e + end.len()..])
        }
        _ => format!("{}\n{}\n", existing.trim_end(), block),
    };
    std::fs::write(&path, updated)?;
    Ok(path)
}

pub fn append_json(line: &Value) -> anyhow::Result<()> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("results.jsonl"))?;
    writeln!(f, "{line}")?;
    Ok(())
}

pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}
