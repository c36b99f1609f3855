//! `kill -9` during a 10,000-message send: the real `rapport serve` process is killed five
//! times at random moments and restarted; every message still reaches the provider (the
//! Twilio-compatible simulator, in this test process, keeping its own log) exactly once.
//! Runs on SQLite, and on PostgreSQL when RAPPORT_TEST_POSTGRES_URL is set.

use channels::simulator::SimulatorConfig;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{AppStore, StoreError};

mod serve_process;
use serve_process::{Server, free_port};
mod any_hour;
use any_hour::send_at_any_hour;

const MESSAGES: usize = 10_000;
const KILLS: usize = 5;

async fn fresh_database(postgres: bool) -> Option<String> {
    if !postgres {
        let path = std::env::temp_dir().join(format!(
            "rapport-crash-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        return Some(format!("sqlite://{}", path.display()));
    }
    serve_process::fresh_postgres_database("rapport_crash").await
}

async fn unfinished(
    store: &Arc<dyn AppStore>,
    org: domain::OrgId,
    ids: &[domain::ids::MessageId],
) -> usize {
    let mut open = 0;
    for id in ids {
        match store.outbound(org, *id).await {
            Ok(m) if matches!(m.state.as_str(), "sent" | "delivered") => {}
            Ok(_) | Err(StoreError::NotFound) => open += 1,
            Err(e) => panic!("{e}"),
        }
    }
    open
}

async fn survives_kill_9(postgres: bool) {
    let Some(url) = fresh_database(postgres).await else {
        eprintln!("skipped: RAPPORT_TEST_POSTGRES_URL not set");
        return;
    };
    let sim = channels::simulator::start(
        SimulatorConfig {
            seed: 11,
            ..SimulatorConfig::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("rapport-crash-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("secret.key");
    let (http, metrics) = (free_port(), free_port());
    let public_url = format!("http://127.0.0.1:{http}");
    let config = rapport::Config {
        database_url: url.clone(),
        secret_key_file: key_file.clone(),
        public_url: public_url.clone(),
        ..rapport::Config::default()
    };

    // The organisation, its channel (Auth Token sealed with the server's key) and the outbox.
    let store = rapport::open_store(&url).await.unwrap();
    let mut org = rapport::cli::create_org(&*store, "crash", "Crash Clinic", "America/New_York")
        .await
        .unwrap();
    send_at_any_hour(&*store, &mut org).await;
    let engine = rapport::engine(&config, store.clone(), Arc::new(domain::SystemClock)).unwrap();
    let channel = engine
        .create_channel(
            &org,
            engine::channels::NewChannel {
                name: "Main".into(),
                kind: "twilio".into(),
                account_sid: sim.account_sid().into(),
                auth_token: Some(sim.auth_token().into()),
                auth_token_env: None,
                from: Some("+12015550100".into()),
                messaging_service_sid: None,
                api_base: Some(sim.base_url().into()),
                settings: Some(store::ChannelSettings {
                    segments_per_second: 0.0,
                    daily_cap: 0,
                    provider_handles_keywords: true,
                }),
                smtp: None,
            },
        )
        .await
        .unwrap();
    let now = jiff::Timestamp::now();
    let mut ids = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let mut m = store::contract_messaging::message(
            org.id,
            Some(channel.id),
            &format!("+1201200{i:04}"),
            &format!("crash:{i}"),
            now,
        );
        m.kind = "staff_message".into();
        m.body = format!("Message {i} of the crash test");
        store.enqueue(&m).await.unwrap();
        ids.push(m.id);
    }

    let mllp = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let env: Vec<(String, String)> = [
        ("RAPPORT_DATABASE_URL", url.as_str()),
        ("RAPPORT_HTTP_ADDR", &format!("127.0.0.1:{http}")),
        ("RAPPORT_METRICS_ADDR", &format!("127.0.0.1:{metrics}")),
        ("RAPPORT_MLLP_ADDR", &mllp),
        ("RAPPORT_PUBLIC_URL", &public_url),
        ("RAPPORT_SECRET_KEY_FILE", key_file.to_str().unwrap()),
        ("RAPPORT_DISPATCH_LEASE_SECS", "2"),
        ("RAPPORT_RECONCILE_AFTER_SECS", "2"),
        ("RAPPORT_PROVIDER_TIMEOUT_MS", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut server = Server::new(env, None);
    let mut rng = rand::rngs::StdRng::seed_from_u64(if postgres { 2 } else { 1 });
    server.start();
    let mut accepted_at_kill = Vec::new();
    for _ in 0..KILLS {
        // Kill at a random moment while messages are flowing.
        let start = sim.accepted_total();
        let target = start + rng.random_range(300..1200);
        let waited = Instant::now();
        while sim.accepted_total() < target && waited.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
        }
        server.kill9();
        accepted_at_kill.push(sim.accepted_total());
        server.start();
    }
    let started = Instant::now();
    loop {
        let open = unfinished(&store, org.id, &ids).await;
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{open} messages still not sent after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.kill9();
    assert!(
        accepted_at_kill.iter().all(|n| (*n as usize) < MESSAGES),
        "every kill happened mid-send: {accepted_at_kill:?}"
    );
    let log = sim.log();
    let mut bodies: Vec<&str> = log.iter().map(|m| m.body.as_str()).collect();
    let total = bodies.len();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), MESSAGES, "every message reached the provider");
    assert_eq!(
        total, MESSAGES,
        "none twice (kills at {accepted_at_kill:?})"
    );
    for id in ids.iter().step_by(97) {
        let m = store.outbound(org.id, *id).await.unwrap();
        let at_sim = sim
            .message(m.provider_message_id.as_deref().unwrap())
            .unwrap();
        assert_eq!(
            at_sim.body, m.body,
            "each row points at its own provider message"
        );
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_10000_message_send_loses_and_duplicates_nothing_on_sqlite() {
    survives_kill_9(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_10000_message_send_loses_and_duplicates_nothing_on_postgres() {
    survives_kill_9(true).await;
}
