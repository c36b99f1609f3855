//! The dispatcher and reconciler against the Twilio-compatible simulator over real HTTP,
//! on SQLite, stepped deterministically: quiet hours, urgent bypass, caps, cancelled
//! appointments, provider refusals, and exactly-once delivery under injected faults.

use channels::simulator::{Faults, SimulatorConfig, SimulatorHandle};
use domain::ids::MessageId;
use domain::{Clock, FixedClock, OrgId, Organization, SystemClock, ZoneName};
use jiff::{SignedDuration, Timestamp};
use rapport_engine::{Engine, EngineConfig, Sealer};
use std::sync::Arc;
use std::time::Duration;
use store::{AppStore, OutboundMessage};
use store_sqlite::SqliteStore;

struct World {
    engine: Arc<Engine>,
    store: Arc<dyn AppStore>,
    org: Organization,
    sim: SimulatorHandle,
}

async fn world(
    clock: Arc<dyn Clock>,
    faults: Faults,
    tweak: impl FnOnce(&mut EngineConfig),
) -> World {
    let path = std::env::temp_dir().join(format!(
        "rapport-engine-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store::Store::migrate(&store).await.unwrap();
    let store: Arc<dyn AppStore> = Arc::new(store);
    let org = Organization {
        id: OrgId::new(),
        slug: "clinic".into(),
        name: "North Clinic".into(),
        time_zone: ZoneName::parse("America/New_York").unwrap(),
        phone_region: "US".into(),
        // The welcome has its own test; elsewhere it would only add a message.
        messaging: domain::messaging_settings::MessagingSettings {
            welcome: false,
            ..Default::default()
        },
        created_at: Timestamp::now(),
    };
    store.insert_organization(&org).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = channels::simulator::start(
        SimulatorConfig {
            faults,
            timeout_hold: Duration::from_secs(2),
            seed: 7,
            ..SimulatorConfig::default()
        },
        listener,
    )
    .await;
    let mut config = EngineConfig {
        public_url: "http://127.0.0.1:9".into(),
        ..EngineConfig::default()
    };
    config.dispatch.pacing = false;
    tweak(&mut config);
    let engine = Engine::new(store.clone(), clock, Sealer::ephemeral(), config);
    let input = rapport_engine::channels::NewChannel {
        name: "Main".into(),
        kind: "twilio".into(),
        account_sid: sim.account_sid().into(),
        auth_token: Some(sim.auth_token().into()),
        auth_token_env: None,
        from: Some("+12015550100".into()),
        messaging_service_sid: None,
        api_base: Some(sim.base_url().into()),
        settings: None,
        smtp: None,
    };
    engine.create_channel(&org, input).await.unwrap();
    World {
        engine,
        store,
        org,
        sim,
    }
}

fn message(org: &Organization, to: &str, kind: &str, key: &str, at: Timestamp) -> OutboundMessage {
    let mut m = store::contract_messaging::message(org.id, None, to, key, at);
    m.kind = kind.into();
    m.body = format!("Message {key}");
    m.created_at = at;
    m.updated_at = at;
    m
}

/// A world on the system clock that sends at any hour the test runs: with the default
/// window (08:00–20:00 in the patient's zone) these tests failed every night. Quiet
/// hours are tested on fixed clocks here and in `domain::send_window`.
async fn world_now(faults: Faults, tweak: impl FnOnce(&mut EngineConfig)) -> World {
    let mut w = world(Arc::new(SystemClock), faults, tweak).await;
    w.org.messaging.send_windows.default =
        domain::SendWindow::new(jiff::civil::Time::MIN, jiff::civil::Time::MAX).unwrap();
    store::OrganizationStore::update_messaging_settings(&*w.store, w.org.id, &w.org.messaging)
        .await
        .unwrap();
    w
}

async fn state(w: &World, id: MessageId) -> OutboundMessage {
    w.store.outbound(w.org.id, id).await.unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

#[tokio::test]
async fn a_reminder_planned_at_night_waits_for_the_morning_and_urgent_ones_do_not() {
    // 02:00 in New York.
    let clock = Arc::new(FixedClock::new(at("2026-11-25T07:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let reminder = message(&w.org, "+12015550123", "reminder", "r1", clock.now());
    let mut urgent = message(&w.org, "+12015550124", "reminder", "u1", clock.now());
    urgent.urgent = true;
    w.store.enqueue(&reminder).await.unwrap();
    w.store.enqueue(&urgent).await.unwrap();
    let report = w.engine.dispatch_step().await.unwrap();
    assert_eq!((report.deferred, report.sent), (1, 1));
    let waiting = state(&w, reminder.id).await;
    assert_eq!(waiting.state, "queued");
    assert_eq!(
        waiting.not_before,
        at("2026-11-25T13:00:00Z"),
        "08:00 local"
    );
    assert!(
        waiting.reason.as_deref().unwrap().contains("send window"),
        "{:?}",
        waiting.reason
    );
    assert_eq!(w.sim.count_to("+12015550123"), 0, "nothing at 02:00");
    assert_eq!(w.sim.count_to("+12015550124"), 1, "the urgent one went");
    assert_eq!(state(&w, urgent.id).await.state, "sent");

    assert_eq!(
        w.engine.dispatch_step().await.unwrap().claimed,
        0,
        "not due before 08:00"
    );
    clock.set(at("2026-11-25T13:00:00Z"));
    assert_eq!(w.engine.dispatch_step().await.unwrap().sent, 1);
    assert_eq!(w.sim.count_to("+12015550123"), 1);
}

#[tokio::test]
async fn quiet_hours_follow_the_patients_zone_across_dst() {
    // 2026-03-08 is the spring-forward day in New York: 07:30 local is 11:30Z.
    let clock = Arc::new(FixedClock::new(at("2026-03-08T11:30:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let m = message(&w.org, "+12015550123", "reminder", "dst", clock.now());
    w.store.enqueue(&m).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    assert_eq!(
        state(&w, m.id).await.not_before,
        at("2026-03-08T12:00:00Z"),
        "08:00 EDT"
    );
}

#[tokio::test]
async fn the_daily_safety_cap_holds_the_fourth_automated_message() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        clock.set(at("2026-11-25T15:00:00Z") + SignedDuration::from_mins(i));
        let m = message(
            &w.org,
            "+12015550123",
            "broadcast",
            &format!("b{i}"),
            clock.now(),
        );
        w.store.enqueue(&m).await.unwrap();
        w.engine.dispatch_step().await.unwrap();
        ids.push(m.id);
    }
    let fourth = state(&w, ids[3]).await;
    assert_eq!(fourth.state, "suppressed", "{fourth:?}");
    assert!(
        fourth.reason.as_deref().unwrap().contains('3'),
        "{:?}",
        fourth.reason
    );
    assert_eq!(w.sim.count_to("+12015550123"), 3);
    // A staff member's own message is never capped.
    let staff = message(&w.org, "+12015550123", "staff_message", "s", clock.now());
    w.store.enqueue(&staff).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    assert_eq!(state(&w, staff.id).await.state, "sent");
}

#[tokio::test]
async fn reminders_for_cancelled_appointments_are_suppressed() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let p = store::contract::patient(&w.org, "Ana", "Lee", "201-555-0123", "M1");
    w.store.insert_patient(&p).await.unwrap();
    let appt = domain::Appointment {
        id: domain::AppointmentId::new(),
        org_id: w.org.id,
        identifiers: vec![],
        patient_id: p.id,
        provider_id: None,
        location_id: None,
        start: Some(at("2026-11-26T15:00:00Z")),
        end: None,
        time_zone: w.org.time_zone.clone(),
        appointment_type: None,
        status: domain::AppointmentStatus::Cancelled,
        confirmation: domain::ConfirmationState::Unconfirmed,
        created_at: clock.now(),
        updated_at: clock.now(),
        version: 1,
    };
    w.store.insert_appointment(&appt).await.unwrap();
    let mut m = message(&w.org, "+12015550123", "reminder", "appt", clock.now());
    m.appointment_id = Some(appt.id);
    m.patient_id = Some(p.id);
    w.store.enqueue(&m).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    let got = state(&w, m.id).await;
    assert_eq!(
        (got.state.as_str(), got.reason.as_deref()),
        ("suppressed", Some("the appointment is cancelled"))
    );
    assert_eq!(w.sim.count_to("+12015550123"), 0);
}

#[tokio::test]
async fn provider_refusals_teach_the_consent_ledger_and_the_patient_record() {
    let w = world_now(Faults::default(), |_| {}).await;
    w.sim.opt_out("+12015550123");
    let p = store::contract::patient(&w.org, "Ana", "Lee", "201-555-0123", "M1");
    w.store.insert_patient(&p).await.unwrap();
    let m = message(
        &w.org,
        "+12015550123",
        "staff_message",
        "x",
        Timestamp::now(),
    );
    w.store.enqueue(&m).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    let got = state(&w, m.id).await;
    assert_eq!(
        (got.state.as_str(), got.error_code),
        ("failed", Some(21610))
    );
    let consent = w
        .store
        .consent_history(w.org.id, "+12015550123")
        .await
        .unwrap();
    assert_eq!(consent.len(), 1);
    assert_eq!(
        (consent[0].source.as_str(), consent[0].status.as_str()),
        ("carrier", "opted_out")
    );
    // And the next message is suppressed before it reaches the provider.
    let next = message(
        &w.org,
        "+12015550123",
        "staff_message",
        "y",
        Timestamp::now(),
    );
    w.store.enqueue(&next).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    assert_eq!(state(&w, next.id).await.state, "suppressed");
    assert_eq!(w.sim.accepted_total(), 0);
}

/// 20% of sends meet a fault: 429s, 500s, timeouts, and accepted-but-unanswered. Every
/// message still reaches the provider exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_exactly_once_through_injected_faults() {
    let faults = Faults {
        error_rate_429: 0.05,
        error_rate_500: 0.05,
        timeout_rate: 0.05,
        lost_response_rate: 0.05,
        ..Faults::default()
    };
    let w = world_now(faults, |c| {
        c.provider_timeout = Duration::from_millis(500);
        c.dispatch.backoff_base = Duration::from_millis(20);
        c.dispatch.backoff_max = Duration::from_millis(200);
        c.dispatch.reconcile_after = Duration::from_secs(1);
        c.dispatch.max_attempts = 50;
    })
    .await;
    let n = 300;
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for i in 0..n {
        let to = format!("+1201200{i:04}");
        let m = message(&w.org, &to, "staff_message", &format!("m{i}"), now);
        w.store.enqueue(&m).await.unwrap();
        ids.push(m.id);
    }
    let started = std::time::Instant::now();
    loop {
        w.engine.dispatch_step().await.unwrap();
        w.engine.reconcile_step().await.unwrap();
        let mut open = 0;
        for id in &ids {
            if !matches!(state(&w, *id).await.state.as_str(), "sent" | "delivered") {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let mut states = std::collections::BTreeMap::<String, usize>::new();
            for id in &ids {
                let m = state(&w, *id).await;
                *states
                    .entry(format!("{} {:?}", m.state, m.reason))
                    .or_default() += 1;
            }
            panic!("{open} messages still not sent: {states:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = w.sim.log();
    let mut bodies: Vec<&str> = log.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    let total = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "every message reached the provider");
    assert_eq!(total, n, "and none twice");
    for id in &ids {
        let m = state(&w, *id).await;
        let sim = w
            .sim
            .message(m.provider_message_id.as_deref().unwrap())
            .expect("the provider id is the simulator's");
        assert_eq!(
            sim.body, m.body,
            "each row is linked to its own provider message"
        );
    }
}

#[tokio::test]
async fn a_numbers_first_automated_message_is_preceded_by_one_welcome() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let mut w = world(clock.clone(), Faults::default(), |_| {}).await;
    w.org.messaging.welcome = true;
    w.store
        .update_messaging_settings(w.org.id, &w.org.messaging)
        .await
        .unwrap();
    let first = message(&w.org, "+12015550123", "reminder", "r1", clock.now());
    w.store.enqueue(&first).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    let held = state(&w, first.id).await;
    assert_eq!(
        (held.state.as_str(), held.reason.as_deref()),
        ("queued", Some("after the welcome message"))
    );
    w.engine.dispatch_step().await.unwrap();
    clock.set(at("2026-11-25T15:00:11Z"));
    w.engine.dispatch_step().await.unwrap();
    let log = w.sim.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].body.contains("Reply STOP to opt out") && log[0].body.contains("North Clinic"),
        "{}",
        log[0].body
    );
    assert_eq!(log[1].body, "Message r1");
    let second = message(&w.org, "+12015550123", "reminder", "r2", clock.now());
    w.store.enqueue(&second).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    assert_eq!(w.sim.log().len(), 3, "no second welcome");
}

#[tokio::test]
async fn automatic_replies_to_one_number_are_limited_per_hour() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let mut states = Vec::new();
    for i in 0..7 {
        clock.set(at("2026-11-25T15:00:00Z") + SignedDuration::from_mins(i));
        let m = message(
            &w.org,
            "+12015550123",
            "keyword_reply",
            &format!("k{i}"),
            clock.now(),
        );
        w.store.enqueue(&m).await.unwrap();
        w.engine.dispatch_step().await.unwrap();
        states.push(state(&w, m.id).await);
    }
    assert_eq!(
        w.sim.count_to("+12015550123"),
        5,
        "five automatic replies an hour by default"
    );
    assert_eq!(states[5].state, "suppressed");
    assert!(
        states[5]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("loop guard"),
        "{:?}",
        states[5].reason
    );
    clock.set(at("2026-11-25T16:10:00Z"));
    let later = message(
        &w.org,
        "+12015550123",
        "keyword_reply",
        "k-later",
        clock.now(),
    );
    w.store.enqueue(&later).await.unwrap();
    w.engine.dispatch_step().await.unwrap();
    assert_eq!(
        state(&w, later.id).await.state,
        "sent",
        "an hour later replies flow again"
    );
}

#[tokio::test]
async fn a_delivery_receipt_that_arrives_before_the_send_is_recorded_is_not_lost() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let m = message(
        &w.org,
        "+12015550123",
        "staff_message",
        "early",
        clock.now(),
    );
    w.store.enqueue(&m).await.unwrap();
    let mut sending = store::StateChange::new(m.id, "queued", "sending", clock.now());
    sending.count_attempt = true;
    w.store.change_state(&sending).await.unwrap();
    // The provider's callbacks outrun the answer to our own request.
    assert!(
        !w.engine
            .apply_provider_status("SMearly", "sent", None)
            .await
            .unwrap()
    );
    assert!(
        !w.engine
            .apply_provider_status("SMearly", "delivered", None)
            .await
            .unwrap()
    );
    let mut sent = store::StateChange::new(m.id, "sending", "sent", clock.now());
    sent.provider_message_id = Some("SMearly".into());
    w.store.change_state(&sent).await.unwrap();
    w.engine.apply_early_statuses("SMearly").await.unwrap();
    assert_eq!(state(&w, m.id).await.state, "delivered");
    assert!(
        w.store
            .take_early_statuses("SMearly")
            .await
            .unwrap()
            .is_empty(),
        "applied once, then gone"
    );
}

/// The checks of one step count the messages the same step lets go: four broadcasts to
/// one number claimed together still meet the daily safety cap of three, and a sender's
/// daily cap holds within a batch.
#[tokio::test]
async fn a_batch_counts_its_own_messages_against_the_caps() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |_| {}).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let m = message(
            &w.org,
            "+12015550123",
            "broadcast",
            &format!("b{i}"),
            clock.now() - SignedDuration::from_secs(10 - i),
        );
        w.store.enqueue(&m).await.unwrap();
        ids.push(m.id);
    }
    let report = w.engine.dispatch_step().await.unwrap();
    assert_eq!((report.claimed, report.sent, report.suppressed), (4, 3, 1));
    assert_eq!(w.sim.count_to("+12015550123"), 3);
    let fourth = state(&w, ids[3]).await;
    assert_eq!(fourth.state, "suppressed", "the last claimed is held");

    let mut channel = w.store.channels(w.org.id).await.unwrap().remove(0);
    channel.settings.daily_cap = 5;
    w.store.update_channel(&channel).await.unwrap();
    let mut staff = Vec::new();
    for i in 0..4 {
        let m = message(
            &w.org,
            &format!("+1201200{i:04}"),
            "staff_message",
            &format!("s{i}"),
            clock.now(),
        );
        w.store.enqueue(&m).await.unwrap();
        staff.push(m.id);
    }
    let report = w.engine.dispatch_step().await.unwrap();
    assert_eq!(
        (report.sent, report.deferred),
        (2, 2),
        "3 sent today already, cap 5"
    );
    let held = state(&w, staff[3]).await;
    assert!(
        held.reason.as_deref().unwrap().contains("daily cap"),
        "{:?}",
        held.reason
    );
}

