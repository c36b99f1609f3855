//! What every run sets up: an organisation whose send window is the whole day (so the time
//! of day the benchmark runs at changes nothing), a Twilio channel on the simulator, and the
//! outbox rows.

use anyhow::Context;
use channels::simulator::{SimulatorConfig, SimulatorHandle};
use domain::Organization;
use domain::ids::{ChannelId, MessageId};
use domain::message_state::MessageState;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use store::{AppStore, Channel, ChannelSettings, OutboundMessage};

/// A simulator whose status callbacks come an hour after each send: long after any run
/// ends, so they never compete with what is measured (and they go nowhere anyway).
pub async fn quiet_simulator() -> anyhow::Result<SimulatorHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(channels::simulator::start(
        SimulatorConfig {
            callback_delays: (Duration::from_secs(3600), Duration::from_secs(3600)),
            seed: 20261125,
            ..SimulatorConfig::default()
        },
        listener,
    )
    .await)
}

/// An organisation (America/New_York) that may be texted at any hour.
pub async fn organization(store: &Arc<dyn AppStore>, slug: &str) -> anyhow::Result<Organization> {
    let mut org =
        rapport::cli::create_org(&**store, slug, "Benchmark Clinic", "America/New_York").await?;
    org.messaging.send_windows.default =
        domain::send_window::SendWindow::new(jiff::civil::Time::MIN, jiff::civil::Time::MAX)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    org.messaging.send_windows.per_kind.clear();
    store
        .update_messaging_settings(org.id, &org.messaging)
        .await
        .context("setting an all-day send window")?;
    Ok(org)
}

/// A Twilio channel sending from `from` through `sim`, paced at `segments_per_second`
/// (0 for unpaced).
pub async fn channel(
    engine: &engine::Engine,
    org: &Organization,
    sim: &SimulatorHandle,
    name: &str,
    from: &str,
    segments_per_second: f64,
) -> anyhow::Result<Channel> {
    let channel = engine
        .create_channel(
            org,
            engine::channels::NewChannel {
                name: name.into(),
                kind: "twilio".into(),
                account_sid: sim.account_sid().into(),
                auth_token: Some(sim.auth_token().into()),
                auth_token_env: None,
                from: Some(from.into()),
                messaging_service_sid: None,
                api_base: Some(sim.base_url().into()),
                settings: Some(ChannelSettings {
                    segments_per_second,
                    daily_cap: 0,
                    provider_handles_keywords: true,
                }),
                smtp: None,
            },
        )
        .await
        .context("creating the channel")?;
    Ok(channel)
}

/// The `i`th of a run's distinct recipients: +1 201 2xx NNNN, a new exchange every 10,000
/// (`+12012000000`, …, `+12012009999`, `+12012010000`, …).
pub fn recipient(i: usize) -> String {
    format!("+1201{:03}{:04}", 200 + i / 10_000, i % 10_000)
}

/// Checks that every recipient up to `n` is a number Rapport accepts.
pub fn check_recipients(n: usize) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let to = recipient(i);
        domain::E164::parse(&to, "US")
            .map_err(|e| anyhow::anyhow!("{to} is not a valid number: {e:?}"))?;
        // One per exchange (and the last) is enough: only the exchange changes validity.
        i = if i + 10_000 < n {
            i + 10_000
        } else if i + 1 < n {
            n - 1
        } else {
            n
        };
    }
    Ok(())
}

/// A `staff_message` due now, to `to`, through `channel`.
pub fn staff_message(
    org: &Organization,
    channel: Option<ChannelId>,
    to: &str,
    key: &str,
    body: String,
) -> OutboundMessage {
    let now = Timestamp::now();
    OutboundMessage {
        id: MessageId::new(),
        org_id: org.id,
        channel_id: channel,
        patient_id: None,
        appointment_id: None,
        to: to.into(),
        kind: "staff_message".into(),
        programme: "staff".into(),
        segments: u32::try_from(domain::message_body::segments(&body).segments).unwrap_or(u32::MAX),
        body,
        dedupe_key: key.into(),
        state: MessageState::Queued.as_str().into(),
        not_before: now,
        urgent: false,
        attempts: 0,
        provider_message_id: None,
        reason: None,
        error_code: None,
        created_at: now,
        updated_at: now,
        attempted_at: None,
    }
}

/// Writes `messages` through the store's `enqueue`, `parallel` at a time.
pub async fn enqueue_all(
    store: &Arc<dyn AppStore>,
    messages: Vec<OutboundMessage>,
    parallel: usize,
) -> anyhow::Result<()> {
    let messages = Arc::new(messages);
    let mut tasks = tokio::task::JoinSet::new();
    let parallel = parallel.max(1);
    for lane in 0..parallel {
        let store = store.clone();
        let messages = messages.clone();
        tasks.spawn(async move {
            for m in messages.iter().skip(lane).step_by(parallel) {
                store.enqueue(m).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
