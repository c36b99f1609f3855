#![forbid(unsafe_code)]
//! `pacing`: does each sender go out at the rate its channel is configured for?
//!
//! For each rate R: a fresh SQLite database, one channel paced at R segments per second on
//! an in-process simulator, and enough single-segment `staff_message`s for `--seconds` of
//! steady sending after the first second (R·(seconds + 2)), queued before the start.
//! The engine's `dispatch_step()` runs (default dispatcher settings, pacing on) until the
//! simulator has accepted them all. The rate is then read off the simulator's own log
//! (`accepted_at`, per sending number).
//!
//! A sender's token bucket starts full, with one second's worth (R tokens), so the first R
//! messages go out at once: the burst. They take a moment to pass through the dispatcher
//! (a commit and an HTTP call each), and the bucket refills meanwhile, so the first second
//! after the first acceptance (at most 2R messages: the burst and one second of refill) is
//! excluded. The achieved rate is taken over the steady state after it: the intervals from
//! the first acceptance after that second to the last, over the time between them. The
//! mixed run paces two senders of one organisation at once.

use anyhow::bail;
use bench::db::{Backend, Durability, FreshDb};
use bench::report;
use bench::stats::{grouped, round3};
use bench::world;
use channels::simulator::SimMessage;
use clap::Parser;
use domain::SystemClock;
use engine::{Engine, EngineConfig, Sealer};
use rapport_bench_messaging as bench;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Achieved within this fraction of configured.
const TOLERANCE: f64 = 0.01;
const NOWHERE: &str = "http://127.0.0.1:9";

#[derive(Debug, Parser)]
#[command(
    name = "pacing",
    about = "Per-sender pacing: achieved rate against configured, from the simulator's log."
)]
struct Args {
    /// Segments per second to configure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    rates: Vec<f64>,
    /// Seconds of steady-state sending per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Skip the run with two senders of one organisation at once (at the first two rates).
    #[arg(long)]
    no_mixed: bool,
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    #[arg(long)]
    keep: bool,
}

struct Sender {
    from: String,
    configured: f64,
}

struct SenderResult {
    from: String,
    configured: f64,
    n: usize,
    /// The bucket's initial tokens: R.
    burst: usize,
    /// How long the first R acceptances took to arrive.
    burst_span: Duration,
    /// Accepted in the first second (excluded from the steady state): at most 2R.
    first_second: usize,
    steady_intervals: usize,
    steady_span: Duration,
    steady_rate: f64,
    overall_rate: f64,
    max_per_second_after_burst: usize,
}

impl SenderResult {
    fn deviation(&self) -> f64 {
        self.steady_rate / self.configured - 1.0
    }

    fn pass(&self) -> bool {
        self.deviation().abs() <= TOLERANCE
    }

    fn json(&self) -> Value {
        json!({
            "from": self.from,
            "configured_per_s": self.configured,
            "messages": self.n,
            "burst": self.burst,
            "burst_span_ms": round3(self.burst_span.as_secs_f64() * 1000.0),
            "first_second": self.first_second,
            "steady_intervals": self.steady_intervals,
            "steady_secs": round3(self.steady_span.as_secs_f64()),
            "steady_per_s": round3(self.steady_rate),
            "deviation_pct": round3(self.deviation() * 100.0),
            "overall_per_s": round3(self.overall_rate),
            "max_in_1s_after_first_second": self.max_per_second_after_burst,
            "pass": self.pass(),
        })
    }
}

