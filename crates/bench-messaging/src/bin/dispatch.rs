#![forbid(unsafe_code)]
//! `dispatch`: how fast the engine empties the outbox over HTTP with pacing off.
//!
//! For each `concurrency × batch` setting, on a fresh database (SQLite, or PostgreSQL with
//! `--backend postgres`): an organisation, a Twilio channel on an in-process simulator whose
//! status callbacks come an hour later (so none arrive during the run), and N queued
//! `staff_message`s to N distinct numbers, all written before the clock starts. Then the
//! engine dispatches until the simulator has accepted N messages and all N rows are `sent`:
//! by default with `run_dispatcher()`, the loop `rapport serve` runs (steps overlapped: the
//! next batch is claimed and checked while the previous one's provider calls are out); with
//! `--driver steps`, by calling `dispatch_step()` in a loop, one whole step at a time.
//!
//! The baseline, in the same run: the same N CreateMessage requests POSTed straight to a
//! fresh simulator with reqwest at the same concurrency, no database.
//!
//! After each run a probe times, one at a time, the store calls the dispatcher makes, per
//! message and per batch, to show where the time goes; on PostgreSQL the run also counts
//! the database's committed transactions per message.

use anyhow::{Context, bail};
use bench::cpu;
use bench::db::{Backend, Durability, FreshDb};
use bench::report;
use bench::stats::{grouped, rate, round1, round3};
use bench::world;
use clap::Parser;
use domain::SystemClock;
use engine::{Engine, EngineConfig, Sealer};
use jiff::{SignedDuration, Timestamp};
use rapport_bench_messaging as bench;
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use store::StateChange;

/// The goal: messages per second, end to end.
const GOAL_PER_SECOND: f64 = 3000.0;
const FROM: &str = "+12015550100";
/// Where status callbacks would go (the discard port): the simulator holds them for an hour.
const NOWHERE: &str = "http://127.0.0.1:9";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Driver {
    /// `run_dispatcher()`, as `rapport serve` runs it.
    Loop,
    /// `dispatch_step()` called in a loop.
    Steps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setting {
    concurrency: usize,
    batch: u32,
}

impl FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (c, b) = s
            .split_once('x')
            .ok_or_else(|| format!("{s:?}: expected CONCURRENCYxBATCH, e.g. 32x100"))?;
        Ok(Setting {
            concurrency: c
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: bad concurrency"))?,
            batch: b.trim().parse().map_err(|_| format!("{s:?}: bad batch"))?,
        })
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}", self.concurrency, self.batch)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dispatch",
    about = "Outbox dispatch over HTTP to the Twilio simulator (pacing off), against raw HTTP to the simulator."
)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// What drives the engine.
    #[arg(long, value_enum, default_value = "loop")]
    driver: Driver,
    /// Messages per run, all queued before the clock starts.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Dispatcher settings to try, as CONCURRENCYxBATCH (provider calls in flight per step ×
    /// messages claimed per step; the per-organisation share is set to the batch, since there
    /// is one organisation).
    #[arg(long, value_delimiter = ',', default_value = "32x100,64x500,128x1000")]
    settings: Vec<Setting>,
    /// A run still unfinished after this long is stopped and its rate so far reported.
    #[arg(long, default_value_t = 90)]
    max_seconds: u64,
    /// Also run the first setting with relaxed durability (SQLite synchronous=NORMAL,
    /// PostgreSQL synchronous_commit=off): a diagnostic showing what the per-commit flushes
    /// cost. Not how Rapport ships.
    #[arg(long)]
    relaxed_diagnostic: bool,
    /// Skip the per-call probe after each run.
    #[arg(long)]
    no_probe: bool,
    /// With `--backend postgres`: when the server cannot be reached, say so and exit 0.
    #[arg(long)]
    skip_if_unavailable: bool,
    /// Keep the databases (they are deleted by default).
    #[arg(long)]
    keep: bool,
}

struct RawRun {
    concurrency: usize,
    elapsed: Duration,
    cpu: cpu::Use,
    accepted: u64,
    errors: usize,
}

