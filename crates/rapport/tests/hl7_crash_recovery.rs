//! `kill -9` during a 3,000-message HL7 feed: the real `rapport serve` process takes
//! SIU^S12 bookings over MLLP on four connections at once and is killed four times at
//! random moments, then restarted. Each connection behaves like an interface engine: one
//! exchange at a time, and a message whose ACK did not arrive (the connection broke) is
//! sent again, byte for byte, until it gets one. Afterwards every message that got an
//! `AA` is in the HL7 log exactly once, applied, with the reply the sender got, and every
//! booking is exactly one appointment. Runs on SQLite (with its HL7 journal), and on
//! PostgreSQL when RAPPORT_TEST_POSTGRES_URL is set.

use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{AppStore, Hl7MessageQuery, Hl7State, PageRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod serve_process;
use serve_process::{Server, free_port};

const MESSAGES: usize = 3_000;
const CONNECTIONS: usize = 4;
const PATIENTS: usize = 300;
const KILLS: usize = 4;
/// How long a sender waits for an ACK before it counts the exchange as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the whole feed may take, kills and restarts included.
const SEND_DEADLINE: Duration = Duration::from_secs(120);
/// How long, after the last ACK, every message may take to be applied.
const APPLY_DEADLINE: Duration = Duration::from_secs(60);

async fn fresh_database(postgres: bool, dir: &std::path::Path) -> Option<String> {
    if !postgres {
        return Some(format!("sqlite://{}", dir.join("rapport.db").display()));
    }
    serve_process::fresh_postgres_database("rapport_hl7crash").await
}

fn control_id(i: usize) -> String {
    format!("KC{i:05}")
}

fn filler_id(i: usize) -> String {
    format!("F{i:05}")
}

fn mrn(p: usize) -> String {
    format!("KMRN{p:04}")
}

/// Booking `i`: its own MSH-10 and SCH-2, for one of [`PATIENTS`] patients.
fn siu_s12(i: usize) -> Vec<u8> {
    use jiff::ToSpan;
    let control = control_id(i);
    let filler = filler_id(i);
    let p = i % PATIENTS;
    let start = jiff::civil::date(2030, 1, 7)
        .at(8, 0, 0, 0)
        .checked_add((i as i64 * 15).minutes())
        .unwrap()
        .strftime("%Y%m%d%H%M")
        .to_string();
    let birth = jiff::civil::date(1950, 1, 1)
        .checked_add((p as i64 * 37).days())
        .unwrap()
        .strftime("%Y%m%d")
        .to_string();
    let sex = if p.is_multiple_of(2) { "F" } else { "M" };
    [
        format!(
            "MSH|^~\\&|EPIC|NORTH|RAPPORT|RAPPORT|20240101120000||SIU^S12^SIU_S12|{control}|P|2.5"
        ),
        format!(
            "SCH|P{filler}^ORDERS|{filler}^EPIC||||ROUTINE|Checkup|FOLLOWUP|30|min|^^^{start}||||||||||||||Booked"
        ),
        format!(
            "PID|1||{}^^^NORTH^MR||Kill{p}^Patient^^^^^L||{birth}|{sex}|||1 Main St^^Denver^CO^80202||^PRN^CP^^1^303^555{:04}||ENG",
            mrn(p),
            100 + p % 100
        ),
        "RGS|1".to_owned(),
        format!("AIP|1||NPI1234^Smith^John|ATT^Attending||{start}"),
    ]
    .join("\r")
    .into_bytes()
}

/// MSA-1 and MSA-2 of a reply.
fn msa(reply: &str) -> (String, String) {
    let msa = reply
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .unwrap_or_else(|| panic!("an MSA segment in {reply:?}"));
    let f: Vec<&str> = msa.split('|').collect();
    (
        f.get(1).copied().unwrap_or_default().to_owned(),
        f.get(2).copied().unwrap_or_default().to_owned(),
    )
}

/// One exchange: the framed message out, the framed reply in (its text returned).
async fn exchange(stream: &mut TcpStream, framed: &[u8]) -> std::io::Result<String> {
    stream.write_all(framed).await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the ACK",
                ));
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.ends_with(&[0x1c, 0x0d]) {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(ACK_TIMEOUT, read).await {
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no ACK in time",
            ));
        }
        Ok(r) => r?,
    }
    assert_eq!(reply[0], 0x0b, "reply framed with VT");
    Ok(String::from_utf8(reply[1..reply.len() - 2].to_vec()).expect("reply is UTF-8"))
}

