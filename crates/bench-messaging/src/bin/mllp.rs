#![forbid(unsafe_code)]
//! `mllp`: HL7 ingest over MLLP with store-before-reply (issue 4), against baselines
//! measured in the same run.
//!
//! The app is started in-process as `rapport serve` starts it (`rapport::launch_all`, MLLP
//! listener on, workers on unless `--no-workers`), on a fresh SQLite database for each
//! scenario, with exactly one organisation and no HL7 interface, so every message is taken
//! for that organisation. Each message is a ~2 KB SIU^S12 (new appointment) with its own
//! MSH-10 and SCH-2, for one of `--patients` patients, so none is a duplicate; it is built
//! by the client just before it is sent (outside the latency measured).
//!
//! Scenarios, each after a short warm-up on the same server:
//! 1. `--connections` (8) connections, each sending one message at a time (send, wait for
//!    the ACK frame, send the next) as fast as ACKs come, for `--seconds`;
//! 2. one connection, the same;
//! 3. paced, open loop: `--paced-rate` (2,000) messages/s over `--connections`
//!    connections, each connection still one at a time; message k is due at
//!    start + k / rate on connection k mod connections, and its latency runs from the time
//!    it was due, so a connection held up by a slow ACK is charged for the messages that
//!    queued behind it (no coordinated omission).
//!
//! Baselines in the same run: (a) a bare MLLP echo server (tokio, on the same runtime as
//! the app would be) that answers every frame with a fixed AA ACK at once, under the same
//! three scenarios; (b) raw sqlx on SQLite with the store's pragmas (its own writer
//! connection: WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`), inserting the very rows the
//! store writes for these messages into `hl7_messages` of a fresh migrated database: one
//! transaction per message, one per 8 (the most a group commit can gather from 8
//! connections that each wait for their ACK), and one per 512.
//!
//! Scenarios 1 and 2 run once more with the app's workers off (`--skip-workers-off` not
//! to): ingest alone, without the HL7 applier writing to the same database meanwhile.
//!
//! Afterwards each message's parts are timed alone (parse, map, ACK, hash, store commit,
//! the whole receiver without TCP) to say where the time goes.
//!
//! The load generator runs on a runtime of its own in the same process (`--loader-threads`);
//! on a 2-core machine it competes with the server for the CPU, as it does for the echo
//! server.

use anyhow::{Context, bail};
use bench::cpu;
use bench::db::{Backend, Counter, Durability, FreshDb};
use bench::load::Loader;
use bench::report;
use bench::stats::{Latency, grouped, rate, round1, round3};
use clap::Parser;
use domain::SystemClock;
use domain::interface::InterfaceSettings;
use rapport_bench_messaging as bench;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const GOAL_CONNS_RATE: f64 = 10_000.0;
const GOAL_ONE_RATE: f64 = 3_000.0;
const GOAL_PACED_RATE: f64 = 2_000.0;
const GOAL_P99_MS: f64 = 10.0;
const START: u8 = 0x0B;
const END: [u8; 2] = [0x1C, 0x0D];

#[derive(Debug, Parser)]
#[command(
    name = "mllp",
    about = "HL7 over MLLP into the real app (store before reply), against a bare MLLP echo server and raw SQLite inserts."
)]
struct Args {
    /// Length of each closed-loop run (8 connections, then 1).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also stop a closed-loop run after this many messages (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_messages: u64,
    /// Connections in the many-connection and paced scenarios.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// The paced scenario's rate, messages per second over all connections.
    #[arg(long, default_value_t = 2_000.0)]
    paced_rate: f64,
    /// Length of the paced run (default: --seconds).
    #[arg(long)]
    paced_seconds: Option<u64>,
    /// Paced run: how long after the last due time to wait before cutting off.
    #[arg(long, default_value_t = 5)]
    grace_seconds: u64,
    /// Warm-up before each scenario, on the same server (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Each raw SQLite run stops after this long (or --raw-max-rows).
    #[arg(long, default_value_t = 4)]
    raw_seconds: u64,
    #[arg(long, default_value_t = 200_000)]
    raw_max_rows: usize,
    /// Rows per transaction in the raw SQLite baselines.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8, 512])]
    raw_batches: Vec<usize>,
    /// Distinct patients the messages are about.
    #[arg(long, default_value_t = 2_000)]
    patients: usize,
    /// Do not run the workers (HL7 applier, dispatcher, …) in the app: ingest alone.
    #[arg(long)]
    no_workers: bool,
    /// Diagnostic, not as shipped: SQLite synchronous=NORMAL for the app and the raw
    /// baseline (no fsync per commit), to show what the fsyncs cost.
    #[arg(long)]
    relaxed_diagnostic: bool,
    /// Skip the echo server and raw SQLite baselines (the app only).
    #[arg(long)]
    app_only: bool,
    /// Do not run scenarios 1 and 2 a second time with the workers off.
    #[arg(long)]
    skip_workers_off: bool,
    /// Which scenarios to run (for profiling one alone).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = SCENARIOS.to_vec())]
    scenarios: Vec<Scenario>,
    /// Do not time one message's parts at the end.
    #[arg(long)]
    skip_breakdown: bool,
    /// Only time one message's parts (for profiling).
    #[arg(long)]
    breakdown_only: bool,
    /// After the app's runs, how long to watch the applier catch up with no messages
    /// arriving.
    #[arg(long, default_value_t = 2)]
    drain_seconds: u64,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    loader_threads: usize,
    /// Names this run in the results (its own section of messaging-results.md).
    #[arg(long)]
    label: Option<String>,
    /// Keep the databases.
    #[arg(long)]
    keep: bool,
}

impl Args {
    fn durability(&self) -> Durability {
        if self.relaxed_diagnostic {
            Durability::Relaxed
        } else {
            Durability::Shipped
        }
    }

    fn chosen(&self) -> Vec<Scenario> {
        SCENARIOS
            .into_iter()
            .filter(|s| self.scenarios.contains(s))
            .collect()
    }

    fn paced_seconds(&self) -> u64 {
        self.paced_seconds.unwrap_or(self.seconds)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The app's logs, only when asked for (`RAPPORT_LOG=error`, say): with none installed,
    // the per-message log lines of the ingest path cost nothing here.
    if std::env::var_os("RAPPORT_LOG").is_some() {
        rapport::telemetry::init_logs(&rapport::config::LogFormat::Human);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let loader = Loader::new(args.loader_threads)?;
    let result = runtime.block_on(run(&args, &loader));
    loader.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

// ---------------------------------------------------------------------------------------
// The messages.

const FAMILY: [&str; 24] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Garcia",
    "Martinez",
    "Rodriguez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Perez",
    "Sanchez",
    "Ramirez",
    "Torres",
    "Flores",
    "Rivera",
];
const GIVEN: [&str; 24] = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Jose",
    "Maria",
    "Luis",
    "Ana",
    "Carlos",
    "Carmen",
    "Juan",
    "Rosa",
    "Jorge",
    "Sofia",
    "Miguel",
    "Lucia",
];
const STREETS: [&str; 8] = [
    "Main St",
    "Oak Ave",
    "Colfax Ave",
    "Broadway",
    "Federal Blvd",
    "Alameda Ave",
    "Speer Blvd",
    "Evans Ave",
];

/// Builds the messages of one phase: SIU^S12, CR between segments, MSH-10 `{tag}{n}` and
/// SCH-2 `F{tag}{n}`, so every (tag, n) is a distinct message.
struct Gen {
    tag: String,
    patients: usize,
    msh_time: String,
    /// Appointment days, `YYYYMMDD`, from 2027-01-04 on.
    days: Vec<String>,
}

impl Gen {
    fn new(tag: &str, patients: usize) -> Gen {
        let first = jiff::civil::date(2027, 1, 4);
        let days = (0..365)
            .filter_map(|d| first.checked_add(jiff::Span::new().days(d)).ok())
            .map(|d| d.strftime("%Y%m%d").to_string())
            .collect();
        Gen {
            tag: tag.to_owned(),
            patients: patients.max(1),
            msh_time: jiff::Zoned::now().strftime("%Y%m%d%H%M%S%z").to_string(),
            days,
        }
    }