impl RawRun {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// The same CreateMessage requests the Twilio adapter makes, straight to a fresh simulator.
async fn raw(n: usize, concurrency: usize) -> anyhow::Result<RawRun> {
    let sim = world::quiet_simulator().await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let callback = format!("{NOWHERE}/webhooks/twilio/{}/status", uuid::Uuid::now_v7());
    let forms: Arc<Vec<Vec<(&'static str, String)>>> = Arc::new(
        (0..n)
            .map(|i| {
                vec![
                    ("To", world::recipient(i)),
                    ("From", FROM.to_owned()),
                    ("Body", format!("Message {i} of the dispatch benchmark")),
                    ("StatusCallback", callback.clone()),
                ]
            })
            .collect(),
    );
    let url: Arc<str> = sim.messages_url().into();
    let (sid, token): (Arc<str>, Arc<str>) = (sim.account_sid().into(), sim.auth_token().into());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_start = cpu::Snapshot::now();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, forms, url, sid, token, next) = (
            client.clone(),
            forms.clone(),
            url.clone(),
            sid.clone(),
            token.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= forms.len() {
                    break;
                }
                let sent = client
                    .post(&*url)
                    .basic_auth(&*sid, Some(&*token))
                    .form(&forms[i])
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
            }
            errors
        });
    }
    let mut errors = 0;
    while let Some(e) = workers.join_next().await {
        errors += e?;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_start.used();
    let accepted = sim.accepted_total();
    sim.stop().await;
    Ok(RawRun {
        concurrency,
        elapsed,
        cpu,
        accepted,
        errors,
    })
}

#[derive(Debug, Clone)]
struct ProbeLine {
    call: &'static str,
    n: usize,
    mean_ms: f64,
    p50_ms: f64,
}

struct EngineRun {
    setting: Setting,
    durability: String,
    elapsed: Duration,
    cpu: cpu::Use,
    complete: bool,
    sent_rows: i64,
    distinct_provider_ids: i64,
    accepted: u64,
    states: Vec<(String, i64)>,
    /// Steps and their mean time, with `--driver steps`.
    steps: Option<(usize, Duration, f64)>,
    /// Transactions the database committed per message (PostgreSQL's own count).
    transactions_per_message: Option<f64>,
    probe: Vec<ProbeLine>,
}