/// What a sender saw of one message.
#[derive(Debug, Clone)]
struct Acked {
    /// The reply that ended its sending (an AA).
    ack: String,
    /// How many times it was sent.
    attempts: usize,
    /// When the last attempt was sent.
    last_sent: jiff::Timestamp,
}

#[derive(Default)]
struct Tally {
    /// Messages that got their AA, so far.
    accepted: AtomicUsize,
    /// Exchanges that ended without a reply (the connection broke or timed out).
    lost: AtomicUsize,
    /// Connection attempts refused (the server was down).
    refused: AtomicUsize,
    /// AR replies (could not be stored: the sender keeps the message and sends it again).
    ar: AtomicUsize,
}

/// An interface engine's connection: sends `indices` in order, one exchange at a time,
/// reconnecting and sending the same bytes again whenever a reply does not arrive.
async fn sender(
    addr: String,
    indices: Vec<usize>,
    tally: Arc<Tally>,
    acked: Arc<Mutex<HashMap<usize, Acked>>>,
) {
    let mut stream: Option<TcpStream> = None;
    for i in indices {
        let mut framed = vec![0x0b];
        framed.extend_from_slice(&siu_s12(i));
        framed.extend_from_slice(&[0x1c, 0x0d]);
        let mut attempts = 0;
        loop {
            let conn = match &mut stream {
                Some(s) => s,
                None => match TcpStream::connect(&addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        stream.insert(s)
                    }
                    Err(_) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            attempts += 1;
            let sent = jiff::Timestamp::now();
            match exchange(conn, &framed).await {
                Err(_) => {
                    tally.lost.fetch_add(1, Ordering::Relaxed);
                    stream = None;
                }
                Ok(reply) => {
                    let (code, acknowledged) = msa(&reply);
                    assert_eq!(
                        acknowledged,
                        control_id(i),
                        "MSA-2 names the message: {reply:?}"
                    );
                    match code.as_str() {
                        "AA" => {
                            acked.lock().unwrap().insert(
                                i,
                                Acked {
                                    ack: reply,
                                    attempts,
                                    last_sent: sent,
                                },
                            );
                            tally.accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        "AR" => {
                            tally.ar.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => panic!("message {i} refused: {reply:?}"),
                    }
                }
            }
        }
    }
}

/// Every row of the organisation's HL7 log.
async fn all_messages(store: &Arc<dyn AppStore>, org: domain::OrgId) -> Vec<store::Hl7Message> {
    let query = Hl7MessageQuery::default();
    let mut page = PageRequest::first(200);
    let mut out = Vec::new();
    loop {
        let got = store.search_hl7_messages(org, &query, &page).await.unwrap();
        out.extend(got.items);
        match got.next {
            Some(cursor) => page = PageRequest::after(200, cursor),
            None => return out,
        }
    }
}

async fn all_appointments(
    store: &Arc<dyn AppStore>,
    org: domain::OrgId,
) -> Vec<domain::Appointment> {
    let query = store::AppointmentQuery::default();
    let mut page = PageRequest::first(200);
    let mut out = Vec::new();
    loop {
        let got = store.search_appointments(org, &query, &page).await.unwrap();
        out.extend(got.items);
        match got.next {
            Some(cursor) => page = PageRequest::after(200, cursor),
            None => return out,
        }
    }
}

async fn all_patients(store: &Arc<dyn AppStore>, org: domain::OrgId) -> Vec<domain::Patient> {
    let query = store::PatientQuery::default();
    let mut page = PageRequest::first(200);
    let mut out = Vec::new();
    loop {
        let got = store.search_patients(org, &query, &page).await.unwrap();
        out.extend(got.items);
        match got.next {
            Some(cursor) => page = PageRequest::after(200, cursor),
            None => return out,
        }
    }
}

/// From the server's JSON log: how many starts found messages left in the HL7 journal,
/// how many messages they moved into the log, and the log's ERROR lines.
fn server_log_summary(log: &std::path::Path) -> (usize, u64, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut starts, mut moved, mut errors) = (0, 0, Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        if message.contains("left in the journal by the previous run") {
            starts += 1;
            moved += v["fields"]["messages"].as_u64().unwrap_or_default();
        }
        if v["level"] == "ERROR" {
            errors.push(line.to_owned());
        }
    }
    (starts, moved, errors)
}

async fn survives_kill_9(postgres: bool) {
    let began = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "rapport-hl7crash-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let Some(url) = fresh_database(postgres, &dir).await else {
        eprintln!("skipped: RAPPORT_TEST_POSTGRES_URL not set");
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let backend = if postgres { "postgres" } else { "sqlite" };

    // One organisation and no interface: messages are taken for it.
    let store = rapport::open_store(&url).await.unwrap();
    let org = rapport::cli::create_org(&*store, "hl7crash", "HL7 Crash Clinic", "America/Denver")
        .await
        .unwrap();

    let (http, metrics, mllp) = (free_port(), free_port(), free_port());
    let mllp_addr = format!("127.0.0.1:{mllp}");
    let public_url = format!("http://127.0.0.1:{http}");
    let key_file = dir.join("secret.key");
    let env: Vec<(String, String)> = [
        ("RAPPORT_DATABASE_URL", url.as_str()),
        ("RAPPORT_HTTP_ADDR", &format!("127.0.0.1:{http}")),
        ("RAPPORT_METRICS_ADDR", &format!("127.0.0.1:{metrics}")),
        ("RAPPORT_MLLP_ADDR", &mllp_addr),
        ("RAPPORT_PUBLIC_URL", &public_url),
        ("RAPPORT_SECRET_KEY_FILE", key_file.to_str().unwrap()),
        ("RAPPORT_LOG_FORMAT", "json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let server_log = dir.join("server.log");
    let mut server = Server::new(env, Some(server_log.clone()));
    server.start();

    let tally = Arc::new(Tally::default());
    let acked: Arc<Mutex<HashMap<usize, Acked>>> = Arc::default();
    let sent_from = Instant::now();
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let indices = (0..MESSAGES).filter(|i| i % CONNECTIONS == c).collect();
            tokio::spawn(sender(
                mllp_addr.clone(),
                indices,
                tally.clone(),
                acked.clone(),
            ))
        })
        .collect();

    // Kill at random moments while the messages flow: after a random number of further
    // ACKs, then a random fraction of an exchange later.
    let mut rng = rand::rngs::StdRng::seed_from_u64(if postgres { 22 } else { 21 });
    let mut accepted_at_kill = Vec::new();
    for _ in 0..KILLS {
        let target = tally.accepted.load(Ordering::Relaxed) + rng.random_range(150..550);
        let waited = Instant::now();
        while tally.accepted.load(Ordering::Relaxed) < target {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "the feed stalled at {} ACKs (server log: {})",
                tally.accepted.load(Ordering::Relaxed),
                server_log.display()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let jitter = rng.random_range(0..2000);
        tokio::time::sleep(Duration::from_micros(jitter)).await;
        server.kill9();
        accepted_at_kill.push(tally.accepted.load(Ordering::Relaxed));
        server.start();
    }
    for s in senders {
        tokio::time::timeout(SEND_DEADLINE.saturating_sub(sent_from.elapsed()), s)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the feed did not finish in {SEND_DEADLINE:?} ({} ACKs; server log: {})",
                    tally.accepted.load(Ordering::Relaxed),
                    server_log.display()
                )
            })
            .expect("a sender panicked");
    }
    let send_time = sent_from.elapsed();
    assert!(
        accepted_at_kill.iter().all(|n| *n < MESSAGES),
        "every kill happened mid-feed: {accepted_at_kill:?}"
    );
    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    assert_eq!(acked.len(), MESSAGES, "every message got its AA");

    // Wait, with the server running, until every message is in the log and applied.
    let expected: HashSet<String> = acked.keys().map(|i| control_id(*i)).collect();
    let applying = Instant::now();
    let rows = loop {
        let rows = all_messages(&store, org.id).await;
        let present: HashSet<&str> = rows.iter().map(|m| m.control_id.as_str()).collect();
        let settled = rows.iter().all(|m| m.state != Hl7State::Pending);
        if settled && expected.iter().all(|c| present.contains(c.as_str())) {
            break rows;
        }
        if applying.elapsed() > APPLY_DEADLINE {
            let missing = expected
                .iter()
                .filter(|c| !present.contains(c.as_str()))
                .count();
            let pending = rows.iter().filter(|m| m.state == Hl7State::Pending).count();
            panic!(
                "{APPLY_DEADLINE:?} after the last ACK: {missing} acknowledged messages not in the log, {pending} pending (server log: {})",
                server_log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let apply_time = applying.elapsed();

    // (a) Every acknowledged message is in the log exactly once, with the reply its
    // sender got; nothing else is there.
    let mut by_control: HashMap<&str, Vec<&store::Hl7Message>> = HashMap::new();
    for m in &rows {
        by_control.entry(m.control_id.as_str()).or_default().push(m);
    }
    let twice: Vec<(&str, usize)> = by_control
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(c, v)| (*c, v.len()))
        .collect();
    assert!(
        twice.is_empty(),
        "messages stored more than once (control id, rows): {twice:?}"
    );
    let missing: Vec<&String> = expected
        .iter()
        .filter(|c| !by_control.contains_key(c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the log: {missing:?}"
    );
    let strangers: Vec<&&str> = by_control
        .keys()
        .filter(|c| !expected.contains(**c))
        .collect();
    assert!(
        strangers.is_empty(),
        "in the log, never sent: {strangers:?}"
    );
    assert_eq!(rows.len(), MESSAGES, "one row per message");

    // (b) None pending, failed or refused: each one applied.
    let mut states: HashMap<&str, usize> = HashMap::new();
    for m in &rows {
        *states.entry(m.state.as_str()).or_default() += 1;
    }
    assert_eq!(
        states.get("applied").copied().unwrap_or_default(),
        MESSAGES,
        "every message applied: {states:?}"
    );

    let mut duplicates_answered = 0;
    for (i, a) in &acked {
        let row = by_control[control_id(*i).as_str()][0];
        assert_eq!(row.raw, siu_s12(*i), "{}: the bytes sent", row.control_id);
        assert_eq!(row.ack_code, "AA", "{}", row.control_id);
        assert_eq!(
            row.ack, a.ack,
            "{}: the stored reply is the one its sender got (sent {} times)",
            row.control_id, a.attempts
        );
        // Stored from an earlier attempt than the one that got the AA: the last attempt
        // was a duplicate, answered with the original reply.
        if a.attempts > 1 && row.received_at < a.last_sent - jiff::SignedDuration::from_millis(1) {
            duplicates_answered += 1;
        }
    }

    // (c) Each booking is exactly one appointment; N in all.
    let appointments = all_appointments(&store, org.id).await;
    let mut per_filler: HashMap<&str, usize> = HashMap::new();
    for a in &appointments {
        let fillers: Vec<&str> = a
            .identifiers
            .iter()
            .filter(|x| x.kind == domain::ExternalIdKind::Filler)
            .map(|x| x.value.as_str())
            .collect();
        assert_eq!(fillers.len(), 1, "one filler id on {a:?}");
        *per_filler.entry(fillers[0]).or_default() += 1;
    }
    let doubled: Vec<(&&str, &usize)> = per_filler.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "bookings applied twice (filler id, appointments): {doubled:?}"
    );
    let unbooked: Vec<String> = (0..MESSAGES)
        .map(filler_id)
        .filter(|f| !per_filler.contains_key(f.as_str()))
        .collect();
    assert!(
        unbooked.is_empty(),
        "bookings without an appointment: {unbooked:?}"
    );
    assert_eq!(appointments.len(), MESSAGES, "one appointment per booking");

    // And each patient exists once, however many bookings named them.
    let patients = all_patients(&store, org.id).await;
    let mut per_mrn: HashMap<&str, usize> = HashMap::new();
    for p in &patients {
        for id in &p.identifiers {
            *per_mrn.entry(id.value.as_str()).or_default() += 1;
        }
    }
    for p in 0..PATIENTS {
        assert_eq!(per_mrn.get(mrn(p).as_str()), Some(&1), "patient {}", mrn(p));
    }
    assert_eq!(patients.len(), PATIENTS, "one patient per MRN");

    server.kill9();
    if !postgres {
        assert!(
            dir.join("rapport.db-hl7journal").exists(),
            "on SQLite the messages went through the HL7 journal"
        );
    }
    let (recovering_starts, recovered, errors) = server_log_summary(&server_log);
    for e in &errors {
        eprintln!("{backend}: server logged {e}");
    }
    let resends: usize = acked.values().map(|a| a.attempts - 1).sum();
    eprintln!(
        "{backend}: {MESSAGES} messages over {CONNECTIONS} connections, {KILLS} kills (at {accepted_at_kill:?} ACKs), \
         {resends} resends ({} exchanges lost, {} refused connects, {} AR), \
         {duplicates_answered} duplicates answered with the original reply; \
         {recovered} messages moved from the HL7 journal at {recovering_starts} starts, {} server errors logged; \
         feed {send_time:.1?}, applied {apply_time:.1?} after it, {:.1?} in all",
        tally.lost.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.ar.load(Ordering::Relaxed),
        errors.len(),
        began.elapsed()
    );
    // Passed: clean up (a failure leaves the directory, server log included, and the
    // database for a post-mortem).
    store.close().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    if postgres {
        use sqlx::Connection;
        let admin = std::env::var("RAPPORT_TEST_POSTGRES_URL").unwrap();
        let (_, name) = url.rsplit_once('/').unwrap();
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_hl7_feed_loses_and_duplicates_nothing_on_sqlite() {
    survives_kill_9(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_hl7_feed_loses_and_duplicates_nothing_on_postgres() {
    survives_kill_9(true).await;
}