    fn control_id(&self, n: u64) -> String {
        format!("{}{n:09}", self.tag)
    }

    /// The `n`th message, unframed.
    fn message(&self, n: u64, out: &mut Vec<u8>) {
        let k = (n as usize) % self.patients;
        let family = FAMILY[k % FAMILY.len()];
        let given = GIVEN[(k / FAMILY.len()) % GIVEN.len()];
        let middle = &GIVEN[(k / 7) % GIVEN.len()][..1];
        let sex = if GIVEN.iter().position(|g| *g == given).unwrap_or(0) % 2 == 0 {
            "M"
        } else {
            "F"
        };
        let dob = format!("{:04}{:02}{:02}", 1940 + k % 65, 1 + k % 12, 1 + k % 28);
        let phone = bench::world::recipient(k);
        let (area, local) = (&phone[2..5], &phone[5..]);
        let day = &self.days[(n as usize / 32) % self.days.len()];
        let start_min = 8 * 60 + (n % 32) as usize * 15;
        let end_min = start_min + 30;
        let start = format!("{day}{:02}{:02}00", start_min / 60, start_min % 60);
        let end = format!("{day}{:02}{:02}00", end_min / 60, end_min % 60);
        let street = STREETS[k % STREETS.len()];
        let tag = &self.tag;
        let ctrl = self.control_id(n);
        let provider = "1234567890^Okafor^Grace^N^^Dr^MD^^NPI&2.16.840.1.113883.4.6&ISO";
        let location = "NORTH^Room 3^^North Clinic";
        out.clear();
        let segments = [
            format!(
                "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|{}||SIU^S12^SIU_S12|{ctrl}|P|2.5|||||USA||en-US",
                self.msh_time
            ),
            format!(
                "SCH|P{tag}{n:09}^EPIC_PLACER|F{tag}{n:09}^EPIC||||ROUTINE^Routine appointment^HL70276|FOLLOWUP^Follow-up visit^LOCAL|OFFICE^Office visit^LOCAL|30|min|^^30^{start}^{end}|{provider}|^WPN^PH^^1^303^5550100|1 Clinic Way^Suite 200^Denver^CO^80202^USA|{location}|{provider}|^WPN^PH^^1^303^5550100|1 Clinic Way^Suite 200^Denver^CO^80202^USA|{location}|FRONTDESK^Desk^Front|^WPN^PH^^1^303^5550111|NORTH^^^North Clinic|||Booked"
            ),
            format!("TQ1|1||||||{start}|{end}|R"),
            "NTE|1||Patient asked for a reminder text the day before. Please bring the insurance card and a list of current medications.".to_owned(),
            format!(
                "PID|1||MRN{:07}^^^NORTH^MR~{:09}^^^EPIC^PI||{family}^{given}^{middle}^^^^L||{dob}|{sex}||2106-3^White^HL70005|{} {street}^Apt {}^Denver^CO^802{:02}^USA^H||^PRN^CP^^1^{area}^{local}~^NET^Internet^{}.{}{k}@example.com|^WPN^PH^^1^303^5550100|eng^English^ISO639|M^Married^HL70002||ACCT{k:08}|||N^Not Hispanic or Latino^HL70189",
                1_000_000 + k,
                500_000_000 + k,
                100 + k % 900,
                1 + k % 40,
                k % 100,
                given.to_lowercase(),
                family.to_lowercase(),
            ),
            format!(
                "PV1|1|O|{location}||||{provider}|||GI||||||||||V{tag}{n:09}^^^NORTH^VN|||||||||||||||||||||||||{start}"
            ),
            "RGS|1|A".to_owned(),
            format!("AIS|1|A|OFFICE^Office visit^LOCAL|{start}|0|min|30|min||Booked"),
            "NTE|1||Standard follow-up visit, 30 minutes; no fasting required".to_owned(),
            format!(
                "AIG|1|A|ROOM3^Room 3^LOCAL|RM^Room^LOCAL||||{start}|0|min|30|min||Booked"
            ),
            format!("AIL|1|A|{location}|C^Clinic^HL70305||{start}|0|min|30|min||Booked"),
            format!(
                "AIP|1|A|{provider}|ATT^Attending^HL70443||{start}|0|min|30|min||Booked"
            ),
            "NTE|1||Provider prefers the patient to arrive 15 minutes early to update the history".to_owned(),
        ];
        for (i, s) in segments.iter().enumerate() {
            if i > 0 {
                out.push(b'\r');
            }
            out.extend_from_slice(s.as_bytes());
        }
        out.push(b'\r');
    }

    /// The `n`th message in its MLLP frame.
    fn frame(&self, n: u64, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        self.message(n, scratch);
        out.clear();
        out.push(START);
        out.extend_from_slice(scratch);
        out.extend_from_slice(&END);
    }
}

// ---------------------------------------------------------------------------------------
// The MLLP client and the echo server.

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A reply as text, segments on one line (for showing a refusal).
fn reply_text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply)
        .trim_start_matches(START as char)
        .trim_end()
        .replace('\r', " / ")
}

/// Whether a reply frame accepts the message (MSA-1 AA or CA).
fn accepted(reply: &[u8]) -> bool {
    // The segment, not "MSA|" inside MSH-10 (a control id may end in MSA).
    find(reply, b"\rMSA|")
        .map(|i| &reply[i + 5..(i + 7).min(reply.len())])
        .is_some_and(|code| code == b"AA" || code == b"CA")
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(8 * 1024),
        })
    }

    /// Sends one frame and reads the one reply frame; answers `None` when it accepted,
    /// else the reply.
    async fn exchange(&mut self, frame: &[u8]) -> std::io::Result<Option<String>> {
        self.stream.write_all(frame).await?;
        self.buf.clear();
        let mut searched: usize = 0;
        loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(end) = find(&self.buf[searched.saturating_sub(1)..], &END) {
                let end = searched.saturating_sub(1) + end;
                let reply = &self.buf[..end];
                return Ok((!accepted(reply)).then(|| reply_text(reply)));
            }
            searched = self.buf.len();
        }
    }
}