fn analyse(sender: &Sender, log: &[SimMessage]) -> anyhow::Result<SenderResult> {
    let mut times: Vec<jiff::Timestamp> = log
        .iter()
        .filter(|m| m.from.as_deref() == Some(sender.from.as_str()))
        .map(|m| m.accepted_at)
        .collect();
    times.sort_unstable();
    let n = times.len();
    let secs = |a: jiff::Timestamp, b: jiff::Timestamp| b.duration_since(a).as_secs_f64();
    // The steady state starts one second after the first acceptance: by then the bucket's
    // initial R tokens, and what refilled while they drained through the dispatcher, are
    // spent, and every later message waited for its token.
    let start = times
        .iter()
        .position(|t| secs(times[0], *t) >= 1.0)
        .unwrap_or(n);
    if n < start + 2 {
        bail!(
            "{}: only {n} messages accepted, too few to measure",
            sender.from
        );
    }
    let steady_intervals = n - 1 - start;
    let steady_secs = secs(times[start], times[n - 1]);
    let mut max_per_second = 0;
    let mut j = start;
    for i in start..n {
        while j < n && secs(times[i], times[j]) < 1.0 {
            j += 1;
        }
        max_per_second = max_per_second.max(j - i);
    }
    let burst = (sender.configured.floor() as usize).clamp(1, n);
    Ok(SenderResult {
        from: sender.from.clone(),
        configured: sender.configured,
        n,
        burst,
        burst_span: Duration::from_secs_f64(secs(times[0], times[burst - 1]).max(0.0)),
        first_second: start,
        steady_intervals,
        steady_span: Duration::from_secs_f64(steady_secs.max(0.0)),
        steady_rate: steady_intervals as f64 / steady_secs,
        overall_rate: (n - 1) as f64 / secs(times[0], times[n - 1]),
        max_per_second_after_burst: max_per_second,
    })
}