#[tokio::test]
async fn two_messages_to_a_new_number_in_one_batch_wait_for_one_welcome() {
    let clock = Arc::new(FixedClock::new(at("2026-11-25T15:00:00Z")));
    let mut w = world(clock.clone(), Faults::default(), |_| {}).await;
    w.org.messaging.welcome = true;
    w.store
        .update_messaging_settings(w.org.id, &w.org.messaging)
        .await
        .unwrap();
    let first = message(&w.org, "+12015550123", "reminder", "r1", clock.now());
    let second = message(&w.org, "+12015550123", "survey", "v1", clock.now());
    w.store.enqueue(&first).await.unwrap();
    w.store.enqueue(&second).await.unwrap();
    let report = w.engine.dispatch_step().await.unwrap();
    assert_eq!((report.deferred, report.sent), (2, 0));
    for id in [first.id, second.id] {
        assert_eq!(
            state(&w, id).await.reason.as_deref(),
            Some("after the welcome message")
        );
    }
    w.engine.dispatch_step().await.unwrap();
    clock.set(at("2026-11-25T15:00:11Z"));
    w.engine.dispatch_step().await.unwrap();
    let log = w.sim.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[0].body.contains("Reply STOP to opt out"),
        "{}",
        log[0].body
    );
    assert_eq!(
        log.iter().filter(|m| m.body.contains("Reply STOP")).count(),
        1,
        "one welcome"
    );
}