/// A bare MLLP server: every frame is answered at once with `ack` (a fixed AA ACK,
/// framed); nothing is parsed or stored.
async fn echo_server(
    listener: TcpListener,
    ack: Arc<Vec<u8>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(echo_connection(stream, ack.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn echo_connection(mut stream: TcpStream, ack: Arc<Vec<u8>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        while let Some(end) = find(&buf, &END) {
            buf.drain(..end + 2);
            if stream.write_all(&ack).await.is_err() {
                return;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load.

#[derive(Debug, Clone)]
struct Outcome {
    /// Messages sent (closed loop) or due (paced).
    offered: u64,
    /// Answered with an accepting ACK.
    ok: u64,
    /// Answered with any other ACK.
    refused: u64,
    /// Connection errors.
    errors: u64,
    /// From the start to the last ACK.
    elapsed: Duration,
    /// Closed loop: from send to ACK. Paced: from the time the message was due to its ACK.
    latency: Latency,
    /// Paced only: from the actual send to the ACK (the server's part).
    from_send: Option<Latency>,
    /// The first reply that did not accept, if any.
    first_refusal: Option<String>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn problems(&self) -> String {
        let mut p = Vec::new();
        if self.refused > 0 {
            p.push(format!(
                "{} not accepted, the first: `{}`",
                grouped(self.refused),
                self.first_refusal.as_deref().unwrap_or("?")
            ));
        }
        if self.errors > 0 {
            p.push(format!("{} connection errors", self.errors));
        }
        if self.latency.unfinished > 0 {
            p.push(format!(
                "{} cut off unanswered",
                grouped(self.latency.unfinished as u64)
            ));
        }
        if p.is_empty() {
            "-".into()
        } else {
            p.join("; ")
        }
    }

    fn json(&self) -> Value {
        json!({
            "offered": self.offered,
            "ok": self.ok,
            "refused": self.refused,
            "errors": self.errors,
            "secs": round3(self.elapsed.as_secs_f64()),
            "per_s": round1(self.rate()),
            "latency": self.latency.json(),
            "latency_from_send": self.from_send.as_ref().map(Latency::json),
            "first_refusal": self.first_refusal,
        })
    }
}

#[derive(Default)]
struct ConnTally {
    ok: u64,
    refused: u64,
    errors: u64,
    sent: u64,
    latencies: Vec<Duration>,
    from_send: Vec<Duration>,
    unfinished: usize,
    unfinished_floor: Option<Duration>,
    last: Option<Instant>,
    first_refusal: Option<String>,
}

impl ConnTally {
    fn count(&mut self, refusal: Option<String>) {
        match refusal {
            None => self.ok += 1,
            Some(reply) => {
                self.refused += 1;
                self.first_refusal.get_or_insert(reply);
            }
        }
    }
}

/// `conns` connections, each sending its next message as soon as the last is answered,
/// for `duration` (and at most `max` messages in all, when not 0).
async fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
    max: u64,
    maker: Arc<Gen>,
    first: Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let mut clients = Vec::new();
    for _ in 0..conns.max(1) {
        clients.push(Client::connect(addr).await?);
    }
    let base = first.load(Ordering::Relaxed);
    let next = Arc::new(AtomicU64::new(base));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let (maker, next) = (maker.clone(), next.clone());
        tasks.spawn(async move {
            let mut t = ConnTally::default();
            let (mut frame, mut scratch) = (Vec::new(), Vec::new());
            while start.elapsed() < duration {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if max > 0 && n - base >= max {
                    break;
                }
                maker.frame(n, &mut frame, &mut scratch);
                let sent = Instant::now();
                t.sent += 1;
                match client.exchange(&frame).await {
                    Ok(refusal) => {
                        let now = Instant::now();
                        t.latencies.push(now - sent);
                        t.last = Some(now);
                        t.count(refusal);
                    }
                    Err(_) => {
                        t.errors += 1;
                        break;
                    }
                }
            }
            t
        });
    }
    let mut tallies = Vec::new();
    while let Some(t) = tasks.join_next().await {
        tallies.push(t?);
    }
    first.store(
        next.load(Ordering::Relaxed) + conns as u64,
        Ordering::Relaxed,
    );
    Ok(merge(start, tallies, false))
}

/// `rate` messages per second for `duration` over `conns` connections, each one at a
/// time: message k is due at start + k/rate on connection k mod conns. Latency runs from
/// the due time. Whatever is unanswered `grace` after the last due time is cut off.
async fn paced(
    addr: SocketAddr,
    conns: usize,
    rate: f64,
    duration: Duration,
    grace: Duration,
    maker: Arc<Gen>,
    first: Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let conns = conns.max(1);
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(Client::connect(addr).await?);
    }
    let base = first.load(Ordering::Relaxed);
    let start = Instant::now() + Duration::from_millis(50);
    let due = move |k: u64| start + Duration::from_secs_f64(k as f64 / rate);
    let cutoff = due(total) + grace;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let maker = maker.clone();
        tasks.spawn(async move {
            let mut t = ConnTally::default();
            let (mut frame, mut scratch) = (Vec::new(), Vec::new());
            let mine: Vec<u64> = (c as u64..total).step_by(conns).collect();
            for (j, &k) in mine.iter().enumerate() {
                let at = due(k);
                maker.frame(base + k, &mut frame, &mut scratch);
                tokio::time::sleep_until(at).await;
                let sent = Instant::now();
                let answered = if sent >= cutoff {
                    None
                } else {
                    t.sent += 1;
                    tokio::time::timeout_at(cutoff, client.exchange(&frame))
                        .await
                        .ok()
                };
                match answered {
                    Some(Ok(refusal)) => {
                        let now = Instant::now();
                        t.latencies.push(now - at);
                        t.from_send.push(now - sent);
                        t.last = Some(now);
                        t.count(refusal);
                    }
                    Some(Err(_)) => {
                        t.errors += 1;
                        t.unfinished += mine.len() - j - 1;
                        break;
                    }
                    None => {
                        // This one and every later one of this connection: unanswered at
                        // the cut-off; the last due has waited the least.
                        t.unfinished += mine.len() - j;
                        let last_due = due(*mine.last().unwrap_or(&k));
                        let floor = cutoff.saturating_duration_since(last_due);
                        t.unfinished_floor =
                            Some(t.unfinished_floor.map_or(floor, |f: Duration| f.min(floor)));
                        break;
                    }
                }
            }
            t
        });
    }
    let mut tallies = Vec::new();
    while let Some(t) = tasks.join_next().await {
        tallies.push(t?);
    }
    first.store(base + total + 1, Ordering::Relaxed);
    let mut out = merge(start, tallies, true);
    out.offered = total;
    Ok(out)
}

fn merge(start: Instant, tallies: Vec<ConnTally>, paced: bool) -> Outcome {
    let mut latencies = Vec::new();
    let mut from_send = Vec::new();
    let (mut ok, mut refused, mut errors, mut sent, mut unfinished) = (0, 0, 0, 0, 0);
    let mut floor: Option<Duration> = None;
    let mut last = start;
    let mut first_refusal = None;
    for t in tallies {
        if first_refusal.is_none() {
            first_refusal = t.first_refusal;
        }
        ok += t.ok;
        refused += t.refused;
        errors += t.errors;
        sent += t.sent;
        unfinished += t.unfinished;
        if let Some(f) = t.unfinished_floor {
            floor = Some(floor.map_or(f, |g| g.min(f)));
        }
        if let Some(l) = t.last {
            last = last.max(l);
        }
        latencies.extend(t.latencies);
        from_send.extend(t.from_send);
    }
    let floor = floor.unwrap_or_default();
    Outcome {
        offered: sent,
        ok,
        refused,
        errors,
        elapsed: last.saturating_duration_since(start),
        latency: Latency::of(&latencies, unfinished, floor),
        from_send: paced.then(|| Latency::of(&from_send, unfinished, floor)),
        first_refusal,
    }
}

// ---------------------------------------------------------------------------------------
// The app.

struct App {
    mllp: SocketAddr,
    db: FreshDb,
    counter: Counter,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    key_dir: PathBuf,
    durability: String,
}

fn key_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = report::bench_dir()
        .join("tmp")
        .join(format!("mllp-{label}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn config_for(db_url: &str, key_dir: &std::path::Path, workers: bool) -> rapport::Config {
    rapport::Config {
        database_url: db_url.to_owned(),
        secret_key_file: key_dir.join("secret.key"),
        workers,
        ..rapport::Config::default()
    }
}

impl App {
    /// The real app, MLLP on, on a fresh database with one organisation.
    async fn start(args: &Args, label: &str, workers: bool) -> anyhow::Result<App> {
        let db = FreshDb::create(Backend::Sqlite, &format!("mllp-{label}")).await?;
        let (store, durability) = db.open(args.durability()).await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        let mllp = TcpListener::bind("127.0.0.1:0").await?;
        let public_url = format!("http://{}", http.local_addr()?);
        let key_dir = key_dir(label)?;
        let config = rapport::Config {
            http_addr: http.local_addr()?,
            metrics_addr: metrics.local_addr()?,
            mllp_addr: mllp.local_addr()?,
            public_url: public_url.clone(),
            ..config_for(&db.url, &key_dir, workers)
        };
        let engine = rapport::engine(&config, store.clone(), Arc::new(SystemClock))?;
        rapport::cli::create_org(&*store, "mllp", "Benchmark Clinic", "America/Denver").await?;
        let mllp_addr = mllp.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            rapport::launch_all(&config, engine, http, metrics, Some(mllp), async move {
                let _ = stopped.await;
            })
            .await
        });
        wait_ready(&format!("{public_url}/readyz")).await?;
        let counter = db.counter().await?;
        Ok(App {
            mllp: mllp_addr,
            db,
            counter,
            stop,
            task,
            key_dir,
            durability,
        })
    }

    /// Rows of `hl7_messages` by state.
    async fn states(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        Ok(self
            .counter
            .groups("SELECT state, COUNT(*) FROM hl7_messages GROUP BY state")
            .await?
            .into_iter()
            .collect())
    }

    async fn stop(self, keep: bool) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(joined) => joined?.context("the app")?,
            Err(_) => eprintln!("   the app did not stop within 30 s"),
        }
        self.counter.close().await;
        let _ = std::fs::remove_dir_all(&self.key_dir);
        if keep {
            eprintln!("   kept {}", self.db.url);
        } else {
            self.db.remove().await?;
        }
        Ok(())
    }
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
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

