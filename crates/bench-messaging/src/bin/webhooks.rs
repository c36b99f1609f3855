#![forbid(unsafe_code)]
//! `webhooks`: signed inbound-SMS webhooks into the real app, against a bare axum server.
//!
//! The app is started in-process exactly as `rapport serve` starts it
//! (`rapport::launch_with_listeners`, workers on unless `--no-workers`) on a fresh database,
//! with a Twilio channel whose Auth Token is known. Every request is built before any clock
//! starts: the simulator's inbound parameters (a distinct MessageSid each), form-encoded and
//! signed over `{public_url}/webhooks/twilio/{channel_id}/inbound` and all parameters.
//!
//! Each server gets, from a load generator on its own runtime: a warm-up; a closed loop
//! (`--concurrency` connections as fast as answers come, up to `--requests` or
//! `--max-seconds`); an open loop at `--open-rate` per second for `--open-seconds`, latency
//! measured from each request's scheduled time. The app also gets an open loop at half the
//! rate it reached closed-loop when that is below `--open-rate`, to show its latency
//! unsaturated. The bare server answers 200 (empty TwiML) to the same POSTs and does
//! nothing else.
//!
//! Afterwards every request not answered 2xx is sent again (as Twilio retries), a sample of
//! answered ones is re-sent to check they are not stored twice, and the stored MessageSids
//! are compared with the sent ones: each must be stored exactly once.

use anyhow::{Context, bail};
use axum::body::Bytes;
use bench::cpu;
use bench::db::{Backend, Durability, FreshDb};
use bench::load::{self, Loader, Outcome, Prepared};
use bench::report;
use bench::stats::{grouped, rate, round1, round3};
use bench::world;
use clap::Parser;
use domain::SystemClock;
use rapport_bench_messaging as bench;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GOAL_PER_SECOND: f64 = 10_000.0;
const GOAL_P99_MS: f64 = 20.0;
const GOAL_OPEN_RATE: f64 = 5_000.0;
/// The channel's number: where the simulated patients text.
const TO: &str = "+12015550100";
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

#[derive(Debug, Parser)]
#[command(
    name = "webhooks",
    about = "Signed inbound webhooks into the real app (closed and open loop), against a bare axum server."
)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Requests for each closed-loop run (built before the clock starts).
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Connections in the closed loop.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A closed-loop run stops starting requests after this long.
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
    /// The open loop's rate, requests per second.
    #[arg(long, default_value_t = 5_000.0)]
    open_rate: f64,
    #[arg(long, default_value_t = 10)]
    open_seconds: u64,
    /// Open loop: at most this many requests in flight (a request waiting for a slot is
    /// still charged from its scheduled time).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Open loop: how long after the last scheduled send to wait before cutting off.
    #[arg(long, default_value_t = 10)]
    grace_seconds: u64,
    /// Requests sent to each server before measuring.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Do not run the dispatcher and inbound router in the app.
    #[arg(long)]
    no_workers: bool,
    /// Diagnostic, not as shipped: SQLite synchronous=NORMAL / PostgreSQL
    /// synchronous_commit=off.
    #[arg(long)]
    relaxed_diagnostic: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    loader_threads: usize,
    /// Names this run in the results (its own section of messaging-results.md), e.g.
    /// "no-workers".
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let loader = Loader::new(args.loader_threads)?;
    let result = runtime.block_on(run(&args, &loader));
    loader.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

