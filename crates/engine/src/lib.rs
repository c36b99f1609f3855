#![forbid(unsafe_code)]
//! Rapport's application services over the store and the channels: channels and their
//! secrets, the outbox dispatcher and its reconciler, and inbound routing (keywords,
//! consent, required replies).

pub mod channels;
pub mod dispatcher;
pub mod ehr;
pub mod inbound;
pub mod secrets;

pub use secrets::Sealer;

use ::channels::SmsProvider;
use domain::ids::ChannelId;
use domain::{Clock, FieldError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{AppStore, StoreError};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configuration problem an administrator must fix (a missing secret, say).
    #[error("{0}")]
    Config(String),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The URL providers reach us at; status callbacks are built from it.
    pub public_url: String,
    pub provider_timeout: Duration,
    pub dispatch: dispatcher::DispatchConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            provider_timeout: channels::DEFAULT_PROVIDER_TIMEOUT,
            dispatch: dispatcher::DispatchConfig::default(),
        }
    }
}

pub struct Engine {
    pub store: Arc<dyn AppStore>,
    pub clock: Arc<dyn Clock>,
    pub sealer: Sealer,
    pub config: EngineConfig,
    providers: Mutex<HashMap<ChannelId, Arc<dyn SmsProvider>>>,
    /// One SMTP connection pool per e-mail channel.
    mailers: Mutex<HashMap<ChannelId, Arc<dyn ::channels::EmailProvider>>>,
    /// Channels as the webhooks read them, kept for a few seconds (see `webhook_channel`).
    webhook_channels: Mutex<HashMap<ChannelId, (std::time::Instant, Arc<store::Channel>)>>,
    pacing: Mutex<HashMap<ChannelId, dispatcher::Pacer>>,
    /// Woken when an outbound message is written, so the dispatcher need not poll hard.
    pub outbox_ready: Notify,
    /// Woken when an inbound message is stored.
    pub inbound_ready: Notify,
    /// Inbound messages stored so far (the router yields to webhooks while it moves).
    pub(crate) inbound_arrivals: std::sync::atomic::AtomicU64,
    /// Woken when an HL7 message is stored and waits to be applied.
    pub hl7_ready: Notify,
    /// Woken when record events are written (webhooks and HL7 back to the EHR).
    pub events_ready: Notify,
    /// Bumped when HL7 interfaces change, so the MLLP receiver reads them again.
    pub hl7_routing_epoch: std::sync::atomic::AtomicU64,
    /// Set while the MLLP listener refuses every message (its HL7 journal cannot be
    /// used): the node is then not ready (`/readyz`).
    hl7_refusing: std::sync::atomic::AtomicBool,
    /// Fetches inbound MMS media.
    pub(crate) http: reqwest::Client,
    /// Group commit for inbound webhooks (started on first use).
    pub(crate) inbound_writer: std::sync::OnceLock<inbound::WriterHandle>,
}

impl Engine {
    /// Whether the MLLP listener answers every message AR for now (see `ehr::mllp`).
    pub fn hl7_refusing(&self) -> bool {
        self.hl7_refusing.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn set_hl7_refusing(&self, refusing: bool) {
        self.hl7_refusing
            .store(refusing, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn new(
        store: Arc<dyn AppStore>,
        clock: Arc<dyn Clock>,
        sealer: Sealer,
        config: EngineConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            sealer,
            config,
            providers: Mutex::new(HashMap::new()),
            mailers: Mutex::new(HashMap::new()),
            webhook_channels: Mutex::new(HashMap::new()),
            pacing: Mutex::new(HashMap::new()),
            outbox_ready: Notify::new(),
            inbound_ready: Notify::new(),
            inbound_arrivals: std::sync::atomic::AtomicU64::new(0),
            hl7_ready: Notify::new(),
            events_ready: Notify::new(),
            hl7_routing_epoch: std::sync::atomic::AtomicU64::new(0),
            hl7_refusing: std::sync::atomic::AtomicBool::new(false),
            http: reqwest::Client::new(),
            inbound_writer: std::sync::OnceLock::new(),
        })
    }

    /// The channel a webhook names, read from the store at most every few seconds: at
    /// thousands of webhooks a second, one store read each is a good part of their cost.
    /// `fresh` reads it now. What a webhook takes from it cannot go stale in a way that
    /// loses a message: its organisation never changes, and a signature that fails against
    /// a kept copy is checked again against a fresh one (a rotated Auth Token), which the
    /// caller does. Returns the channel and whether it was the kept copy.
    pub async fn webhook_channel(
        &self,
        id: ChannelId,
        fresh: bool,
    ) -> Result<(Arc<store::Channel>, bool), EngineError> {
        const KEEP: Duration = Duration::from_secs(10);
        if !fresh
            && let Some((read_at, channel)) = self
                .webhook_channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
            && read_at.elapsed() < KEEP
        {
            return Ok((channel.clone(), true));
        }
        let channel = Arc::new(self.store.channel(id).await?);
        let mut kept = self
            .webhook_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only channels that exist are kept (an unknown id is a 404 before this); the
        // bound is a backstop.
        if kept.len() >= 1024 {
            kept.clear();
        }
        kept.insert(id, (std::time::Instant::now(), channel.clone()));
        Ok((channel, false))
    }

    /// Replaces the provider of a channel (tests point a channel at a recording provider).
    pub fn set_provider(&self, channel: ChannelId, provider: Arc<dyn SmsProvider>) {
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel, provider);
    }
}