fn count(states: &BTreeMap<String, i64>, state: &str) -> i64 {
    states.get(state).copied().unwrap_or(0)
}

fn total(states: &BTreeMap<String, i64>) -> i64 {
    states.values().sum()
}

// ---------------------------------------------------------------------------------------
// Phases.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Conns,
    One,
    Paced,
}

struct Phase {
    server: &'static str,
    scenario: Scenario,
    mode: String,
    outcome: Outcome,
    cpu: cpu::Use,
    /// App only: what the store and the applier said afterwards.
    note: Option<String>,
    store_json: Value,
}

impl Phase {
    fn line(&self) -> String {
        let o = &self.outcome;
        let l = &o.latency;
        let from_send = o
            .from_send
            .as_ref()
            .map(|s| format!(" (from send: p50 {}, p99 {}, max {})", s.p50, s.p99, s.max))
            .unwrap_or_default();
        format!(
            "{:<16} {:<30} {:>9} acked in {:>6.2} s = {:>7} msg/s; ACK p50 {}, p99 {}, p99.9 {}, max {}{}; CPU {:.3} ms/msg, {}; {}",
            self.server,
            self.mode,
            grouped(o.ok),
            o.elapsed.as_secs_f64(),
            rate(o.rate()),
            l.p50,
            l.p99,
            l.p999,
            l.max,
            from_send,
            self.cpu.ms_per(o.ok as usize),
            self.cpu.describe(),
            o.problems(),
        )
    }
}

async fn warm_up(
    loader: &Loader,
    addr: SocketAddr,
    conns: usize,
    secs: f64,
    maker: &Arc<Gen>,
    first: &Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let o = loader
        .run(closed_loop(
            addr,
            conns,
            Duration::from_secs_f64(secs),
            0,
            maker.clone(),
            first.clone(),
        ))
        .await?;
    if o.ok == 0 {
        bail!("no message accepted during the warm-up ({})", o.problems());
    }
    Ok(o)
}

/// One scenario against `addr`: warm-up, then the measured run.
async fn scenario(
    args: &Args,
    loader: &Loader,
    addr: SocketAddr,
    which: Scenario,
    maker: &Arc<Gen>,
    first: &Arc<AtomicU64>,
) -> anyhow::Result<(Outcome, Outcome, cpu::Use)> {
    let conns = match which {
        Scenario::One => 1,
        _ => args.connections,
    };
    let warm = warm_up(loader, addr, conns, args.warmup_seconds, maker, first).await?;
    let snap = cpu::Snapshot::now();
    let outcome = match which {
        Scenario::Conns | Scenario::One => {
            loader
                .run(closed_loop(
                    addr,
                    conns,
                    Duration::from_secs(args.seconds),
                    args.max_messages,
                    maker.clone(),
                    first.clone(),
                ))
                .await?
        }
        Scenario::Paced => {
            loader
                .run(paced(
                    addr,
                    conns,
                    args.paced_rate,
                    Duration::from_secs(args.paced_seconds()),
                    Duration::from_secs(args.grace_seconds),
                    maker.clone(),
                    first.clone(),
                ))
                .await?
        }
    };
    Ok((warm, outcome, snap.used()))
}

fn mode(args: &Args, which: Scenario) -> String {
    match which {
        Scenario::Conns => format!("{} conns, one at a time", args.connections),
        Scenario::One => "1 conn, one at a time".into(),
        Scenario::Paced => format!(
            "paced {}/s over {} conns",
            grouped(args.paced_rate as u64),
            args.connections
        ),
    }
}

const SCENARIOS: [Scenario; 3] = [Scenario::Conns, Scenario::One, Scenario::Paced];
/// The app with its workers off, in the same run: ingest alone.
const APP_WORKERS_OFF: &str = "app, workers off";

fn tag(server: &str, which: Scenario) -> String {
    let s = match server {
        "echo" => 'E',
        "app" => 'A',
        _ => 'B',
    };
    let w = match which {
        Scenario::Conns => 'M',
        Scenario::One => 'O',
        Scenario::Paced => 'P',
    };
    format!("{s}{w}")
}