fn bare_router() -> axum::Router {
    axum::Router::new().route(
        "/webhooks/twilio/{channel_id}/inbound",
        axum::routing::post(|_body: Bytes| async {
            (
                [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                EMPTY_TWIML,
            )
        }),
    )
}

struct Phase {
    server: &'static str,
    mode: String,
    outcome: Outcome,
    cpu: cpu::Use,
}

impl Phase {
    fn line(&self) -> String {
        let o = &self.outcome;
        let l = &o.latency;
        format!(
            "{:<5} {:<28} {:>7} offered, {:>7} ok in {:>6.2} s = {:>7} req/s; latency p50 {}, p99 {}, p99.9 {}, max {}; CPU {} ms/request, {}{}{}",
            self.server,
            self.mode,
            grouped(o.offered as u64),
            grouped(o.ok as u64),
            o.elapsed.as_secs_f64(),
            rate(o.rate()),
            l.p50,
            l.p99,
            l.p999,
            l.max,
            self.cpu.ms_per_cell(o.ok),
            self.cpu.describe(),
            if o.errors() > 0 {
                format!("; not 2xx: {}", o.statuses_text())
            } else {
                String::new()
            },
            if l.unfinished > 0 {
                format!(
                    "; cut off unfinished: {} ({} never sent)",
                    grouped(l.unfinished as u64),
                    grouped(o.unsent as u64)
                )
            } else {
                String::new()
            },
        )
    }

    fn json(&self) -> Value {
        let o = &self.outcome;
        json!({
            "server": self.server,
            "mode": self.mode,
            "offered": o.offered,
            "ok": o.ok,
            "unsent": o.unsent,
            "secs": round3(o.elapsed.as_secs_f64()),
            "per_s": round1(o.rate()),
            "statuses": o.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "latency": o.latency.json(),
            "cpu": self.cpu.json(o.ok),
        })
    }
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{url} not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Layout {
    warm: Range<usize>,
    closed: Range<usize>,
    open: Range<usize>,
    auto: Range<usize>,
}

async fn run(args: &Args, loader: &Loader) -> anyhow::Result<()> {
    let load_start = report::load_average();
    let durability = if args.relaxed_diagnostic {
        Durability::Relaxed
    } else {
        Durability::Shipped
    };
    println!(
        "== webhooks on {}: machine: {}",
        args.backend.name(),
        report::machine_line(&load_start)
    );
    let sim = world::quiet_simulator().await?;

    // The bare server.
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = bare_listener.local_addr()?;
    let (bare_stop, bare_stopped) = tokio::sync::oneshot::channel::<()>();
    let bare = tokio::spawn(
        axum::serve(bare_listener, bare_router())
            .with_graceful_shutdown(async move {
                let _ = bare_stopped.await;
            })
            .into_future(),
    );

    // The app, on a fresh database.
    let db = FreshDb::create(args.backend, "webhooks").await?;
    let (store, durability_text) = db.open(durability).await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let public_url = format!("http://{}", http.local_addr()?);
    let key_dir = report::bench_dir()
        .join("tmp")
        .join(format!("webhooks-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&key_dir)?;
    let config = rapport::Config {
        database_url: db.url.clone(),
        http_addr: http.local_addr()?,
        metrics_addr: metrics.local_addr()?,
        public_url: public_url.clone(),
        secret_key_file: key_dir.join("secret.key"),
        workers: !args.no_workers,
        ..rapport::Config::default()
    };
    let engine = rapport::engine(&config, store.clone(), Arc::new(SystemClock))?;
    let org = world::organization(&store, "webhooks").await?;
    let channel = world::channel(&engine, &org, &sim, "Main", TO, 1.0).await?;
    let (app_stop, app_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = {
        let (config, engine) = (config.clone(), engine.clone());
        tokio::spawn(async move {
            rapport::launch_with_listeners(&config, engine, http, metrics, async move {
                let _ = app_stopped.await;
            })
            .await
        })
    };
    wait_ready(&format!("{public_url}/readyz")).await?;
    println!(
        "   app: rapport::launch_with_listeners at {public_url}, workers {}, {}, database {}",
        if args.no_workers { "off" } else { "on" },
        durability_text,
        db.url
    );

    // Every request, before any clock starts.
    let open_n = (args.open_rate * args.open_seconds as f64).round() as usize;
    let w = args.warmup;
    let layout = Layout {
        warm: 0..w,
        closed: w..w + args.requests,
        open: w + args.requests..w + args.requests + open_n,
        auto: w + args.requests + open_n..w + args.requests + 2 * open_n,
    };
    let total = layout.auto.end;
    let app_url: Arc<str> = format!("{public_url}/webhooks/twilio/{}/inbound", channel.id).into();
    let bare_url: Arc<str> =
        format!("http://{bare_addr}/webhooks/twilio/{}/inbound", channel.id).into();
    let t = Instant::now();
    let requests: Arc<Vec<Prepared>> =
        Arc::new(load::prepare(&sim, sim.auth_token(), &app_url, TO, total)?);
    println!(
        "   built and signed {} requests in {:.2} s (mean body {} bytes)",
        grouped(total as u64),
        t.elapsed().as_secs_f64(),
        requests.iter().map(|r| r.body.len()).sum::<usize>() / total.max(1)
    );

    let client = loader.client.clone();
    let closed = |url: &Arc<str>, range: Range<usize>, deadline: Duration| {
        load::closed_loop(
            client.clone(),
            url.clone(),
            requests.clone(),
            range,
            args.concurrency,
            deadline,
        )
    };
    let open = |url: &Arc<str>, range: Range<usize>, rate: f64| {
        load::open_loop(
            client.clone(),
            url.clone(),
            requests.clone(),
            range,
            rate,
            Duration::from_secs(args.open_seconds),
            args.max_in_flight,
            Duration::from_secs(args.grace_seconds),
        )
    };
    let max = Duration::from_secs(args.max_seconds);
    let mut phases = Vec::new();

    // The bare server first.
    loader
        .run(closed(&bare_url, layout.warm.clone(), max))
        .await;
    let snap = cpu::Snapshot::for_backend(args.backend);
    let outcome = loader
        .run(closed(&bare_url, layout.closed.clone(), max))
        .await;
    let phase = Phase {
        server: "bare",
        mode: format!("closed loop, {} conns", args.concurrency),
        outcome,
        cpu: snap.used(),
    };
    println!("   {}", phase.line());
    phases.push(phase);
    let snap = cpu::Snapshot::for_backend(args.backend);
    let outcome = loader
        .run(open(&bare_url, layout.open.clone(), args.open_rate))
        .await;
    let phase = Phase {
        server: "bare",
        mode: format!("open loop, {}/s", args.open_rate),
        outcome,
        cpu: snap.used(),
    };
    println!("   {}", phase.line());
    phases.push(phase);

    // Then the app.
    let counter = db.counter().await?;
    let mut unsettled: Vec<usize> = Vec::new();
    let mut attempted: Vec<usize> = Vec::new();
    let warm = loader.run(closed(&app_url, layout.warm.clone(), max)).await;
    if warm.ok == 0 {
        bail!(
            "the app answered no warm-up request with 2xx: {}",
            warm.statuses_text()
        );
    }
    attempted.extend(warm.acked.iter().chain(&warm.unsettled));
    unsettled.extend(&warm.unsettled);
    let snap = cpu::Snapshot::for_backend(args.backend);
    let app_closed = loader
        .run(closed(&app_url, layout.closed.clone(), max))
        .await;
    let app_closed_cpu = snap.used();
    // Every answered webhook was committed before its 200: all are in the table now.
    let rows_now = counter
        .count("SELECT COUNT(*) FROM inbound_messages")
        .await? as usize;
    let unrouted_after_closed = counter
        .count("SELECT COUNT(*) FROM inbound_messages WHERE processed_at IS NULL")
        .await? as usize;
    let acked_now = warm.ok + app_closed.ok;
    let committed_before_200 = rows_now >= acked_now;
    attempted.extend(app_closed.acked.iter().chain(&app_closed.unsettled));
    unsettled.extend(&app_closed.unsettled);
    let app_closed_rate = app_closed.rate();
    let phase = Phase {
        server: "app",
        mode: format!("closed loop, {} conns", args.concurrency),
        outcome: app_closed,
        cpu: app_closed_cpu,
    };
    println!("   {}", phase.line());
    println!(
        "   right after the closed loop: {} rows stored, {} not yet routed by the inbound worker; {} webhooks answered 2xx so far ({})",
        grouped(rows_now as u64),
        grouped(unrouted_after_closed as u64),
        grouped(acked_now as u64),
        if committed_before_200 {
            "every answered webhook is already stored"
        } else {
            "SOME ANSWERED WEBHOOKS ARE NOT STORED"
        }
    );
    phases.push(phase);
    let snap = cpu::Snapshot::for_backend(args.backend);
    let app_open = loader
        .run(open(&app_url, layout.open.clone(), args.open_rate))
        .await;
    let app_open_cpu = snap.used();
    attempted.extend(app_open.acked.iter().chain(&app_open.unsettled));
    unsettled.extend(&app_open.unsettled);
    let phase = Phase {
        server: "app",
        mode: format!("open loop, {}/s", args.open_rate),
        outcome: app_open,
        cpu: app_open_cpu,
    };
    println!("   {}", phase.line());
    phases.push(phase);
    let auto_rate = (app_closed_rate * 0.5).floor();
    if auto_rate >= 1.0 && auto_rate < args.open_rate * 0.99 {
        // Let the backlog of the saturated run drain first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let snap = cpu::Snapshot::for_backend(args.backend);
        let app_auto = loader
            .run(open(&app_url, layout.auto.clone(), auto_rate))
            .await;
        let app_auto_cpu = snap.used();
        attempted.extend(app_auto.acked.iter().chain(&app_auto.unsettled));
        unsettled.extend(&app_auto.unsettled);
        let phase = Phase {
            server: "app",
            mode: format!("open loop, {auto_rate}/s (½ of max)"),
            outcome: app_auto,
            cpu: app_auto_cpu,
        };
        println!("   {}", phase.line());
        phases.push(phase);
    }

    let unrouted_at_end = counter
        .count("SELECT COUNT(*) FROM inbound_messages WHERE processed_at IS NULL")
        .await? as usize;
    let routing = if args.no_workers {
        "workers off: nothing routed".to_owned()
    } else {
        // How fast the worker routes with no webhooks arriving.
        let window = Duration::from_secs(5);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = counter
            .count("SELECT COUNT(*) FROM inbound_messages WHERE processed_at IS NULL")
            .await?;
        let t = Instant::now();
        tokio::time::sleep(window).await;
        let after = counter
            .count("SELECT COUNT(*) FROM inbound_messages WHERE processed_at IS NULL")
            .await?;
        let idle_rate = (before - after) as f64 / t.elapsed().as_secs_f64();
        format!(
            "the inbound worker (routing: keywords, inbox) runs behind the webhooks and competes with them for the CPU and the writer: {} of {} stored messages not yet routed right after the closed loop, {} after the open loops; with no webhooks arriving it then routed {} messages/s (over {} s)",
            grouped(unrouted_after_closed as u64),
            grouped(rows_now as u64),
            grouped(unrouted_at_end as u64),
            rate(idle_rate),
            window.as_secs()
        )
    };
    println!("   {routing}");

    // Settle: what got no 2xx is sent again, as Twilio would.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resent = unsettled.len();
    let still_failing = loader
        .run(load::resend(
            client.clone(),
            app_url.clone(),
            requests.clone(),
            unsettled,
            16,
            5,
        ))
        .await;
    // Retries of answered webhooks must not be stored again.
    let before = counter
        .count("SELECT COUNT(*) FROM inbound_messages")
        .await?;
    let sample: Vec<usize> = attempted.iter().copied().take(200).collect();
    let retry_failed = loader
        .run(load::resend(
            client.clone(),
            app_url.clone(),
            requests.clone(),
            sample.clone(),
            16,
            5,
        ))
        .await;
    let after = counter
        .count("SELECT COUNT(*) FROM inbound_messages")
        .await?;

    // Exactly once: the stored MessageSids are exactly the sent ones.
    let stored = counter
        .texts("SELECT provider_message_id FROM inbound_messages")
        .await?;
    let stored_rows = stored.len();
    let stored_set: HashSet<&str> = stored.iter().map(String::as_str).collect();
    let expected: HashSet<&str> = attempted
        .iter()
        .map(|&i| requests[i].sid.as_str())
        .collect();
    let missing = expected.difference(&stored_set).count();
    let extra = stored_set.difference(&expected).count();
    let duplicates = stored_rows - stored_set.len();
    let exactly_once = missing == 0
        && extra == 0
        && duplicates == 0
        && still_failing.is_empty()
        && retry_failed.is_empty()
        && before == after
        && committed_before_200;
    let verification = format!(
        "{} webhooks sent (each distinct MessageSid; {} re-sent after no 2xx, {} still failing); {} rows stored, {} distinct: missing {missing}, unexpected {extra}, duplicates {duplicates}; {} answered webhooks re-sent: rows {before} → {after}; {}",
        grouped(expected.len() as u64),
        grouped(resent as u64),
        still_failing.len(),
        grouped(stored_rows as u64),
        grouped(stored_set.len() as u64),
        sample.len(),
        if exactly_once {
            "every webhook stored exactly once: PASS"
        } else {
            "FAIL"
        }
    );
    println!("   verification: {verification}");

    // Where the time goes: the parts of one webhook, timed alone.
    let breakdown = breakdown(&engine, &channel, &sim, &requests, &app_url).await?;
    for (what, ms) in &breakdown {
        println!("   alone: {what:<52} mean {ms:.4} ms");
    }

    let _ = app_stop.send(());
    match tokio::time::timeout(Duration::from_secs(30), app).await {
        Ok(joined) => joined?.context("the app")?,
        Err(_) => eprintln!("   the app did not stop within 30 s"),
    }
    let _ = bare_stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), bare).await;
    counter.close().await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&key_dir);
    if args.keep {
        eprintln!("   kept {}", db.url);
    } else {
        db.remove().await?;
    }

    // The verdicts.
    let bare_closed = phases
        .iter()
        .find(|p| p.server == "bare" && p.mode.starts_with("closed"))
        .map(|p| p.outcome.rate())
        .unwrap_or(0.0);
    let ratio = app_closed_rate / bare_closed.max(1e-9);
    let app_open_p99 = phases
        .iter()
        .find(|p| p.server == "app" && p.mode == format!("open loop, {}/s", args.open_rate))
        .map(|p| p.outcome.latency.p99);
    let throughput_pass = app_closed_rate >= GOAL_PER_SECOND;
    let p99_pass = (args.open_rate - GOAL_OPEN_RATE).abs() < f64::EPSILON
        && app_open_p99.is_some_and(|p| p.is_finished() && p.ms() <= GOAL_P99_MS);
    let summary = format!(
        "app {} req/s closed-loop vs bare axum {} req/s: {:.2}% of bare (goal ≥ {} req/s: {}); app p99 at {}/s: {} (goal ≤ {} ms at {}/s: {})",
        rate(app_closed_rate),
        rate(bare_closed),
        ratio * 100.0,
        grouped(GOAL_PER_SECOND as u64),
        if throughput_pass { "PASS" } else { "FAIL" },
        args.open_rate,
        app_open_p99.map_or("-".into(), |p| p.to_string()),
        GOAL_P99_MS,
        grouped(GOAL_OPEN_RATE as u64),
        if p99_pass { "PASS" } else { "FAIL" },
    );
    println!("   {summary}");

    let mut md = format!(
        "## Inbound webhooks ({}{}{})\n\n\
         The real app (`rapport::launch_with_listeners`, workers {}, {}) on a fresh database; \
         each request a distinct inbound SMS (simulator parameters) signed with \
         `X-Twilio-Signature`, built before the clock starts; load from reqwest on its own \
         runtime ({} threads) in the same process, loopback. Closed loop: {} connections, up to \
         {} requests or {} s. Open loop: requests scheduled at a fixed rate for {} s, at most \
         {} in flight, latency from the scheduled send time (no coordinated omission), cut off \
         {} s after the last scheduled send (unfinished requests count as slower than any \
         finished one, shown as \"> x\"). Bare: an axum server on loopback answering 200 \
         (empty TwiML) to the same POSTs.\n\n\
         Run {} (git {}). Machine: {}.\n\n\
         | server | load | offered | 2xx | req/s | p50 | p99 | p99.9 | max | CPU ms/req | others' CPU | not 2xx / cut off |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        args.backend.name(),
        if args.relaxed_diagnostic {
            ", diagnostic durability"
        } else {
            ""
        },
        args.label
            .as_deref()
            .map(|l| format!(", {l}"))
            .unwrap_or_default(),
        if args.no_workers { "off" } else { "on" },
        durability_text,
        args.loader_threads,
        args.concurrency,
        grouped(args.requests as u64),
        args.max_seconds,
        args.open_seconds,
        args.max_in_flight,
        args.grace_seconds,
        report::now(),
        report::git_revision(),
        report::machine_line(&load_start),
    );
    for p in &phases {
        let o = &p.outcome;
        let l = &o.latency;
        let mut problems = Vec::new();
        if o.errors() > 0 {
            problems.push(o.statuses_text());
        }
        if l.unfinished > 0 {
            problems.push(format!(
                "{} cut off ({} never sent)",
                grouped(l.unfinished as u64),
                grouped(o.unsent as u64)
            ));
        }
        if o.unsent > 0 && l.unfinished == 0 {
            problems.push(format!(
                "{} not started (time limit)",
                grouped(o.unsent as u64)
            ));
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} |\n",
            p.server,
            p.mode,
            grouped(o.offered as u64),
            grouped(o.ok as u64),
            rate(o.rate()),
            l.p50,
            l.p99,
            l.p999,
            l.max,
            p.cpu.ms_per_cell(o.ok),
            p.cpu.others_share() * 100.0,
            if problems.is_empty() {
                "-".to_owned()
            } else {
                problems.join("; ")
            }
        ));
    }
    md.push_str(
        "\nCPU ms/req: this process's CPU time per 2xx answer (all threads: the server, and the \
         load generator, which is in the same process for both servers). Others' CPU: what the \
         rest of the machine used of its capacity meanwhile.\n",
    );
    md.push_str(&format!(
        "\n{summary}.\n\nRouting: {routing}.\n\nVerification: {verification}.\n\nOne webhook's parts, timed alone (sequentially, no HTTP):\n\n| part | mean ms |\n|---|---:|\n"
    ));
    for (what, ms) in &breakdown {
        md.push_str(&format!("| {what} | {ms:.4} |\n"));
    }
    let label: String = args
        .label
        .as_deref()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let path = report::write_section(
        &format!(
            "webhooks-{}{}{}{}",
            args.backend.name(),
            if args.relaxed_diagnostic {
                "-diagnostic"
            } else {
                ""
            },
            if label.is_empty() { "" } else { "-" },
            label
        ),
        &md,
    )?;
    report::append_json(&json!({
        "bench": "messaging-webhooks",
        "label": args.label,
        "at": report::now(),
        "git": report::git_revision(),
        "backend": args.backend.name(),
        "durability": durability_text,
        "workers": !args.no_workers,
        "concurrency": args.concurrency,
        "phases": phases.iter().map(Phase::json).collect::<Vec<_>>(),
        "ratio": round3(ratio),
        "goal_per_s": GOAL_PER_SECOND,
        "goal_p99_ms": GOAL_P99_MS,
        "pass_throughput": throughput_pass,
        "pass_p99": p99_pass,
        "exactly_once": exactly_once,
        "unrouted_after_closed_loop": unrouted_after_closed,
        "unrouted_after_open_loops": unrouted_at_end,
        "breakdown_ms": breakdown.iter().map(|(k, v)| json!({"part": k, "mean_ms": round3(*v)})).collect::<Vec<_>>(),
        "machine": report::machine(&load_start),
    }))?;
    println!("   results: {}", path.display());
    if !exactly_once {
        bail!("webhooks were not stored exactly once: {verification}");
    }
    Ok(())
}

