#![forbid(unsafe_code)]
//! `store-bench`: generates N realistic patients, then
//!
//! 1. the baseline: writes the very rows the store would (all four tables), computed
//!    before the clock starts, into a fresh database with plain batched INSERTs;
//! 2. the store: inserts the same patients into another fresh database through
//!    `PatientStore::insert_patients`, in batches of the same size;
//! 3. makes the store's writes durable (fsync, or CHECKPOINT), then times searches by
//!    phone and by name prefix through `PatientStore::search_patients` on the store's
//!    database, which it leaves in place (for `bench/serve.sh`).
//!
//! The baseline runs first and its database is dropped before the store's run, so that
//! neither run shares the machine with what the other leaves behind. Results are printed
//! and appended as one JSON line to `<target>/bench/results.jsonl`.

mod baseline;
mod generate;
mod stats;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use domain::{OrgId, Patient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool};
use stats::{Latency, grouped, round3};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use store::{PageRequest, PatientQuery, Store};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The goals the issue sets: at least half the baseline's rate, and p99 within 5 ms.
const RATIO_GOAL: f64 = 0.5;
const SEARCH_P99_GOAL_MS: f64 = 5.0;
/// Rows per page in the searches, the API's default.
const PAGE: u32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Baseline,
    Store,
}

#[derive(Debug, Parser)]
#[command(
    name = "store-bench",
    about = "Inserts patients through Rapport's store and through plain batched SQL (the baseline), then times searches."
)]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum)]
    backend: Backend,
    /// The store's database. Default: a fresh <target>/bench/store-<N>.db, or a fresh
    /// database rapport_bench_store_<N> on the server of RAPPORT_BENCH_POSTGRES_URL
    /// (default postgres://postgres@127.0.0.1:5432/test). A database named here must hold
    /// no patients. The baseline always gets a fresh database beside it.
    #[arg(long)]
    url: Option<String>,
    /// Patients to insert.
    #[arg(long, default_value_t = 1_000_000)]
    patients: usize,
    /// Patients per `insert_patients` call (and per baseline transaction).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Timed searches of each kind.
    #[arg(long, default_value_t = 2_000)]
    searches: usize,
    /// Searches of each kind run first and not counted.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Seed of the generated patients and of the searches' choices.
    #[arg(long, default_value_t = 20_261_125)]
    seed: u64,
    /// Skip the inserts and search the store database an earlier run (same --patients
    /// and --seed) left.
    #[arg(long)]
    search_only: bool,
    /// Diagnostics: run only this insert phase (for a profiler), no searches, no results.
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// Run ANALYZE on the store's database before searching (the app itself never does).
    #[arg(long)]
    analyze: bool,
    /// Keep the baseline's database instead of dropping it.
    #[arg(long)]
    keep_baseline: bool,
    /// Where results.jsonl and the SQLite databases go (default: <target>/bench).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// Where each run's database is.
struct Databases {
    store_url: String,
    baseline_url: String,
    /// For SQLite, the files to remove with the baseline; for PostgreSQL, the server URL
    /// and database name to drop.
    baseline_drop: Drop,
}

enum Drop {
    Files(PathBuf),
    Database { server: String, name: String },
}

/// A connection pool of either backend, for what the store does not offer.
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Raw {
    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Raw::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ())?,
            Raw::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        })
    }

    /// Rows in patients, patient_identifiers, patient_phones and patient_name_keys.
    async fn counts(&self) -> anyhow::Result<[i64; 4]> {
        let mut out = [0; 4];
        for (slot, table) in out.iter_mut().zip(TABLES) {
            *slot = self
                .scalar(&format!("SELECT count(*) FROM {table}"))
                .await?;
        }
        Ok(out)
    }

    async fn size_bytes(&self) -> anyhow::Result<i64> {
        match self {
            Raw::Sqlite(_) => {
                self.scalar(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .await
            }
            Raw::Postgres(_) => {
                self.scalar("SELECT pg_database_size(current_database())")
                    .await
            }
        }
    }

    /// Starts a timed run from a clean slate: PostgreSQL writes out its dirty buffers now
    /// rather than in the middle of the next run.
    async fn settle(&self) {
        if let Raw::Postgres(_) = self {
            let _ = self.execute("CHECKPOINT").await;
        }
    }
}