/// The app under one scenario; `workers` off is the ingest alone (no applier).
async fn run_app(
    args: &Args,
    loader: &Loader,
    which: Scenario,
    workers: bool,
) -> anyhow::Result<(Phase, String)> {
    let label = match which {
        Scenario::Conns => "conns",
        Scenario::One => "one",
        Scenario::Paced => "paced",
    };
    let server = if workers || args.no_workers {
        "app"
    } else {
        APP_WORKERS_OFF
    };
    let app = App::start(args, label, workers).await?;
    let durability = app.durability.clone();
    let maker = Arc::new(Gen::new(&tag(server, which), args.patients));
    let first = Arc::new(AtomicU64::new(0));
    let before_warm = app.states().await?;
    let (warm, outcome, cpu) = scenario(args, loader, app.mllp, which, &maker, &first).await?;
    let after = app.states().await?;
    let mut phase = Phase {
        server,
        scenario: which,
        mode: mode(args, which),
        outcome,
        cpu,
        note: None,
        store_json: Value::Null,
    };
    println!("   {}", phase.line());
    let outcome = &phase.outcome;
    // Every accepted message was on disk before its ACK left: in the message log, or in
    // the HL7 journal (SQLite), which moves them into the log moments later. Those still
    // in the journal count as waiting for the applier too.
    let acked = warm.ok + outcome.ok;
    let in_log_at_end = total(&after) - total(&before_warm);
    let in_journal = (acked as i64 - in_log_at_end).max(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut stored = in_log_at_end;
    while stored < acked as i64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = total(&app.states().await?) - total(&before_warm);
    }
    let stored_before_ack = stored >= acked as i64;
    let pending = count(&after, "pending") + in_journal;
    let applied = count(&after, "applied");
    let failed = count(&after, "failed");
    let rejected = count(&after, "rejected");
    let mut note = format!(
        "{} accepted ACKs (warm-up included), {} rows stored ({}; {} were still in the journal when the run ended); at the end of the run the applier was {} messages behind ({:.1} s of this run's ACK rate), {} applied, {} failed, {} rejected",
        grouped(acked),
        grouped(stored as u64),
        if stored_before_ack {
            "every ACKed message is stored"
        } else {
            "SOME ACKED MESSAGES ARE NOT STORED"
        },
        grouped(in_journal as u64),
        grouped(pending as u64),
        pending as f64 / outcome.rate().max(1e-9),
        grouped(applied as u64),
        grouped(failed as u64),
        grouped(rejected as u64),
    );
    let mut drain_rate = None;
    if workers && args.drain_seconds > 0 && pending > 0 {
        let t = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(args.drain_seconds)).await;
        let later = app.states().await?;
        let r = (count(&later, "applied") + count(&later, "failed") - applied - failed) as f64
            / t.elapsed().as_secs_f64();
        drain_rate = Some(r);
        note.push_str(&format!(
            "; with no messages arriving it then applied {} messages/s (over {} s), {} still pending",
            rate(r),
            args.drain_seconds,
            grouped(count(&later, "pending") as u64)
        ));
    }
    let store_json = json!({
        "acked": acked,
        "stored": stored,
        "stored_before_ack": stored_before_ack,
        "in_journal_at_end": in_journal,
        "pending_at_end": pending,
        "applied_at_end": applied,
        "failed": failed,
        "rejected": rejected,
        "applier_drain_per_s": drain_rate.map(round1),
    });
    println!("        {note}");
    app.stop(args.keep).await?;
    if !stored_before_ack {
        bail!("ACKed messages missing from the store: {note}");
    }
    phase.note = Some(note);
    phase.store_json = store_json;
    Ok((phase, durability))
}

// ---------------------------------------------------------------------------------------
// The disk alone.

struct FlushRun {
    how: &'static str,
    writes: usize,
    secs: f64,
    latency: Latency,
}

/// Durable writes of `blocks` 4 KiB blocks, one after another, for `--raw-seconds`, to a
/// zero-filled file, as the HL7 journal writes: `O_DIRECT | O_DSYNC` where the filesystem
/// allows, else a write and `fdatasync`.
fn raw_flush(args: &Args, blocks: usize) -> anyhow::Result<FlushRun> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let dir = std::env::temp_dir().join(format!("rapport-bench-flush-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("flush");
    const SPAN: usize = 8 << 20;
    {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; SPAN])?;
        f.sync_all()?;
    }
    let direct = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(&path)
            .ok()
    };
    let buffered = std::fs::OpenOptions::new().write(true).open(&path)?;
    let len = 4096 * blocks;
    let mut mem = vec![7u8; len + 4096];
    let start = (4096 - mem.as_ptr() as usize % 4096) % 4096;
    let block = &mut mem[start..start + len];
    let limit = Duration::from_secs(args.raw_seconds);
    let wall = std::time::Instant::now();
    let mut latencies = Vec::new();
    let mut offset = 0usize;
    while wall.elapsed() < limit && latencies.len() < args.raw_max_rows {
        let t = std::time::Instant::now();
        match &direct {
            Some(f) => f.write_all_at(block, offset as u64)?,
            None => {
                buffered.write_all_at(block, offset as u64)?;
                buffered.sync_data()?;
            }
        }
        latencies.push(t.elapsed());
        offset = (offset + len) % (SPAN - len);
    }
    let secs = wall.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(FlushRun {
        how: if direct.is_some() {
            "O_DIRECT|O_DSYNC"
        } else {
            "write + fdatasync"
        },
        writes: latencies.len(),
        secs,
        latency: Latency::of(&latencies, 0, Duration::ZERO),
    })
}

// ---------------------------------------------------------------------------------------
// Raw SQLite.

/// The row the store writes for message `n` (computed as `hl7_ingest` computes it).
struct Row {
    id: uuid::Uuid,
    received_at: i64,
    control_id: String,
    content_hash: String,
    raw: Vec<u8>,
    ack: String,
    result: String,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn ack_timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y%m%d%H%M%S+0000")
        .to_string()
}

fn row(maker: &Gen, n: u64, buf: &mut Vec<u8>) -> anyhow::Result<Row> {
    maker.message(n, buf);
    let raw = buf.clone();
    let message = hl7::Message::parse(&raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    let warnings = engine::ehr::hl7_map::classify(&message)
        .and_then(|kind| engine::ehr::hl7_map::map(&message, kind, &InterfaceSettings::default()))
        .map(|(_, w)| w)
        .map_err(|r| anyhow::anyhow!("refused: {}", r.error.message))?;
    let ack = hl7::ack::build(
        &message,
        hl7::ack::AckCode::AA,
        &format!("R{n}"),
        &ack_timestamp(),
        &[],
    );
    let result = serde_json::to_string(&json!({ "warnings": warnings }))?;
    let control_id = message.msh().field(10).text().trim().to_owned();
    drop(message);
    Ok(Row {
        id: uuid::Uuid::now_v7(),
        received_at: jiff::Timestamp::now().as_microsecond(),
        control_id,
        content_hash: hex(&Sha256::digest(&raw)),
        raw,
        ack,
        result,
    })
}

struct RawRun {
    batch: usize,
    rows: usize,
    transactions: usize,
    db_secs: f64,
    commit_ms: Latency,
}

impl RawRun {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.db_secs.max(1e-9)
    }
}