#[tokio::test]
async fn a_paced_sender_is_held_to_its_rate() {
    let w = world_now(Faults::default(), |c| {
        c.dispatch.pacing = true;
    })
    .await;
    let mut channel = w.store.channels(w.org.id).await.unwrap().remove(0);
    channel.settings.segments_per_second = 20.0;
    w.store.update_channel(&channel).await.unwrap();
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for i in 0..30 {
        let m = message(
            &w.org,
            &format!("+1201200{i:04}"),
            "staff_message",
            &format!("p{i}"),
            now,
        );
        w.store.enqueue(&m).await.unwrap();
        ids.push(m.id);
    }
    let started = std::time::Instant::now();
    let report = w.engine.dispatch_step().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.sent, 30);
    // A burst of one second's worth (20), then 10 more at 20 a second.
    assert!(
        elapsed >= Duration::from_millis(450),
        "too fast for 20 segments a second: {elapsed:?}"
    );
    for id in ids {
        let m = state(&w, id).await;
        assert_eq!((m.state.as_str(), m.attempts), ("sent", 1));
    }
}

/// The loop `rapport serve` runs, with its overlapped steps, through the same faults as
/// above: every message still arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlapped_dispatcher_loop_sends_every_message_once_through_faults() {
    let faults = Faults {
        error_rate_429: 0.05,
        error_rate_500: 0.05,
        timeout_rate: 0.05,
        lost_response_rate: 0.05,
        ..Faults::default()
    };
    let w = world_now(faults, |c| {
        c.provider_timeout = Duration::from_millis(500);
        c.dispatch.backoff_base = Duration::from_millis(20);
        c.dispatch.backoff_max = Duration::from_millis(200);
        c.dispatch.reconcile_after = Duration::from_secs(1);
        c.dispatch.max_attempts = 50;
        c.dispatch.batch = 25;
        c.dispatch.per_org = 25;
        c.dispatch.concurrency = 8;
    })
    .await;
    let n = 300;
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for i in 0..n {
        let to = format!("+1201200{i:04}");
        let m = message(&w.org, &to, "staff_message", &format!("m{i}"), now);
        w.store.enqueue(&m).await.unwrap();
        ids.push(m.id);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let dispatcher = tokio::spawn(w.engine.clone().run_dispatcher(stop_rx));
    let started = std::time::Instant::now();
    loop {
        let mut open = 0;
        for id in &ids {
            if !matches!(state(&w, *id).await.state.as_str(), "sent" | "delivered") {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{open} messages still not sent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_tx.send(true).unwrap();
    dispatcher.await.unwrap();
    let log = w.sim.log();
    let mut bodies: Vec<&str> = log.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    let total = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "every message reached the provider");
    assert_eq!(total, n, "and none twice");
    for id in &ids {
        let m = state(&w, *id).await;
        let sim = w
            .sim
            .message(m.provider_message_id.as_deref().unwrap())
            .expect("the provider id is the simulator's");
        assert_eq!(sim.body, m.body);
    }
}

/// An organisation with a texting channel and an e-mail channel: each message goes out
/// through the one that suits its recipient; e-mail keeps the same quiet hours; and an
/// e-mail whose attempt was never answered (a crash) is sent again, since a mail server
/// cannot be asked what it kept.
#[tokio::test]
async fn email_goes_through_the_mail_channel_with_the_same_checks_and_is_resent_after_a_crash() {
    let Some(server) = channels::testing::SmtpTestServer::start() else {
        return;
    };
    // 02:00 in New York.
    let clock = Arc::new(FixedClock::new(at("2026-11-25T07:00:00Z")));
    let w = world(clock.clone(), Faults::default(), |c| {
        c.dispatch.reconcile_after = Duration::from_secs(60);
    })
    .await;
    let mail = rapport_engine::channels::NewChannel {
        name: "Mail".into(),
        kind: "smtp".into(),
        account_sid: String::new(),
        auth_token: None,
        auth_token_env: None,
        from: Some("North Clinic <care@north.example>".into()),
        messaging_service_sid: None,
        api_base: None,
        settings: None,
        smtp: Some(rapport_engine::channels::SmtpServer {
            host: "127.0.0.1".into(),
            port: Some(server.port()),
            tls: Some("none".into()),
            username: None,
        }),
    };
    let mail = w.engine.create_channel(&w.org, mail).await.unwrap();

    let reminder = message(&w.org, "ana@example.org", "reminder", "e1", clock.now());
    let mut text = message(&w.org, "+12015550150", "staff_message", "t1", clock.now());
    text.urgent = true;
    w.store.enqueue(&reminder).await.unwrap();
    w.store.enqueue(&text).await.unwrap();
    let report = w.engine.dispatch_step().await.unwrap();
    assert_eq!((report.deferred, report.sent), (1, 1), "{report:?}");
    assert_eq!(
        w.sim.count_to("+12015550150"),
        1,
        "the urgent text went to Twilio"
    );
    assert!(server.inbox().is_empty(), "no e-mail reminder at 02:00");
    let waiting = state(&w, reminder.id).await;
    assert_eq!(
        waiting.not_before,
        at("2026-11-25T13:00:00Z"),
        "08:00 local"
    );

    clock.set(at("2026-11-25T13:00:00Z"));
    assert_eq!(w.engine.dispatch_step().await.unwrap().sent, 1);
    let sent = state(&w, reminder.id).await;
    assert_eq!(sent.state, "sent");
    let inbox = server.inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["rcpt_tos"], serde_json::json!(["ana@example.org"]));
    assert_eq!(inbox[0]["subject"], "A message from North Clinic");
    assert_eq!(
        sent.provider_message_id.as_deref(),
        inbox[0]["message_id"].as_str()
    );
    assert_eq!(w.sim.count_to("ana@example.org"), 0, "never texted");

    // A crash between the attempt and the server's answer leaves it in `sending`.
    let crashed = message(
        &w.org,
        "ben@example.org",
        "staff_message",
        "e2",
        clock.now(),
    );
    w.store.enqueue(&crashed).await.unwrap();
    let mut attempt = store::StateChange::new(crashed.id, "queued", "sending", clock.now());
    attempt.count_attempt = true;
    attempt.channel_id = Some(mail.id);
    assert!(w.store.change_state(&attempt).await.unwrap());
    assert_eq!(w.engine.reconcile_step().await.unwrap(), 0, "not yet due");
    clock.set(at("2026-11-25T13:02:00Z"));
    assert_eq!(w.engine.reconcile_step().await.unwrap(), 1);
    let requeued = state(&w, crashed.id).await;
    assert_eq!(requeued.state, "queued");
    assert!(
        requeued.reason.as_deref().unwrap().contains("mail server"),
        "{:?}",
        requeued.reason
    );
    assert_eq!(w.engine.dispatch_step().await.unwrap().sent, 1);
    assert_eq!(state(&w, crashed.id).await.state, "sent");
    let to_ben = server
        .inbox()
        .iter()
        .filter(|m| m["rcpt_tos"] == serde_json::json!(["ben@example.org"]))
        .count();
    assert_eq!(to_ben, 1);
}