const TABLES: [&str; 4] = [
    "patients",
    "patient_identifiers",
    "patient_phones",
    "patient_name_keys",
];

async fn open(backend: Backend, url: &str) -> anyhow::Result<(Arc<dyn Store>, Raw)> {
    Ok(match backend {
        Backend::Sqlite => {
            let s = store_sqlite::SqliteStore::connect(url)
                .await
                .with_context(|| format!("opening {url}"))?;
            let raw = Raw::Sqlite(s.writer_pool().clone());
            (Arc::new(s), raw)
        }
        Backend::Postgres => {
            let s = store_postgres::PostgresStore::connect(url)
                .await
                .with_context(|| format!("connecting to {}", redact(url)))?;
            let raw = Raw::Postgres(s.pool().clone());
            (Arc::new(s), raw)
        }
    })
}

/// Migrates a database and adds the organisation; refuses one that already has patients.
async fn prepare_database(
    backend: Backend,
    url: &str,
    org: &domain::Organization,
) -> anyhow::Result<(Arc<dyn Store>, Raw)> {
    let (store, raw) = open(backend, url).await?;
    store.migrate().await.context("migrating")?;
    let existing = raw.scalar("SELECT count(*) FROM patients").await?;
    if existing > 0 {
        bail!(
            "{} already holds {existing} patients; give an empty database or omit --url",
            redact(url)
        );
    }
    store
        .insert_organization(org)
        .await
        .context("adding the benchmark's organisation")?;
    Ok((store, raw))
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat (Linux).
fn cpu_secs_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds used so far by this process and by all PostgreSQL server processes on this
/// machine (which includes whatever else the server is doing).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    bench: f64,
    postgres: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let mut postgres = 0.0;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "postgres" {
                    postgres += cpu_secs_of(pid).unwrap_or(0.0);
                }
            }
        }
        Cpu {
            bench: cpu_secs_of("self").unwrap_or(0.0),
            postgres,
        }
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            bench: self.bench - start.bench,
            // Server processes that exit meanwhile take their CPU time with them.
            postgres: (self.postgres - start.postgres).max(0.0),
        }
    }

    fn total(&self) -> f64 {
        self.bench + self.postgres
    }
}

/// A timed insert run.
struct Run {
    secs: f64,
    cpu: Cpu,
    patients: usize,
    rows: usize,
}

impl Run {
    fn patients_per_s(&self) -> f64 {
        self.patients as f64 / self.secs
    }

    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.secs
    }

    fn json(&self) -> Value {
        json!({
            "secs": round3(self.secs),
            "patients": self.patients,
            "rows": self.rows,
            "patients_per_s": self.patients_per_s().round(),
            "rows_per_s": self.rows_per_s().round(),
            "cpu_secs_bench": round3(self.cpu.bench),
            "cpu_secs_postgres": round3(self.cpu.postgres),
        })
    }

    fn line(&self, what: &str, backend: Backend) -> String {
        let cpu = match backend {
            Backend::Sqlite => format!("CPU {:.1} s", self.cpu.bench),
            Backend::Postgres => format!(
                "CPU {:.1} s here + {:.1} s in postgres",
                self.cpu.bench, self.cpu.postgres
            ),
        };
        format!(
            "{what:<36} {} patients in {:.1} s = {:>9} patients/s ({} table rows/s; {cpu})",
            grouped(self.patients as u64),
            self.secs,
            grouped(self.patients_per_s() as u64),
            grouped(self.rows_per_s() as u64),
        )
    }
}

/// Prints how far a long run has got, every tenth.
struct Progress {
    what: &'static str,
    total: usize,
    next: usize,
    start: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            total,
            next: total.div_ceil(10),
            start: Instant::now(),
        }
    }

    fn at(&mut self, done: usize) {
        if done >= self.next && done < self.total {
            eprintln!(
                "    {}: {} / {} patients, {:.1} s",
                self.what,
                grouped(done as u64),
                grouped(self.total as u64),
                self.start.elapsed().as_secs_f64()
            );
            self.next += self.total.div_ceil(10);
        }
    }
}