/// Inserts rows into `hl7_messages` of a fresh migrated database through the store's own
/// writer connection (same pragmas), `batch` rows per `BEGIN IMMEDIATE … COMMIT`, for
/// `--raw-seconds`. Only the database's time is counted (building the rows is not).
async fn raw_sqlite(args: &Args, batch: usize) -> anyhow::Result<RawRun> {
    let db = FreshDb::create(Backend::Sqlite, &format!("mllp-raw{batch}")).await?;
    let store = store_sqlite::SqliteStore::connect(&db.url).await?;
    store::Store::migrate(&store).await?;
    if args.relaxed_diagnostic {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(store.writer_pool())
            .await?;
    }
    let org = rapport::cli::create_org(&store, "raw", "Raw", "America/Denver").await?;
    let pool = store.writer_pool().clone();
    let maker = Gen::new(&format!("R{batch}"), args.patients);
    let mut buf = Vec::new();
    let mut seq: i64 = 0;
    let mut n: u64 = 0;
    let mut db_time = Duration::ZERO;
    let mut commits = Vec::new();
    let wall = std::time::Instant::now();
    let limit = Duration::from_secs(args.raw_seconds);
    let mut rows_done = 0;
    while wall.elapsed() < limit && rows_done < args.raw_max_rows {
        let rows: Vec<Row> = (0..batch)
            .map(|_| {
                n += 1;
                row(&maker, n, &mut buf)
            })
            .collect::<anyhow::Result<_>>()?;
        let t = std::time::Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in rows.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO hl7_messages (id, seq, org_id, interface_id, received_at, sender, control_id, content_hash, message_type, raw, ack, ack_code, state, result, processed_at) ",
            );
            q.push_values(chunk, |mut b, r| {
                seq += 1;
                b.push_bind(r.id)
                    .push_bind(seq)
                    .push_bind(org.id.0)
                    .push_bind(None::<uuid::Uuid>)
                    .push_bind(r.received_at)
                    .push_bind("EPIC|NORTH")
                    .push_bind(&r.control_id)
                    .push_bind(&r.content_hash)
                    .push_bind("SIU^S12")
                    .push_bind(&r.raw)
                    .push_bind(&r.ack)
                    .push_bind("AA")
                    .push_bind("pending")
                    .push_bind(&r.result)
                    .push_bind(None::<i64>);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let took = t.elapsed();
        db_time += took;
        commits.push(took);
        rows_done += rows.len();
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hl7_messages")
        .fetch_one(&pool)
        .await?;
    if stored as usize != rows_done {
        bail!("raw SQLite: {rows_done} rows inserted but {stored} counted");
    }
    store::Store::close(&store).await;
    if args.keep {
        eprintln!("   kept {}", db.url);
    } else {
        db.remove().await?;
    }
    Ok(RawRun {
        batch,
        rows: rows_done,
        transactions: commits.len(),
        db_secs: db_time.as_secs_f64(),
        commit_ms: Latency::of(&commits, 0, Duration::ZERO),
    })
}

// ---------------------------------------------------------------------------------------
// Where the time goes.

/// One message's parts, each timed alone and sequentially: parse, map, ACK, hash, result
/// JSON (CPU); the store's commit of one row and of 8; the whole receiver without TCP.
async fn breakdown(args: &Args) -> anyhow::Result<Vec<(String, f64)>> {
    let maker = Gen::new("BD", args.patients);
    let n = 2_000u64;
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut b = Vec::new();
            maker.message(i, &mut b);
            b
        })
        .collect();
    let per = |d: Duration, k: u64| d.as_secs_f64() * 1000.0 / k as f64;
    let mut out = Vec::new();

    let t = std::time::Instant::now();
    for m in &messages {
        std::hint::black_box(hl7::Message::parse(m).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    out.push((
        "parse (hl7::Message::parse)".to_owned(),
        per(t.elapsed(), n),
    ));

    let parsed: Vec<hl7::Message> = messages
        .iter()
        .map(|m| hl7::Message::parse(m))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = InterfaceSettings::default();
    let t = std::time::Instant::now();
    let mut warnings = Vec::new();
    for m in &parsed {
        let kind = engine::ehr::hl7_map::classify(m)
            .map_err(|r| anyhow::anyhow!("{}", r.error.message))?;
        let (mapped, w) = engine::ehr::hl7_map::map(m, kind, &settings)
            .map_err(|r| anyhow::anyhow!("{}", r.error.message))?;
        std::hint::black_box(mapped);
        warnings = w;
    }
    out.push((
        "classify + map (validation at ingest)".to_owned(),
        per(t.elapsed(), n),
    ));

    let ts = ack_timestamp();
    let t = std::time::Instant::now();
    for (i, m) in parsed.iter().enumerate() {
        std::hint::black_box(hl7::ack::build(
            m,
            hl7::ack::AckCode::AA,
            &format!("R{i}"),
            &ts,
            &[],
        ));
    }
    out.push((
        "ACK built (hl7::ack::build)".to_owned(),
        per(t.elapsed(), n),
    ));

    let t = std::time::Instant::now();
    for m in &messages {
        std::hint::black_box(hex(&Sha256::digest(m)));
    }
    out.push(("SHA-256 of the bytes, hex".to_owned(), per(t.elapsed(), n)));

    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_string(&json!({ "warnings": warnings }))?);
    }
    out.push(("result JSON".to_owned(), per(t.elapsed(), n)));
    drop(parsed);

    // The store and the receiver, on a fresh database (no workers: nothing applies).
    let db = FreshDb::create(Backend::Sqlite, "mllp-breakdown").await?;
    let (store, _) = db.open(args.durability()).await?;
    let org = rapport::cli::create_org(&*store, "bd", "Breakdown", "America/Denver").await?;
    let k = 200u64;
    let mut buf = Vec::new();
    let to_message = |r: Row| store::Hl7Message {
        id: domain::Hl7MessageId::new(),
        org_id: org.id,
        interface_id: None,
        received_at: jiff::Timestamp::now(),
        sender: "EPIC|NORTH".into(),
        control_id: r.control_id,
        content_hash: r.content_hash,
        message_type: "SIU^S12".into(),
        raw: r.raw,
        ack: r.ack,
        ack_code: "AA".into(),
        state: store::Hl7State::Pending,
        result: serde_json::from_str(&r.result).ok(),
        processed_at: None,
    };
    let mut rows = Vec::new();
    for i in 0..k * 9 + 10 {
        rows.push(to_message(row(&maker, n + i, &mut buf)?));
    }
    let mut rows = rows.into_iter();
    // The database's first commits (WAL created, pages allocated) are not timed.
    for _ in 0..10 {
        let one: Vec<_> = rows.by_ref().take(1).collect();
        store.record_hl7_messages(&one).await?;
    }
    let t = std::time::Instant::now();
    for _ in 0..k {
        let one: Vec<_> = rows.by_ref().take(1).collect();
        store.record_hl7_messages(&one).await?;
    }
    out.push((
        format!("store: record_hl7_messages, 1 row per commit (n={k})"),
        per(t.elapsed(), k),
    ));
    let t = std::time::Instant::now();
    for _ in 0..k {
        let eight: Vec<_> = rows.by_ref().take(8).collect();
        store.record_hl7_messages(&eight).await?;
    }
    out.push((
        format!("store: record_hl7_messages, 8 rows per commit, per row (n={k} commits)"),
        per(t.elapsed(), k * 8),
    ));

    let key_dir = key_dir("breakdown")?;
    let engine = rapport::engine(
        &config_for(&db.url, &key_dir, false),
        store.clone(),
        Arc::new(SystemClock),
    )?;
    let receiver = engine::ehr::Hl7Receiver::new(engine);
    let base = n + k * 9 + 10;
    for i in 0..20 {
        maker.message(base + i, &mut buf);
        receiver.receive(&buf).await;
    }
    let t = std::time::Instant::now();
    for i in 0..k {
        maker.message(base + 20 + i, &mut buf);
        let reply = receiver.receive(&buf).await;
        if !accepted(reply.text.as_bytes()) {
            bail!("the receiver did not accept: {}", reply.text);
        }
    }
    out.push((
        format!("Hl7Receiver::receive, sequential, no TCP (n={k}; message built inside)"),
        per(t.elapsed(), k),
    ));
    store.close().await;
    let _ = std::fs::remove_dir_all(&key_dir);
    db.remove().await?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------

fn find_phase<'p>(phases: &'p [Phase], server: &str, which: Scenario) -> Option<&'p Phase> {
    phases
        .iter()
        .find(|p| p.server == server && p.scenario == which)
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