/// One run: `senders` paced at once, through one organisation's channels.
async fn paced_run(args: &Args, senders: &[Sender]) -> anyhow::Result<Vec<SenderResult>> {
    let db = FreshDb::create(args.backend, "pacing").await?;
    let sim = world::quiet_simulator().await?;
    let sealer = Sealer::ephemeral();
    let clock = Arc::new(SystemClock);

    let (setup, _) = db.open(Durability::Setup).await?;
    let org = world::organization(&setup, "pacing").await?;
    let setup_engine = Engine::new(
        setup.clone(),
        clock.clone(),
        sealer.clone(),
        EngineConfig::default(),
    );
    // Each sender's messages in the order its pacing would send them, merged by that time,
    // so that claims (oldest first) carry each sender's share.
    let mut planned = Vec::new();
    for (s, sender) in senders.iter().enumerate() {
        let channel = world::channel(
            &setup_engine,
            &org,
            &sim,
            &format!("Sender {s}"),
            &sender.from,
            sender.configured,
        )
        .await?;
        let count = (sender.configured * (args.seconds as f64 + 2.0)).ceil() as usize;
        for j in 0..count {
            let due = j as f64 / sender.configured;
            planned.push((due, s, j, channel.id));
        }
    }
    planned.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = planned.len();
    let messages = planned
        .iter()
        .enumerate()
        .map(|(i, (_, s, j, channel))| {
            world::staff_message(
                &org,
                Some(*channel),
                &world::recipient(i),
                &format!("pacing:{s}:{j}"),
                format!("Paced message {j} from sender {s}"),
            )
        })
        .collect();
    world::enqueue_all(&setup, messages, 1).await?;
    drop(setup_engine);
    setup.close().await;
    drop(setup);

    let (store, _) = db.open(Durability::Shipped).await?;
    let mut config = EngineConfig {
        public_url: NOWHERE.into(),
        ..EngineConfig::default()
    };
    config.dispatch.pacing = true;
    let engine = Engine::new(store.clone(), clock, sealer, config);
    let limit = Duration::from_secs(args.seconds * 3 + 30);
    let started = Instant::now();
    while sim.accepted_total() < total as u64 {
        if started.elapsed() > limit {
            bail!(
                "only {} of {total} accepted after {} s",
                sim.accepted_total(),
                limit.as_secs()
            );
        }
        let report = engine.dispatch_step().await?;
        if report.claimed == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let log = sim.log();
    let results = senders
        .iter()
        .map(|s| analyse(s, &log))
        .collect::<anyhow::Result<Vec<_>>>()?;
    store.close().await;
    drop(engine);
    sim.stop().await;
    if args.keep {
        eprintln!("   kept {}", db.url);
    } else {
        db.remove().await?;
    }
    Ok(results)
}

fn sender_line(r: &SenderResult) -> String {
    format!(
        "sender {} at {}/s: steady {:.3}/s over {} intervals in {:.2} s ({:+.2}% of configured, goal ±{}%: {}); first second (excluded) {} messages, the first {} in {:.1} ms; at most {} in any 1 s after it; overall incl. the first second {:.2}/s",
        r.from,
        r.configured,
        r.steady_rate,
        r.steady_intervals,
        r.steady_span.as_secs_f64(),
        r.deviation() * 100.0,
        TOLERANCE * 100.0,
        if r.pass() { "PASS" } else { "FAIL" },
        r.first_second,
        r.burst,
        r.burst_span.as_secs_f64() * 1000.0,
        r.max_per_second_after_burst,
        r.overall_rate,
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.rates.iter().any(|r| *r < 1.0) {
        bail!("rates must be at least 1 segment per second");
    }
    let load_start = report::load_average();
    println!(
        "== pacing on {}: {} s of steady sending per run; machine: {}",
        args.backend.name(),
        args.seconds,
        report::machine_line(&load_start)
    );
    let mut runs: Vec<(String, Vec<SenderResult>)> = Vec::new();
    for (i, &r) in args.rates.iter().enumerate() {
        let senders = [Sender {
            from: format!("+1201555{:04}", 100 + i),
            configured: r,
        }];
        let results = paced_run(&args, &senders).await?;
        for res in &results {
            println!("   alone: {}", sender_line(res));
        }
        runs.push((format!("one sender at {r}/s"), results));
    }
    if !args.no_mixed && args.rates.len() >= 2 {
        let senders: Vec<Sender> = args.rates[..2]
            .iter()
            .enumerate()
            .map(|(i, &r)| Sender {
                from: format!("+1201555{:04}", 200 + i),
                configured: r,
            })
            .collect();
        let results = paced_run(&args, &senders).await?;
        for res in &results {
            println!("   mixed: {}", sender_line(res));
        }
        runs.push((
            format!(
                "two senders of one organisation at once ({}/s and {}/s)",
                args.rates[0], args.rates[1]
            ),
            results,
        ));
    }
    let all_pass = runs.iter().all(|(_, rs)| rs.iter().all(SenderResult::pass));

    let mut md = format!(
        "## Pacing ({})\n\n\
         Each run: channels paced at R segments/s, R·({}+2) single-segment `staff_message`s per \
         sender queued before the start, default dispatcher settings with pacing on; rates read \
         from the simulator's log (`accepted_at` per sending number). Excluded from the steady \
         state: the first second after the first acceptance, i.e. the bucket's initial burst \
         of R tokens plus what refilled while that burst drained through the dispatcher (at \
         most 2R messages); the steady rate is the intervals from the first acceptance after \
         that second to the last, over the time between them.\n\n\
         Run {} (git {}). Machine: {}.\n\n\
         | run | sender | configured /s | messages | first second (excluded) | steady /s | deviation | max in any 1 s after | first R took (ms) | ±{}% |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        args.backend.name(),
        args.seconds,
        report::now(),
        report::git_revision(),
        report::machine_line(&load_start),
        TOLERANCE * 100.0,
    );
    for (name, results) in &runs {
        for r in results {
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {:.3} | {:+.2}% | {} | {:.1} | {} |\n",
                r.from,
                r.configured,
                grouped(r.n as u64),
                r.first_second,
                r.steady_rate,
                r.deviation() * 100.0,
                r.max_per_second_after_burst,
                r.burst_span.as_secs_f64() * 1000.0,
                if r.pass() { "PASS" } else { "FAIL" }
            ));
        }
    }
    let path = report::write_section(&format!("pacing-{}", args.backend.name()), &md)?;
    report::append_json(&json!({
        "bench": "messaging-pacing",
        "at": report::now(),
        "git": report::git_revision(),
        "backend": args.backend.name(),
        "seconds": args.seconds,
        "tolerance": TOLERANCE,
        "pass": all_pass,
        "runs": runs.iter().map(|(name, rs)| json!({"run": name, "senders": rs.iter().map(SenderResult::json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "machine": report::machine(&load_start),
    }))?;
    println!(
        "   all senders within ±{}%: {}",
        TOLERANCE * 100.0,
        if all_pass { "PASS" } else { "FAIL" }
    );
    println!("   results: {}", path.display());
    Ok(())
}