impl EngineRun {
    fn rate(&self) -> f64 {
        self.sent_rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The transactions the PostgreSQL database has committed so far (none on SQLite).
async fn commits(backend: Backend, counter: &bench::db::Counter) -> anyhow::Result<Option<i64>> {
    if backend != Backend::Postgres {
        return Ok(None);
    }
    // The statistics are flushed at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(Some(
        counter
            .count("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .await?,
    ))
}

fn probe_line(call: &'static str, samples: &mut [Duration]) -> ProbeLine {
    samples.sort_unstable();
    let n = samples.len().max(1);
    let total: Duration = samples.iter().sum();
    ProbeLine {
        call,
        n: samples.len(),
        mean_ms: total.as_secs_f64() * 1000.0 / n as f64,
        p50_ms: samples
            .get(samples.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

async fn engine_run(
    args: &Args,
    setting: Setting,
    durability: Durability,
) -> anyhow::Result<EngineRun> {
    let n = args.messages;
    let db = FreshDb::create(args.backend, "dispatch").await?;
    let sim = world::quiet_simulator().await?;
    let sealer = Sealer::ephemeral();
    let clock = Arc::new(SystemClock);

    // Set-up, untimed: written with the flushes off, then the store is reopened as shipped.
    let setup_started = Instant::now();
    let (setup, _) = db.open(Durability::Setup).await?;
    let org = world::organization(&setup, "bench").await?;
    let setup_engine = Engine::new(
        setup.clone(),
        clock.clone(),
        sealer.clone(),
        EngineConfig::default(),
    );
    let channel = world::channel(&setup_engine, &org, &sim, "Main", FROM, 0.0).await?;
    let messages = (0..n)
        .map(|i| {
            world::staff_message(
                &org,
                Some(channel.id),
                &world::recipient(i),
                &format!("bench:{i}"),
                format!("Message {i} of the dispatch benchmark"),
            )
        })
        .collect();
    let parallel = if args.backend == Backend::Postgres {
        16
    } else {
        1
    };
    world::enqueue_all(&setup, messages, parallel).await?;
    drop(setup_engine);
    setup.close().await;
    drop(setup);
    eprintln!(
        "   (set-up: {} messages queued in {:.1} s, untimed)",
        grouped(n as u64),
        setup_started.elapsed().as_secs_f64()
    );

    let (store, durability_text) = db.open(durability).await?;
    let mut config = EngineConfig {
        public_url: NOWHERE.into(),
        ..EngineConfig::default()
    };
    config.dispatch.pacing = false;
    config.dispatch.concurrency = setting.concurrency;
    config.dispatch.batch = setting.batch;
    config.dispatch.per_org = setting.batch;
    let engine = Engine::new(store.clone(), clock, sealer, config);
    let counter = db.counter().await?;
    let queued = counter
        .count("SELECT COUNT(*) FROM outbound_messages WHERE state = 'queued'")
        .await?;
    if queued as usize != n {
        bail!("{queued} messages queued, expected {n}");
    }

    let max = Duration::from_secs(args.max_seconds);
    let commits_before = commits(args.backend, &counter).await?;
    let all_sent = || async {
        if sim.accepted_total() < n as u64 {
            return Ok::<_, anyhow::Error>(false);
        }
        let sent = counter
            .count("SELECT COUNT(*) FROM outbound_messages WHERE state = 'sent'")
            .await?;
        Ok(sent as usize >= n)
    };
    let mut complete = false;
    let mut steps = None;
    let cpu_start = cpu::Snapshot::for_backend(args.backend);
    let started = Instant::now();
    match args.driver {
        Driver::Steps => {
            let (mut count, mut step_time, mut claimed) = (0usize, Duration::ZERO, 0usize);
            loop {
                let t = Instant::now();
                let report = engine.dispatch_step().await?;
                step_time += t.elapsed();
                count += 1;
                claimed += report.claimed;
                if all_sent().await? {
                    complete = true;
                    break;
                }
                if started.elapsed() >= max {
                    break;
                }
                if report.claimed == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            steps = Some((
                count,
                step_time / count.max(1) as u32,
                claimed as f64 / count.max(1) as f64,
            ));
        }
        Driver::Loop => {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let dispatcher = tokio::spawn(engine.clone().run_dispatcher(stop_rx));
            loop {
                if all_sent().await? {
                    complete = true;
                    break;
                }
                if started.elapsed() >= max {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = stop_tx.send(true);
            dispatcher.await?;
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_start.used();
    let accepted = sim.accepted_total();
    let sent_rows = counter
        .count("SELECT COUNT(*) FROM outbound_messages WHERE state = 'sent'")
        .await?;
    let distinct_provider_ids = counter
        .count(
            "SELECT COUNT(DISTINCT provider_message_id) FROM outbound_messages WHERE state = 'sent'",
        )
        .await?;
    let states = counter
        .groups("SELECT state, COUNT(*) FROM outbound_messages GROUP BY state ORDER BY state")
        .await?;

    let transactions_per_message = match (commits_before, commits(args.backend, &counter).await?) {
        (Some(before), Some(after)) if sent_rows > 0 => {
            Some((after - before) as f64 / sent_rows as f64)
        }
        _ => None,
    };
    let probe = if args.no_probe {
        Vec::new()
    } else {
        probe(&store, &org, &channel, 200).await?
    };

    counter.close().await;
    store.close().await;
    drop(engine);
    sim.stop().await;
    if !args.keep {
        db.remove().await?;
    } else {
        eprintln!("   kept {}", db.url);
    }
    Ok(EngineRun {
        setting,
        durability: durability_text,
        elapsed,
        cpu,
        complete,
        sent_rows,
        distinct_provider_ids,
        accepted,
        states,
        steps,
        transactions_per_message,
        probe,
    })
}

/// The store calls the dispatcher makes, timed one at a time on the run's own database (its
/// rows in place): the single-message calls it made before batching (the reads of the
/// last-moment checks, single-row commits), then the batch calls a step makes now, per
/// batch of 100 messages.
async fn probe(
    store: &Arc<dyn store::AppStore>,
    org: &domain::Organization,
    channel: &store::Channel,
    k: usize,
) -> anyhow::Result<Vec<ProbeLine>> {
    let now = Timestamp::now();
    let mut org_reads = Vec::with_capacity(k);
    let mut channel_reads = Vec::with_capacity(k);
    let mut consent_reads = Vec::with_capacity(k);
    let mut cap_reads = Vec::with_capacity(k);
    let mut enqueues = Vec::with_capacity(k);
    let mut commits = Vec::with_capacity(k);
    let mut probe_ids = Vec::with_capacity(k);
    for i in 0..k {
        let to = world::recipient(i);
        let t = Instant::now();
        store.organization(org.id).await?;
        org_reads.push(t.elapsed());
        let t = Instant::now();
        store.channel(channel.id).await?;
        channel_reads.push(t.elapsed());
        let t = Instant::now();
        store.consent_state(org.id, &to).await?;
        consent_reads.push(t.elapsed());
        let t = Instant::now();
        store
            .sent_to_number(
                org.id,
                &to,
                now - SignedDuration::from_hours(24 * 8),
                now + SignedDuration::from_secs(1),
            )
            .await?;
        cap_reads.push(t.elapsed());
        // Due tomorrow, so nothing would claim it.
        let mut m = world::staff_message(
            org,
            Some(channel.id),
            &to,
            &format!("probe:{i}"),
            "Probe".into(),
        );
        m.not_before = now + SignedDuration::from_hours(24);
        let t = Instant::now();
        store.enqueue(&m).await?;
        enqueues.push(t.elapsed());
        let mut change = StateChange::new(m.id, "queued", "sending", Timestamp::now());
        change.count_attempt = true;
        change.channel_id = Some(channel.id);
        let t = Instant::now();
        store.change_state(&change).await?;
        commits.push(t.elapsed());
        probe_ids.push((m.id, to));
    }
    // The batch calls, on batches of 100 of the probe's messages, five rounds.
    let mut batch_consent = Vec::new();
    let mut batch_sent = Vec::new();
    let mut batch_attempts = Vec::new();
    let mut batch_results = Vec::new();
    for chunk in probe_ids.chunks(100).cycle().take(5 * k.div_ceil(100)) {
        let numbers: Vec<String> = chunk.iter().map(|(_, to)| to.clone()).collect();
        let t = Instant::now();
        store.consent_of_numbers(org.id, &numbers).await?;
        batch_consent.push(t.elapsed());
        let t = Instant::now();
        store
            .sent_to_numbers(
                org.id,
                &numbers,
                now - SignedDuration::from_hours(24 * 8),
                now + SignedDuration::from_secs(1),
            )
            .await?;
        batch_sent.push(t.elapsed());
        // They are `sending` already (above): back to `queued`, then `sending` again.
        let back: Vec<StateChange> = chunk
            .iter()
            .map(|(id, _)| StateChange::new(*id, "sending", "queued", Timestamp::now()))
            .collect();
        let t = Instant::now();
        store.change_states(&back).await?;
        batch_results.push(t.elapsed());
        let attempts: Vec<StateChange> = chunk
            .iter()
            .map(|(id, _)| {
                let mut c = StateChange::new(*id, "queued", "sending", Timestamp::now());
                c.count_attempt = true;
                c.channel_id = Some(channel.id);
                c
            })
            .collect();
        let t = Instant::now();
        store.change_states(&attempts).await?;
        batch_attempts.push(t.elapsed());
    }
    Ok(vec![
        probe_line("organization (read)", &mut org_reads),
        probe_line("channel (read)", &mut channel_reads),
        probe_line("consent_state (read)", &mut consent_reads),
        probe_line("sent_to_number (read, caps)", &mut cap_reads),
        probe_line("enqueue (1-row write + commit)", &mut enqueues),
        probe_line("change_state (1-row write + commit)", &mut commits),
        probe_line("consent_of_numbers (100 numbers)", &mut batch_consent),
        probe_line("sent_to_numbers (100 numbers)", &mut batch_sent),
        probe_line("change_states (100 rows, 1 commit)", &mut batch_attempts),
        probe_line(
            "change_states (100 rows back, 1 commit)",
            &mut batch_results,
        ),
    ])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.settings.is_empty() {
        bail!("no --settings given");
    }
    world::check_recipients(args.messages)?;
    if args.backend == Backend::Postgres
        && args.skip_if_unavailable
        && let Err(e) = bench::db::postgres_reachable().await
    {
        println!("== dispatch on postgres: skipped ({e:#})");
        return Ok(());
    }
    let load_start = report::load_average();
    let n = args.messages;
    println!(
        "== dispatch: {} messages per run on {}, pacing off; machine: {}",
        grouped(n as u64),
        args.backend.name(),
        report::machine_line(&load_start)
    );

    let mut rows = Vec::new();
    for &setting in &args.settings {
        let raw = raw(n, setting.concurrency)
            .await
            .context("the raw simulator baseline")?;
        println!(
            "   raw simulator, concurrency {:>4}: {} msgs/s ({} accepted in {:.2} s, {} errors); CPU {:.3} ms per message; {}",
            raw.concurrency,
            rate(raw.rate()),
            grouped(raw.accepted),
            raw.elapsed.as_secs_f64(),
            raw.errors,
            raw.cpu.ms_per(raw.accepted as usize),
            raw.cpu.describe()
        );
        let run = engine_run(&args, setting, Durability::Shipped)
            .await
            .with_context(|| format!("the engine run at {setting}"))?;
        print_run(&run, &raw, n);
        rows.push((run, raw));
    }
    if args.relaxed_diagnostic {
        let setting = args.settings[0];
        let raw = raw(n, setting.concurrency).await?;
        let run = engine_run(&args, setting, Durability::Relaxed).await?;
        println!("   -- diagnostic, not as shipped:");
        print_run(&run, &raw, n);
        rows.push((run, raw));
    }

    let best = rows
        .iter()
        .filter(|(r, _)| r.durability.contains("FULL") || r.durability.ends_with("=on"))
        .map(|(r, _)| r.rate())
        .fold(0.0, f64::max);
    let verdict = if best >= GOAL_PER_SECOND {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "   best as shipped: {} msgs/s (goal >= {}: {verdict})",
        rate(best),
        grouped(GOAL_PER_SECOND as u64)
    );

    let markdown = markdown(&args, &rows, best, verdict, &load_start);
    let path = report::write_section(&format!("dispatch-{}", args.backend.name()), &markdown)?;
    report::append_json(&json!({
        "bench": "messaging-dispatch",
        "at": report::now(),
        "git": report::git_revision(),
        "backend": args.backend.name(),
        "messages": n,
        "goal_per_s": GOAL_PER_SECOND,
        "best_per_s": round1(best),
        "pass": best >= GOAL_PER_SECOND,
        "runs": rows.iter().map(|(r, raw)| run_json(r, raw)).collect::<Vec<Value>>(),
        "machine": report::machine(&load_start),
    }))?;
    println!("   results: {}", path.display());
    Ok(())
}

fn print_run(run: &EngineRun, raw: &RawRun, n: usize) {
    let finished = if run.complete {
        format!("all {} sent", grouped(n as u64))
    } else {
        format!(
            "STOPPED at the time limit with {} of {} sent",
            grouped(run.sent_rows as u64),
            grouped(n as u64)
        )
    };
    println!(
        "   engine {:>9} [{}]: {} msgs/s in {:.2} s ({finished}); {:.1}% of raw; CPU {} ms per message ({}); {}{}simulator accepted {}, distinct provider ids {}; states {:?}",
        run.setting.to_string(),
        run.durability,
        rate(run.rate()),
        run.elapsed.as_secs_f64(),
        100.0 * run.rate() / raw.rate(),
        run.cpu.ms_per_cell(run.sent_rows as usize),
        run.cpu.describe(),
        match run.steps {
            Some((count, mean, claimed)) => format!(
                "{count} steps, mean {:.1} ms per step of {claimed:.0} messages; ",
                mean.as_secs_f64() * 1000.0
            ),
            None => "run_dispatcher; ".to_owned(),
        },
        match run.transactions_per_message {
            Some(t) => format!("{t:.3} database transactions per message; "),
            None => String::new(),
        },
        grouped(run.accepted),
        grouped(run.distinct_provider_ids as u64),
        run.states,
    );
    for p in &run.probe {
        println!(
            "      probe {:<38} mean {:>7.3} ms, p50 {:>7.3} ms (n={})",
            p.call, p.mean_ms, p.p50_ms, p.n
        );
    }
}

fn run_json(run: &EngineRun, raw: &RawRun) -> Value {
    json!({
        "concurrency": run.setting.concurrency,
        "batch": run.setting.batch,
        "durability": run.durability,
        "complete": run.complete,
        "secs": round3(run.elapsed.as_secs_f64()),
        "sent": run.sent_rows,
        "per_s": round1(run.rate()),
        "raw_per_s": round1(raw.rate()),
        "ratio": round3(run.rate() / raw.rate()),
        "cpu": run.cpu.json(run.sent_rows as usize),
        "raw_cpu": raw.cpu.json(raw.accepted as usize),
        "driver": if run.steps.is_some() { "steps" } else { "loop" },
        "steps": run.steps.map(|(count, _, _)| count),
        "mean_step_ms": run.steps.map(|(_, mean, _)| round3(mean.as_secs_f64() * 1000.0)),
        "transactions_per_message": run.transactions_per_message.map(round3),
        "accepted": run.accepted,
        "distinct_provider_ids": run.distinct_provider_ids,
        "probe_ms": run.probe.iter().map(|p| json!({"call": p.call, "mean": round3(p.mean_ms), "p50": round3(p.p50_ms)})).collect::<Vec<_>>(),
    })
}

fn markdown(
    args: &Args,
    rows: &[(EngineRun, RawRun)],
    best: f64,
    verdict: &str,
    load_start: &str,
) -> String {
    let mut md = format!(
        "## Dispatch, pacing off ({})\n\n\
         {} `staff_message`s to distinct numbers, queued before the clock starts; {} until the \
         simulator has accepted all and every row is `sent` (time limit {} s per run). Baseline: \
         the same CreateMessage POSTs straight to a fresh simulator with reqwest at the same \
         concurrency, no database.\n\n\
         Run {} (git {}). Machine: {}.\n\n\
         | concurrency × batch | durability | engine msgs/s | raw simulator msgs/s | engine / raw | finished | steps (mean ms) | transactions/msg | CPU ms/msg engine / raw | others' CPU share |\n\
         |---|---|---:|---:|---:|---|---|---:|---:|---:|\n",
        args.backend.name(),
        grouped(args.messages as u64),
        match args.driver {
            Driver::Loop => "the engine's `run_dispatcher()` (as `rapport serve` runs it)",
            Driver::Steps => "the engine's `dispatch_step()` in a loop",
        },
        args.max_seconds,
        report::now(),
        report::git_revision(),
        report::machine_line(load_start),
    );
    for (run, raw) in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1}% | {} | {} | {} | {} / {:.3} | {:.0}% |\n",
            run.setting,
            run.durability,
            rate(run.rate()),
            rate(raw.rate()),
            100.0 * run.rate() / raw.rate(),
            if run.complete {
                "all sent".to_owned()
            } else {
                format!(
                    "time limit: {} of {} sent",
                    grouped(run.sent_rows as u64),
                    grouped(args.messages as u64)
                )
            },
            match run.steps {
                Some((count, mean, _)) => format!("{count} ({:.1})", mean.as_secs_f64() * 1000.0),
                None => "—".to_owned(),
            },
            match run.transactions_per_message {
                Some(t) => format!("{t:.3}"),
                None => "—".to_owned(),
            },
            run.cpu.ms_per_cell(run.sent_rows as usize),
            raw.cpu.ms_per(raw.accepted as usize),
            run.cpu.others_share() * 100.0
        ));
    }
    md.push_str(
        "\nCPU ms/msg: this process's CPU time (all threads: engine, store, simulator; and the \
         reqwest load in the raw run) per message, plus the PostgreSQL server's when there is one. \
         Others' CPU share: what the rest of the machine (other processes, not this one nor \
         PostgreSQL) used of its capacity during the engine run.\n",
    );
    md.push_str(&format!(
        "\nBest as shipped: **{} msgs/s** (goal ≥ {}: **{verdict}**).\n",
        rate(best),
        grouped(GOAL_PER_SECOND as u64)
    ));
    if let Some((run, _)) = rows.iter().find(|(r, _)| !r.probe.is_empty()) {
        md.push_str(&format!(
            "\nWhere the time goes: the store calls the dispatcher made per message before \
             batching, and the batch calls a step makes now, timed one at a time after the {} run \
             on its database ({}):\n\n\
             | call | mean ms | p50 ms |\n|---|---:|---:|\n",
            run.setting, run.durability
        ));
        for p in &run.probe {
            md.push_str(&format!(
                "| {} | {:.3} | {:.3} |\n",
                p.call, p.mean_ms, p.p50_ms
            ));
        }
    }
    md
}