async fn run_baseline(
    backend: Backend,
    url: &str,
    data: &generate::DataSet,
    batch: usize,
) -> anyhow::Result<(Run, [i64; 4], f64)> {
    let (store, raw) = prepare_database(backend, url, &data.org).await?;
    let n = data.patients.len();
    // The rows are computed before the clock starts; how long that takes is roughly the
    // domain logic the store adds (documents, name keys, conversions).
    let prepared;
    let (elapsed, cpu, rows) = match &raw {
        Raw::Sqlite(pool) => {
            let prepare = Instant::now();
            let batches = baseline::prepare_sqlite(&data.patients, batch);
            prepared = prepare.elapsed().as_secs_f64();
            let rows = batches.iter().map(baseline::Batch::rows).sum();
            raw.settle().await;
            let mut progress = Progress::new("baseline", n);
            let (mut done, cpu, start) = (0, Cpu::now(), Instant::now());
            for b in &batches {
                baseline::insert_sqlite(pool, b).await?;
                done += b.patients();
                progress.at(done);
            }
            (start.elapsed(), Cpu::now().since(cpu), rows)
        }
        Raw::Postgres(pool) => {
            let prepare = Instant::now();
            let batches = baseline::prepare_pg(&data.patients, batch);
            prepared = prepare.elapsed().as_secs_f64();
            let rows = batches.iter().map(baseline::Batch::rows).sum();
            raw.settle().await;
            let mut progress = Progress::new("baseline", n);
            let (mut done, cpu, start) = (0, Cpu::now(), Instant::now());
            for b in &batches {
                baseline::insert_pg(pool, b).await?;
                done += b.patients();
                progress.at(done);
            }
            (start.elapsed(), Cpu::now().since(cpu), rows)
        }
    };
    let counts = raw.counts().await?;
    store.close().await;
    Ok((
        Run {
            secs: elapsed.as_secs_f64(),
            cpu,
            patients: n,
            rows,
        },
        counts,
        prepared,
    ))
}

async fn run_store(
    backend: Backend,
    url: &str,
    data: &generate::DataSet,
    batch: usize,
    rows: usize,
) -> anyhow::Result<(Run, [i64; 4], i64)> {
    let (store, raw) = prepare_database(backend, url, &data.org).await?;
    let n = data.patients.len();
    raw.settle().await;
    let mut progress = Progress::new("store", n);
    let (mut done, cpu, start) = (0, Cpu::now(), Instant::now());
    for chunk in data.patients.chunks(batch) {
        store
            .insert_patients(chunk)
            .await
            .context("insert_patients")?;
        done += chunk.len();
        progress.at(done);
    }
    let elapsed = start.elapsed();
    let cpu = Cpu::now().since(cpu);
    let counts = raw.counts().await?;
    let size = raw.size_bytes().await?;
    store.close().await;
    Ok((
        Run {
            secs: elapsed.as_secs_f64(),
            cpu,
            patients: n,
            rows,
        },
        counts,
        size,
    ))
}

struct Searches {
    phone: Latency,
    /// The warm-up searches, timed apart: they include each new connection's first
    /// executions, which a database without statistics may plan very differently.
    phone_warmup: Option<Latency>,
    phone_misses: usize,
    name: Latency,
    name_warmup: Option<Latency>,
    name_short_pages: usize,
    name_wrong: usize,
    name_rows: usize,
    /// The slowest name searches, each timed again: intrinsic cost, or a hiccup?
    name_slowest: Vec<Retimed>,
    /// Prefixes searched at least 5 times, highest median first.
    name_prefixes: Vec<(String, usize, f64)>,
}

struct Retimed {
    prefix: String,
    ms: f64,
    again_median_ms: f64,
    again_max_ms: f64,
}

/// Times `query` `times` more times; the median and the maximum, in ms.
async fn retime(
    store: &dyn Store,
    org: OrgId,
    query: &PatientQuery,
    times: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(times);
    for _ in 0..times {
        let start = Instant::now();
        store
            .search_patients(org, query, &PageRequest::first(PAGE))
            .await?;
        samples.push(start.elapsed());
    }
    let l = Latency::of(&samples);
    Ok((l.p50_ms, l.max_ms))
}