async fn run(args: &Args, loader: &Loader) -> anyhow::Result<()> {
    let load_start = report::load_average();
    println!(
        "== mllp on sqlite: machine: {}",
        report::machine_line(&load_start)
    );
    let (sample_len, segments) = {
        let mut b = Vec::new();
        Gen::new("AM", args.patients).message(1, &mut b);
        (b.len(), b.iter().filter(|&&c| c == b'\r').count())
    };
    println!(
        "   messages: SIU^S12, {sample_len} bytes, {segments} segments, one of {} patients each; load generator: {} thread(s) in this process; server runtime: {} threads",
        grouped(args.patients as u64),
        args.loader_threads,
        report::cpus()
    );
    let mut phases: Vec<Phase> = Vec::new();
    if args.breakdown_only {
        for (what, ms) in breakdown(args).await? {
            println!("   alone: {what:<72} mean {ms:.4} ms");
        }
        return Ok(());
    }

    // (a) The bare MLLP echo server.
    if !args.app_only {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ack = {
            let mut b = Vec::new();
            Gen::new("EE", args.patients).message(0, &mut b);
            let m = hl7::Message::parse(&b).map_err(|e| anyhow::anyhow!("{e}"))?;
            let text = hl7::ack::build(&m, hl7::ack::AckCode::AA, "R1", &ack_timestamp(), &[]);
            let mut f = vec![START];
            f.extend_from_slice(text.as_bytes());
            f.extend_from_slice(&END);
            Arc::new(f)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(echo_server(listener, ack, stopped));
        for which in args.chosen() {
            let maker = Arc::new(Gen::new(&tag("echo", which), args.patients));
            let first = Arc::new(AtomicU64::new(0));
            let (_, outcome, cpu) = scenario(args, loader, addr, which, &maker, &first).await?;
            let phase = Phase {
                server: "echo",
                scenario: which,
                mode: mode(args, which),
                outcome,
                cpu,
                note: None,
                store_json: Value::Null,
            };
            println!("   {}", phase.line());
            phases.push(phase);
        }
        let _ = stop.send(());
        let _ = server.await;
    }

    // The app: a fresh database for each scenario.
    let mut durability = String::new();
    for which in args.chosen() {
        let (phase, d) = run_app(args, loader, which, !args.no_workers).await?;
        durability = d;
        phases.push(phase);
    }
    // The same without the applier (and the other workers): what ingest alone does.
    if !args.no_workers && !args.skip_workers_off {
        for which in args.chosen().into_iter().filter(|w| *w != Scenario::Paced) {
            let (phase, _) = run_app(args, loader, which, false).await?;
            phases.push(phase);
        }
    }

    // (b) Raw SQLite.
    let mut raws = Vec::new();
    if !args.app_only {
        for &batch in &args.raw_batches {
            let r = raw_sqlite(args, batch.max(1)).await?;
            println!(
                "   raw  sqlx SQLite, {:>3} rows per transaction: {:>8} rows in {:>6} transactions, {:.2} s in the database = {:>7} rows/s; commit p50 {}, p99 {}",
                r.batch,
                grouped(r.rows as u64),
                grouped(r.transactions as u64),
                r.db_secs,
                rate(r.rows_per_s()),
                r.commit_ms.p50,
                r.commit_ms.p99,
            );
            raws.push(r);
        }
    }

    // (c) The disk alone: one durable write of a block (as the journal does it).
    let mut flushes = Vec::new();
    if !args.app_only {
        for blocks in [1usize, 4] {
            let f = raw_flush(args, blocks)?;
            println!(
                "   raw  durable write of {:>2} KiB ({}): {:>7} writes in {:.2} s = {:>7} writes/s; p50 {}, p99 {}",
                4 * blocks,
                f.how,
                grouped(f.writes as u64),
                f.secs,
                rate(f.writes as f64 / f.secs.max(1e-9)),
                f.latency.p50,
                f.latency.p99,
            );
            flushes.push(f);
        }
    }

    let parts = if args.skip_breakdown {
        Vec::new()
    } else {
        breakdown(args).await?
    };
    for (what, ms) in &parts {
        println!("   alone: {what:<72} mean {ms:.4} ms");
    }

    // Verdicts and ratios.
    let rate_of =
        |server: &str, w: Scenario| find_phase(&phases, server, w).map(|p| p.outcome.rate());
    let app_conns = rate_of("app", Scenario::Conns).unwrap_or(0.0);
    let app_one = rate_of("app", Scenario::One).unwrap_or(0.0);
    let app_paced = find_phase(&phases, "app", Scenario::Paced).map(|p| &p.outcome);
    let paced_p99 = app_paced.map(|o| o.latency.p99);
    let pass_conns = app_conns >= GOAL_CONNS_RATE;
    let pass_one = app_one >= GOAL_ONE_RATE;
    let pass_p99 = (args.paced_rate - GOAL_PACED_RATE).abs() < f64::EPSILON
        && paced_p99.is_some_and(|p| p.is_finished() && p.ms() <= GOAL_P99_MS)
        && app_paced.is_some_and(|o| o.errors == 0 && o.refused == 0);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
        _ => "-".into(),
    };
    let raw_rate = |b: usize| raws.iter().find(|r| r.batch == b).map(RawRun::rows_per_s);
    // What one connection cannot beat here: each message is one exchange (the echo
    // server's round trip) plus one durable write.
    let echo_one_ms =
        find_phase(&phases, "echo", Scenario::One).map(|p| 1000.0 / p.outcome.rate().max(1e-9));
    let floor_one = match (echo_one_ms, flushes.first()) {
        (Some(rtt), Some(f)) => Some(1000.0 / (rtt + f.latency.p50.ms())),
        _ => None,
    };
    if let Some(floor) = floor_one {
        println!(
            "   one connection's ceiling on this machine now: 1 / (echo round trip + one durable 4 KiB write, p50) = {} msg/s",
            rate(floor)
        );
    }
    let mut ratios = vec![
        (
            format!("app / echo, {} conns (msg/s)", args.connections),
            ratio(Some(app_conns), rate_of("echo", Scenario::Conns)),
        ),
        (
            "app / echo, 1 conn (msg/s)".to_owned(),
            ratio(Some(app_one), rate_of("echo", Scenario::One)),
        ),
        (
            format!("app / echo, paced {}/s: p99", args.paced_rate),
            match ratio(
                paced_p99.map(|p| p.ms()),
                find_phase(&phases, "echo", Scenario::Paced).map(|p| p.outcome.latency.p99.ms()),
            ) {
                r if r != "-" && paced_p99.is_some_and(|p| !p.is_finished()) => format!("> {r}"),
                r => r,
            },
        ),
        (
            format!(
                "app / app with workers off, {} conns (msg/s)",
                args.connections
            ),
            ratio(Some(app_conns), rate_of(APP_WORKERS_OFF, Scenario::Conns)),
        ),
        (
            "app / app with workers off, 1 conn (msg/s)".to_owned(),
            ratio(Some(app_one), rate_of(APP_WORKERS_OFF, Scenario::One)),
        ),
        (
            "app 1 conn / raw SQLite 1 row per transaction (msg/s ÷ rows/s)".to_owned(),
            ratio(Some(app_one), raw_rate(1)),
        ),
        (
            "app 1 conn / one connection's ceiling (echo round trip + one durable 4 KiB write)"
                .to_owned(),
            ratio(Some(app_one), floor_one),
        ),
        (
            format!(
                "app {} conns / raw SQLite 8 rows per transaction",
                args.connections
            ),
            ratio(Some(app_conns), raw_rate(8)),
        ),
        (
            format!(
                "app {} conns / raw SQLite 512 rows per transaction",
                args.connections
            ),
            ratio(Some(app_conns), raw_rate(512)),
        ),
    ];
    ratios.retain(|(_, r)| r != "-");
    let summary = format!(
        "{} conns: {} msg/s (goal ≥ {}: {}); 1 conn: {} msg/s (goal ≥ {}: {}); paced {}/s: ACK p99 {} from the due time (goal ≤ {} ms at {}/s: {})",
        args.connections,
        rate(app_conns),
        grouped(GOAL_CONNS_RATE as u64),
        pass(pass_conns && args.connections == 8),
        rate(app_one),
        grouped(GOAL_ONE_RATE as u64),
        pass(pass_one),
        args.paced_rate,
        paced_p99.map_or("-".into(), |p| p.to_string()),
        GOAL_P99_MS,
        grouped(GOAL_PACED_RATE as u64),
        pass(pass_p99),
    );
    println!("   {summary}");
    for (what, r) in &ratios {
        println!("   ratio {what}: {r}");
    }

    // The record.
    let mut md = format!(
        "## HL7 over MLLP (sqlite{}{})\n\n\
         The real app (`rapport::launch_all`, MLLP on, workers {}, {}), one organisation, no \
         interface; a fresh database per scenario. Messages: SIU^S12, {} bytes, a distinct \
         MSH-10 and SCH-2 each. Load: {} client thread(s) in this process, loopback, each \
         connection one message at a time; warm-up {} s before each run. Closed loops run \
         {} s; the paced run {} s, latency from each message's due time (no coordinated \
         omission). \"app, workers off\": the same app with its workers (the HL7 applier \
         among them) off, ingest alone. Echo: a bare tokio MLLP server answering a fixed AA \
         at once. Raw: sqlx into `hl7_messages` on the store's writer connection (same \
         pragmas), database time only. CPU ms/msg: this process's CPU time (server, applier \
         and load generator) per accepted message.\n\n\
         Run {} (git {}). Machine: {}.\n\n\
         | server | scenario | acked | msg/s | p50 | p99 | p99.9 | max | CPU ms/msg | others' CPU | problems |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
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
        durability,
        sample_len,
        args.loader_threads,
        args.warmup_seconds,
        args.seconds,
        args.paced_seconds(),
        report::now(),
        report::git_revision(),
        report::machine_line(&load_start),
    );
    for p in &phases {
        let o = &p.outcome;
        let l = &o.latency;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.0}% | {} |\n",
            p.server,
            p.mode,
            grouped(o.ok),
            rate(o.rate()),
            l.p50,
            l.p99,
            l.p999,
            l.max,
            p.cpu.ms_per(o.ok as usize),
            p.cpu.others_share() * 100.0,
            o.problems(),
        ));
    }
    for p in &phases {
        if let Some(s) = &p.outcome.from_send {
            md.push_str(&format!(
                "\n{} paced, from the actual send instead of the due time: p50 {}, p99 {}, max {}.",
                p.server, s.p50, s.p99, s.max
            ));
        }
    }
    md.push('\n');
    if !raws.is_empty() {
        md.push_str(
            "\n| raw SQLite | rows | transactions | rows/s | commit p50 | commit p99 |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for r in &raws {
            md.push_str(&format!(
                "| {} rows per transaction | {} | {} | {} | {} | {} |\n",
                r.batch,
                grouped(r.rows as u64),
                grouped(r.transactions as u64),
                rate(r.rows_per_s()),
                r.commit_ms.p50,
                r.commit_ms.p99
            ));
        }
    }
    md.push_str(&format!("\n{summary}.\n\n"));
    for (what, r) in &ratios {
        md.push_str(&format!("- {what}: {r}\n"));
    }
    for p in &phases {
        if let Some(note) = &p.note {
            md.push_str(&format!("- {}, {}: {note}\n", p.server, p.mode));
        }
    }
    md.push_str("\nOne message's parts, timed alone:\n\n| part | mean ms |\n|---|---:|\n");
    for (what, ms) in &parts {
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
            "mllp-sqlite{}{}{}",
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
        "bench": "mllp",
        "label": args.label,
        "at": report::now(),
        "git": report::git_revision(),
        "backend": "sqlite",
        "durability": durability,
        "workers": !args.no_workers,
        "connections": args.connections,
        "message_bytes": sample_len,
        "phases": phases.iter().map(|p| json!({
            "server": p.server,
            "mode": p.mode,
            "outcome": p.outcome.json(),
            "cpu": p.cpu.json(p.outcome.ok as usize),
            "store": p.store_json,
        })).collect::<Vec<_>>(),
        "raw": raws.iter().map(|r| json!({
            "rows_per_txn": r.batch,
            "rows": r.rows,
            "transactions": r.transactions,
            "db_secs": round3(r.db_secs),
            "rows_per_s": round1(r.rows_per_s()),
            "commit": r.commit_ms.json(),
        })).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(|(k, v)| json!({"what": k, "ratio": v})).collect::<Vec<_>>(),
        "pass_conns": pass_conns,
        "pass_one": pass_one,
        "pass_p99": pass_p99,
        "breakdown_ms": parts.iter().map(|(k, v)| json!({"part": k, "mean_ms": round3(*v)})).collect::<Vec<_>>(),
        "machine": report::machine(&load_start),
    }))?;
    println!("   results: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_is_read_from_its_msa_segment() {
        let ack = b"MSH|^~\\&|RAPPORT|RAPPORT|EPIC|NORTH|20261125193731+0000||ACK^S12^ACK|RMWWIZHGMSA|P|2.5\rMSA|AA|AO000001019\r";
        assert!(accepted(ack));
        let refused = b"MSH|^~\\&|R|R|E|N|20261125||ACK^S12^ACK|RMSA|P|2.5\rMSA|AR|X1\rERR|||207\r";
        assert!(!accepted(refused));
    }

    #[test]
    fn every_message_is_distinct_and_taken_as_a_booking() {
        let maker = Gen::new("AM", 2_000);
        let mut a = Vec::new();
        let mut b = Vec::new();
        maker.message(1, &mut a);
        maker.message(2, &mut b);
        assert_ne!(a, b);
        let mut buf = Vec::new();
        let r = row(&maker, 7, &mut buf).expect("mapped without refusal");
        assert_eq!(r.control_id, "AM000000007");
        assert!(r.ack.contains("\rMSA|AA|AM000000007"), "{}", r.ack);
        assert!((1_000..3_000).contains(&r.raw.len()));
    }
}