/// The parts of one webhook, each timed alone: the signature check (CPU), the form parse,
/// and the store's insert through the engine (its commit included).
async fn breakdown(
    engine: &Arc<engine::Engine>,
    channel: &store::Channel,
    sim: &channels::simulator::SimulatorHandle,
    requests: &[Prepared],
    url: &str,
) -> anyhow::Result<Vec<(String, f64)>> {
    let sample = &requests[..requests.len().min(5_000)];
    let parsed: Vec<Vec<(String, String)>> = sample
        .iter()
        .map(|r| serde_urlencoded::from_bytes(&r.body))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for r in sample {
        let p: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body)?;
        std::hint::black_box(p);
    }
    let parse = t.elapsed().as_secs_f64() * 1000.0 / sample.len() as f64;
    let token = sim.auth_token();
    let t = Instant::now();
    let mut valid = 0;
    for (r, params) in sample.iter().zip(&parsed) {
        if channels::twilio::signature::verify(token, url, params, &r.signature) {
            valid += 1;
        }
    }
    let verify = t.elapsed().as_secs_f64() * 1000.0 / sample.len() as f64;
    if valid != sample.len() {
        bail!(
            "{} of {} signatures did not verify",
            sample.len() - valid,
            sample.len()
        );
    }
    let k = 200;
    let mut total = Duration::ZERO;
    for i in 0..k {
        let params = sim.inbound_params(&world::recipient(i), TO, "On my way", &[]);
        let t = Instant::now();
        engine.receive_inbound(channel, &params).await?;
        total += t.elapsed();
    }
    let unseal = {
        let t = Instant::now();
        for _ in 0..k {
            std::hint::black_box(engine.auth_token(channel)?);
        }
        t.elapsed().as_secs_f64() * 1000.0 / k as f64
    };
    let channel_read = {
        let t = Instant::now();
        for _ in 0..k {
            engine.store.channel(channel.id).await?;
        }
        t.elapsed().as_secs_f64() * 1000.0 / k as f64
    };
    Ok(vec![
        ("form parse".into(), parse),
        (
            "signature check (HMAC-SHA1, all URL variants)".into(),
            verify,
        ),
        ("channel lookup (store read)".into(), channel_read),
        ("Auth Token unsealed (XChaCha20-Poly1305)".into(), unseal),
        (
            format!("receive_inbound: insert + commit (n={k}, sequential)"),
            total.as_secs_f64() * 1000.0 / k as f64,
        ),
    ])
}