/// Searches one at a time, as a person at a front desk does: by a random patient's phone,
/// and by the first three letters of a random patient's family name.
async fn run_searches(
    store: &dyn Store,
    org: OrgId,
    patients: &[Patient],
    args: &Args,
) -> anyhow::Result<Searches> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5EA2_C4E5);
    let total = args.warmup + args.searches;
    let page = PageRequest::first(PAGE);

    let mut phone = Vec::with_capacity(args.searches);
    let mut phone_warmup = Vec::with_capacity(args.warmup);
    let mut phone_misses = 0;
    for k in 0..total {
        let p = &patients[rng.random_range(0..patients.len())];
        let query = PatientQuery {
            phone: p.phones[0].e164.clone(),
            ..Default::default()
        };
        let start = Instant::now();
        let found = store.search_patients(org, &query, &page).await?;
        let took = start.elapsed();
        if !found.items.iter().any(|x| x.id == p.id) {
            phone_misses += 1;
        }
        if k >= args.warmup {
            phone.push(took);
        } else {
            phone_warmup.push(took);
        }
    }

    let mut name = Vec::with_capacity(args.searches);
    let mut name_prefix = Vec::with_capacity(args.searches);
    let mut name_warmup = Vec::with_capacity(args.warmup);
    let (mut short, mut wrong, mut rows) = (0, 0, 0);
    let mut k = 0;
    while k < total {
        let p = &patients[rng.random_range(0..patients.len())];
        let Some(prefix) = generate::family_prefix(p) else {
            continue;
        };
        let query = PatientQuery {
            name: Some(prefix.clone()),
            ..Default::default()
        };
        let start = Instant::now();
        let found = store.search_patients(org, &query, &page).await?;
        let took = start.elapsed();
        if found.items.len() < PAGE as usize {
            short += 1;
        }
        wrong += found
            .items
            .iter()
            .filter(|x| !x.name_keys().iter().any(|key| key.starts_with(&prefix)))
            .count();
        if k >= args.warmup {
            name.push(took);
            name_prefix.push(prefix);
            rows += found.items.len();
        } else {
            name_warmup.push(took);
        }
        k += 1;
    }

    let mut order: Vec<usize> = (0..name.len()).collect();
    order.sort_by(|&a, &b| name[b].cmp(&name[a]));
    let mut name_slowest = Vec::new();
    for &i in order.iter().take(5) {
        let query = PatientQuery {
            name: Some(name_prefix[i].clone()),
            ..Default::default()
        };
        let (again_median_ms, again_max_ms) = retime(store, org, &query, 11).await?;
        name_slowest.push(Retimed {
            prefix: name_prefix[i].clone(),
            ms: name[i].as_secs_f64() * 1000.0,
            again_median_ms,
            again_max_ms,
        });
    }
    let mut by_prefix: std::collections::BTreeMap<&str, Vec<std::time::Duration>> =
        Default::default();
    for (prefix, took) in name_prefix.iter().zip(&name) {
        by_prefix.entry(prefix).or_default().push(*took);
    }
    let mut name_prefixes: Vec<(String, usize, f64)> = by_prefix
        .into_iter()
        .filter(|(_, samples)| samples.len() >= 5)
        .map(|(prefix, samples)| {
            (
                prefix.to_owned(),
                samples.len(),
                Latency::of(&samples).p50_ms,
            )
        })
        .collect();
    name_prefixes.sort_by(|a, b| b.2.total_cmp(&a.2));
    let warm =
        |samples: &[std::time::Duration]| (!samples.is_empty()).then(|| Latency::of(samples));
    Ok(Searches {
        phone: Latency::of(&phone),
        phone_warmup: warm(&phone_warmup),
        phone_misses,
        name: Latency::of(&name),
        name_warmup: warm(&name_warmup),
        name_short_pages: short,
        name_wrong: wrong,
        name_rows: rows,
        name_slowest,
        name_prefixes,
    })
}

/// Makes the store's writes durable now: fsync of the SQLite files, or a PostgreSQL
/// CHECKPOINT (which writes and syncs every dirty buffer).
async fn flush(backend: Backend, url: &str, raw: &Raw) -> anyhow::Result<()> {
    match backend {
        Backend::Sqlite => {
            let path = sqlite_path(url)?;
            for suffix in ["", "-wal"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                if let Ok(f) = std::fs::File::open(&file) {
                    f.sync_all()?;
                }
            }
        }
        Backend::Postgres => raw.execute("CHECKPOINT").await?,
    }
    Ok(())
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// `<target>/bench`: CARGO_TARGET_DIR when set, else the workspace's `target`.
fn default_out_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("bench"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"),
    }
}

fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("a SQLite URL starts with sqlite://")?;
    Ok(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

fn remove_sqlite_files(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", Path::new(&file).display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `url` with its database (path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn database_of(url: &str) -> anyhow::Result<String> {
    let base = url.split('?').next().unwrap_or(url);
    let authority = base.find("://").map_or(0, |i| i + 3);
    match base[authority..].split_once('/') {
        Some((_, db)) if !db.is_empty() => Ok(db.to_owned()),
        _ => bail!("the PostgreSQL URL names no database"),
    }
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn fresh_pg_database(server: &str, name: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .with_context(|| format!("connecting to {}", redact(server)))?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(with_database(server, name))
}

async fn drop_pg_database(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

impl Databases {
    /// Works out (and, unless only searching, makes fresh) the two databases.
    async fn resolve(args: &Args, out_dir: &Path, label: &str) -> anyhow::Result<Databases> {
        match args.backend {
            Backend::Sqlite => {
                let store = match &args.url {
                    Some(url) => sqlite_path(url)?,
                    None => {
                        let path = out_dir.join(format!("store-{label}.db"));
                        if !args.search_only {
                            remove_sqlite_files(&path)?;
                        }
                        path
                    }
                };
                if args.search_only && !store.exists() {
                    bail!(
                        "{} does not exist: run without --search-only first",
                        store.display()
                    );
                }
                let stem = store
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("store");
                let baseline = store.with_file_name(format!("{stem}-baseline.db"));
                if !args.search_only {
                    remove_sqlite_files(&baseline)?;
                }
                Ok(Databases {
                    store_url: format!("sqlite://{}", store.display()),
                    baseline_url: format!("sqlite://{}", baseline.display()),
                    baseline_drop: Drop::Files(baseline),
                })
            }
            Backend::Postgres => {
                let (server, store_url, store_db) = match &args.url {
                    Some(url) => (url.clone(), url.clone(), database_of(url)?),
                    None => {
                        let server = std::env::var("RAPPORT_BENCH_POSTGRES_URL")
                            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                        let name = format!("rapport_bench_store_{label}");
                        let url = if args.search_only {
                            with_database(&server, &name)
                        } else {
                            fresh_pg_database(&server, &name).await?
                        };
                        (server, url, name)
                    }
                };
                let name = if args.url.is_some() {
                    format!("{store_db}_baseline")
                } else {
                    format!("rapport_bench_baseline_{label}")
                };
                let baseline_url = if args.search_only {
                    with_database(&server, &name)
                } else {
                    fresh_pg_database(&server, &name).await?
                };
                Ok(Databases {
                    store_url,
                    baseline_url,
                    baseline_drop: Drop::Database { server, name },
                })
            }
        }
    }

    async fn drop_baseline(&self) -> anyhow::Result<()> {
        match &self.baseline_drop {
            Drop::Files(path) => remove_sqlite_files(path),
            Drop::Database { server, name } => drop_pg_database(server, name).await,
        }
    }
}

fn read_first_line(path: &str, prefix: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| {
            l[prefix.len()..]
                .trim()
                .trim_start_matches(':')
                .trim()
                .to_owned()
        })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.patients == 0 || args.batch == 0 || args.searches == 0 {
        bail!("--patients, --batch and --searches must be at least 1");
    }
    let out_dir = args.out_dir.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize()?;
    let label = label(args.patients);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = read_first_line("/proc/meminfo", "MemTotal").unwrap_or_default();
    let cpu_model = read_first_line("/proc/cpuinfo", "model name").unwrap_or_default();
    let load_start = loadavg();
    println!(
        "store-bench: {}, {} patients, batches of {}, seed {}",
        args.backend.name(),
        grouped(args.patients as u64),
        grouped(args.batch as u64),
        args.seed
    );
    println!("  machine: {cpus} CPUs ({cpu_model}), memory {memory}, load {load_start}");

    let start = Instant::now();
    let data = generate::generate(args.patients, args.seed)?;
    generate::check(&data)?;
    let generated = start.elapsed().as_secs_f64();
    let index_rows: usize = data.patients.iter().map(generate::index_rows).sum();
    let rows = args.patients + index_rows;
    let per_patient = index_rows as f64 / args.patients as f64;
    println!(
        "  generated in {generated:.1} s (not timed): {per_patient:.2} index rows per patient, {} rows in all",
        grouped(rows as u64)
    );

    let dbs = Databases::resolve(&args, &out_dir, &label).await?;
    let mut insert_json = Value::Null;
    let mut store_size = None;
    let mut inserts_pass = true;
    if let Some(phase) = args.only {
        match phase {
            Phase::Baseline => {
                let (base, _, prepared) =
                    run_baseline(args.backend, &dbs.baseline_url, &data, args.batch).await?;
                println!("  baseline rows computed in {prepared:.1} s");
                println!(
                    "{}",
                    base.line("  baseline (plain batched INSERTs):", args.backend)
                );
                if !args.keep_baseline {
                    dbs.drop_baseline().await?;
                }
            }
            Phase::Store => {
                let (run, _, _) =
                    run_store(args.backend, &dbs.store_url, &data, args.batch, rows).await?;
                println!("{}", run.line("  store (insert_patients):", args.backend));
            }
        }
        println!("  (--only: one phase, no searches, nothing appended to results.jsonl)");
        return Ok(());
    }
    if !args.search_only {
        let (base, base_counts, prepared) =
            run_baseline(args.backend, &dbs.baseline_url, &data, args.batch).await?;
        println!(
            "  baseline rows computed in {prepared:.1} s before its clock started (documents, name keys, conversions)"
        );
        println!(
            "{}",
            base.line("  baseline (plain batched INSERTs):", args.backend)
        );
        if !args.keep_baseline {
            dbs.drop_baseline().await?;
        }
        let (run, counts, size) =
            run_store(args.backend, &dbs.store_url, &data, args.batch, rows).await?;
        println!("{}", run.line("  store (insert_patients):", args.backend));
        if counts != base_counts {
            bail!("the store wrote {counts:?} rows per table, the baseline {base_counts:?}");
        }
        if counts.iter().sum::<i64>() as usize != rows {
            bail!("expected {rows} rows in all, found {counts:?}");
        }
        let ratio = run.rows_per_s() / base.rows_per_s();
        // The same ratio in CPU time, which other load on the machine disturbs much less.
        let cpu_ratio = base.cpu.total() / run.cpu.total();
        inserts_pass = ratio >= RATIO_GOAL;
        println!(
            "  ratio store/baseline: {ratio:.2} (goal >= {RATIO_GOAL}: {}); in CPU time {cpu_ratio:.2}; rows per table {counts:?}",
            verdict(inserts_pass)
        );
        store_size = Some(size);
        insert_json = json!({
            "baseline": base.json(),
            "store": run.json(),
            "ratio": round3(ratio),
            "cpu_ratio": round3(cpu_ratio),
            "baseline_prepare_secs": round3(prepared),
            "goal": RATIO_GOAL,
            "pass": inserts_pass,
            "rows_per_table": counts,
        });
    }

    let (store, raw) = open(args.backend, &dbs.store_url).await?;
    // As `rapport serve` does: a database left by an older build gets the newer migrations.
    store.migrate().await.context("migrating")?;
    let present = raw.scalar("SELECT count(*) FROM patients").await?;
    if present as usize != args.patients {
        bail!(
            "the store database holds {present} patients, not {}: run without --search-only first",
            args.patients
        );
    }
    match store.organization(data.org.id).await {
        Err(store::StoreError::NotFound) => {
            bail!("the store database was filled with another --seed")
        }
        other => {
            other.context("reading the benchmark's organisation")?;
        }
    }
    // Search a database at rest, not one the kernel is still writing out after the import.
    flush(args.backend, &dbs.store_url, &raw).await?;
    if args.analyze {
        raw.execute("ANALYZE").await?;
        println!("  ANALYZE run on the store database");
    }
    let size = match store_size {
        Some(s) => s,
        None => raw.size_bytes().await?,
    };
    let searches = run_searches(&*store, data.org.id, &data.patients, &args).await?;
    store.close().await;
    let phone_pass = searches.phone.p99_ms <= SEARCH_P99_GOAL_MS && searches.phone_misses == 0;
    let name_pass = searches.name.p99_ms <= SEARCH_P99_GOAL_MS;
    for (what, l, warm, pass) in [
        (
            "by phone",
            &searches.phone,
            &searches.phone_warmup,
            phone_pass,
        ),
        (
            "by name prefix",
            &searches.name,
            &searches.name_warmup,
            name_pass,
        ),
    ] {
        println!(
            "  search {what:<15} ({} timed after {} warm-up): p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (goal p99 <= {SEARCH_P99_GOAL_MS} ms: {})",
            l.n,
            args.warmup,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms,
            verdict(pass)
        );
        if let Some(w) = warm {
            println!(
                "         {:<15} the {} warm-up searches (fresh connections): p50 {:.3} ms, max {:.3} ms",
                "", w.n, w.p50_ms, w.max_ms
            );
        }
    }
    println!(
        "  checks: {} phone searches missed their patient; {} name pages held fewer than {PAGE} rows, {} rows did not match their prefix",
        searches.phone_misses, searches.name_short_pages, searches.name_wrong
    );
    println!(
        "  slowest name searches, then the same search timed 11 more times (median / max): {}",
        searches
            .name_slowest
            .iter()
            .map(|r| format!(
                "'{}' {:.2} ms ({:.2} / {:.2})",
                r.prefix, r.ms, r.again_median_ms, r.again_max_ms
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  prefixes with the highest median latency (searches, median): {}",
        searches
            .name_prefixes
            .iter()
            .take(5)
            .map(|(p, n, ms)| format!("'{p}' {n}x {ms:.2} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  store database kept: {} ({} MB)",
        redact(&dbs.store_url),
        size / 1_000_000
    );
    let load_end = loadavg();
    let result = json!({
        "bench": "store",
        "at": jiff::Timestamp::now().to_string(),
        "git": git_revision(),
        "backend": args.backend.name(),
        "patients": args.patients,
        "batch": args.batch,
        "seed": args.seed,
        "machine": {
            "cpus": cpus,
            "cpu": cpu_model,
            "memory": memory,
            "load_start": load_start,
            "load_end": load_end,
        },
        "generate_secs": round3(generated),
        "rejected_phones": data.rejected_phones,
        "index_rows_per_patient": round3(per_patient),
        "insert": insert_json,
        "analyzed": args.analyze,
        "search": {
            "page": PAGE,
            "warmup": args.warmup,
            "phone": searches.phone.json(),
            "phone_warmup": searches.phone_warmup.map(|l| l.json()),
            "name_prefix_warmup": searches.name_warmup.map(|l| l.json()),
            "phone_misses": searches.phone_misses,
            "name_prefix": searches.name.json(),
            "name_prefix_rows_mean": round3(searches.name_rows as f64 / searches.name.n as f64),
            "name_prefix_slowest": searches.name_slowest.iter().map(|r| json!({
                "prefix": r.prefix,
                "ms": round3(r.ms),
                "again_median_ms": round3(r.again_median_ms),
                "again_max_ms": round3(r.again_max_ms),
            })).collect::<Vec<_>>(),
            "name_prefix_highest_medians": searches.name_prefixes.iter().take(10).map(|(p, n, ms)| json!({
                "prefix": p, "n": n, "p50_ms": round3(*ms),
            })).collect::<Vec<_>>(),
            "goal_p99_ms": SEARCH_P99_GOAL_MS,
            "pass": phone_pass && name_pass,
        },
        "store_db": { "url": redact(&dbs.store_url), "bytes": size },
    });
    let results = out_dir.join("results.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results)
        .with_context(|| format!("opening {}", results.display()))?;
    writeln!(file, "{result}")?;
    println!(
        "  load at the end {load_end}; results appended to {}",
        results.display()
    );
    if !(inserts_pass && phone_pass && name_pass) {
        println!("  one or more goals were missed (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten_and_passwords_hidden() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=disable", "b"),
            "postgres://u:p@h:5432/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b"), "postgres://h/b");
        assert_eq!(database_of("postgres://h:1/db?x=1").unwrap(), "db");
        assert!(database_of("postgres://h:1").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///a/b.db"), "sqlite:///a/b.db");
        assert_eq!(
            sqlite_path("sqlite:///a/b.db?mode=rwc").unwrap(),
            PathBuf::from("/a/b.db")
        );
        assert_eq!(label(1_000_000), "1m");
        assert_eq!(label(20_000), "20k");
        assert_eq!(label(1234), "1234");
    }
}
