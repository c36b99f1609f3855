//! A Twilio-compatible SMS API served on loopback: the real REST protocol, signed status
//! callbacks and inbound webhooks, opt-outs, rate limits and injected faults. Tests,
//! benchmarks and `rapport demo` send to it in place of Twilio.

mod api;
mod connection;
mod error;
mod inbound;
mod ledger;
mod lifecycle;
mod listing;
mod resource;
mod segments;
mod validate;
mod webhooks;

pub use lifecycle::SimStatus;
pub use segments::count_segments;

use connection::{Line, SeverableListener};
use jiff::Timestamp;
use ledger::Ledger;
use lifecycle::{Outcome, Record};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Fault rates, each a probability from 0 to 1, drawn per CreateMessage request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// 429 with code 20429, before anything is created.
    pub error_rate_429: f64,
    /// 500 with code 20500, before anything is created.
    pub error_rate_500: f64,
    /// Holds the request for `timeout_hold`, then drops the connection; nothing is created.
    pub timeout_rate: f64,
    /// Accepts and logs the message (callbacks follow), then drops the connection without
    /// answering: the case the reconciler exists for.
    pub lost_response_rate: f64,
    /// Sent, then undelivered (30003 or 30005).
    pub undelivered_rate: f64,
    /// Queued, then failed without leaving Twilio (30008).
    pub failed_rate: f64,
}

/// How the simulated account behaves; `Default` is a healthy account with 10 ms callbacks.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// CreateMessage requests per second before 429/20429; `None` for no limit.
    pub rate_limit_per_second: Option<f64>,
    /// (queued→sent, sent→delivered).
    pub callback_delays: (Duration, Duration),
    /// The faults at start; change them later with [`SimulatorHandle::set_faults`].
    pub faults: Faults,
    /// Seeds every random draw (faults, outcomes), so a run can be repeated.
    pub seed: u64,
    /// How long a `timeout` fault holds a request: longer than any client waits.
    pub timeout_hold: Duration,
    /// The sender a Messaging Service "picks" when a message names no `From`.
    pub pool_number: String,
    /// Accepted messages remembered; the oldest are forgotten beyond this.
    pub log_capacity: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            account_sid: "ACdeadbeefdeadbeefdeadbeefdeadbeef".to_owned(),
            auth_token: "simulated-auth-token".to_owned(),
            rate_limit_per_second: None,
            callback_delays: (Duration::from_millis(10), Duration::from_millis(10)),
            faults: Faults::default(),
            seed: 0,
            timeout_hold: Duration::from_secs(60),
            pool_number: "+15017122661".to_owned(),
            log_capacity: 250_000,
        }
    }
}

/// An accepted outbound message, as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    pub sid: String,
    pub to: String,
    /// The `From` the client gave; `None` when a Messaging Service chose the sender.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub media_urls: Vec<String>,
    pub status_callback: Option<String>,
    pub accepted_at: Timestamp,
    pub num_segments: u32,
    pub status: SimStatus,
    pub error_code: Option<u32>,
}

/// What a CreateMessage request meets before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFault {
    TooManyRequests,
    ServerError,
    Timeout,
}

struct TokenBucket {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(per_second: f64) -> Self {
        let per_second = per_second.max(0.0);
        Self {
            per_second,
            tokens: per_second.max(1.0),
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let burst = self.per_second.max(1.0);
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// State shared by the handlers, the callback tasks and the handle.
struct Shared {
    config: SimulatorConfig,
    faults: Mutex<Faults>,
    ledger: Mutex<Ledger>,
    rng: Mutex<StdRng>,
    limiter: Option<Mutex<TokenBucket>>,
    http: reqwest::Client,
    stop: watch::Receiver<bool>,
}

/// A poisoned lock only means another request panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    fn draw(&self) -> f64 {
        lock(&self.rng).random::<f64>()
    }

    fn admit(&self) -> bool {
        self.limiter
            .as_ref()
            .is_none_or(|bucket| lock(bucket).take())
    }

    fn draw_request_fault(&self) -> Option<RequestFault> {
        let f = self.faults();
        let total = f.error_rate_429 + f.error_rate_500 + f.timeout_rate;
        if total <= 0.0 {
            return None;
        }
        let x = self.draw();
        if x < f.error_rate_429 {
            Some(RequestFault::TooManyRequests)
        } else if x < f.error_rate_429 + f.error_rate_500 {
            Some(RequestFault::ServerError)
        } else if x < total {
            Some(RequestFault::Timeout)
        } else {
            None
        }
    }

    fn draw_outcome(&self, faults: &Faults) -> Outcome {
        if faults.failed_rate + faults.undelivered_rate <= 0.0 {
            return Outcome::Delivered;
        }
        let x = self.draw();
        if x < faults.failed_rate {
            Outcome::Failed(30008)
        } else if x < faults.failed_rate + faults.undelivered_rate {
            let code = if self.draw() < 0.5 { 30003 } else { 30005 };
            Outcome::Undelivered(code)
        } else {
            Outcome::Delivered
        }
    }

    /// Records a valid message unless its recipient opted out, schedules its callbacks, and
    /// says whether its response is to be lost.
    fn accept(
        self: &Arc<Self>,
        message: validate::NewMessage,
    ) -> Result<(Record, bool), error::TwilioError> {
        let faults = self.faults();
        let record = Record {
            sid: inbound::new_sid(!message.media_urls.is_empty()),
            num_segments: count_segments(&message.body),
            to: message.to,
            from: message.from,
            messaging_service_sid: message.messaging_service_sid,
            body: message.body,
            media_urls: message.media_urls,
            status_callback: message.status_callback,
            accepted_at: Timestamp::now(),
            outcome: self.draw_outcome(&faults),
            delays: self.config.callback_delays,
        };
        {
            let mut ledger = self.ledger();
            if ledger.is_opted_out(&record.to, record.from.as_deref()) {
                return Err(error::TwilioError::unsubscribed());
            }
            ledger.push(record.clone());
        }
        tracing::debug!(sid = %record.sid, "simulator accepted a message");
        webhooks::spawn_status_callbacks(self, &record);
        let lose_response =
            faults.lost_response_rate > 0.0 && self.draw() < faults.lost_response_rate;
        Ok((record, lose_response))
    }
}

fn sim_message(record: &Record, now: Timestamp) -> SimMessage {
    let step = record.step_at(now);
    SimMessage {
        sid: record.sid.clone(),
        to: record.to.clone(),
        from: record.from.clone(),
        messaging_service_sid: record.messaging_service_sid.clone(),
        body: record.body.clone(),
        media_urls: record.media_urls.clone(),
        status_callback: record.status_callback.clone(),
        accepted_at: record.accepted_at,
        num_segments: record.num_segments,
        status: step.status,
        error_code: step.error_code,
    }
}

/// A running simulator; it stops when this is dropped or [`stop`](Self::stop)ped.
pub struct SimulatorHandle {
    base_url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

/// Serves the simulator on `listener` until the returned handle is dropped or stopped.
///
/// Where it departs from Twilio on purpose: every well-formed sender belongs to the account
/// (no 21606), `date_sent` is the acceptance time (so `DateSent` filters find messages still
/// queued), and faults and the rate limit apply to CreateMessage only.
pub async fn start(config: SimulatorConfig, listener: TcpListener) -> SimulatorHandle {
    let addr = listener
        .local_addr()
        .expect("a bound TCP listener knows its address");
    // Bound to every interface, it is still reached most simply on loopback.
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let base_url = format!("http://{}", SocketAddr::new(host, addr.port()));
    let (stop, stopped) = watch::channel(false);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        faults: Mutex::new(config.faults),
        ledger: Mutex::new(Ledger::new(config.log_capacity)),
        rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
        limiter: config
            .rate_limit_per_second
            .map(|rate| Mutex::new(TokenBucket::new(rate))),
        http,
        stop: stopped.clone(),
        config,
    });
    let app = api::router(Arc::clone(&shared)).into_make_service_with_connect_info::<Line>();
    let mut shutdown = stopped;
    let server = tokio::spawn(async move {
        let served = axum::serve(SeverableListener(listener), app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stopped| *stopped).await;
            })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the Twilio simulator stopped serving");
        }
    });
    SimulatorHandle {
        base_url,
        shared,
        stop,
        server: Some(server),
    }
}

impl SimulatorHandle {
    /// `http://127.0.0.1:PORT`: what replaces `https://api.twilio.com`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The CreateMessage/ListMessage URL for the simulated account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url,
            resource::messages_path(&self.shared.config.account_sid)
        )
    }

    pub fn account_sid(&self) -> &str {
        &self.shared.config.account_sid
    }

    pub fn auth_token(&self) -> &str {
        &self.shared.config.auth_token
    }

    /// Every accepted message still remembered, oldest first.
    pub fn log(&self) -> Vec<SimMessage> {
        let now = Timestamp::now();
        self.shared
            .ledger()
            .records()
            .map(|r| sim_message(r, now))
            .collect()
    }

    pub fn message(&self, sid: &str) -> Option<SimMessage> {
        let ledger = self.shared.ledger();
        ledger.by_sid(sid).map(|r| sim_message(r, Timestamp::now()))
    }

    /// Accepted messages to `to` (E.164) still remembered.
    pub fn count_to(&self, to: &str) -> usize {
        self.shared.ledger().count_to(to)
    }

    /// Messages accepted since start, forgotten ones included.
    pub fn accepted_total(&self) -> u64 {
        self.shared.ledger().accepted_total()
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// As if `number` had texted STOP to every sender: sends to it answer 21610.
    pub fn opt_out(&self, number: &str) {
        self.shared.ledger().opt_out(number, None);
    }

    /// As if `number` had texted START to every sender.
    pub fn opt_in(&self, number: &str) {
        self.shared.ledger().opt_in(number, None);
    }

    /// A media URL on the simulator (Basic auth required, as Twilio's are); `name` ending in
    /// `.gif` serves a GIF, anything else a PNG.
    pub fn media_url(&self, name: &str) -> String {
        format!("{}/media/{name}", self.base_url)
    }

    /// The parameters Twilio would post for a text from `from` to `to`; each call has a new
    /// `MessageSid`. `media` is (URL, content type) pairs.
    pub fn inbound_params(
        &self,
        from: &str,
        to: &str,
        body: &str,
        media: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        inbound::params(&self.shared.config.account_sid, from, to, body, media)
    }

    /// POSTs `params` to `url`, signed with the account's Auth Token; answers the HTTP status.
    pub async fn post_webhook(
        &self,
        url: &str,
        params: &[(String, String)],
    ) -> Result<u16, reqwest::Error> {
        let token = params.iter().find(|(k, _)| k == "MessageSid").map_or_else(
            || uuid::Uuid::now_v7().simple().to_string(),
            |(_, v)| v.clone(),
        );
        let response = webhooks::post_signed(
            &self.shared.http,
            &self.shared.config.auth_token,
            url,
            params,
            &token,
        )
        .await?;
        Ok(response.status().as_u16())
    }

    /// A patient texts `body` from `from` to our number `to`, and Twilio forwards it to `url`
    /// as the inbound-message webhook. As Twilio does, a bare STOP (or START) first blocks
    /// (or unblocks) sends from `to` to `from`.
    pub async fn send_inbound(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
        media: &[(&str, &str)],
    ) -> Result<u16, reqwest::Error> {
        match inbound::keyword(body) {
            Some(inbound::Keyword::OptOut) => self.shared.ledger().opt_out(from, Some(to)),
            Some(inbound::Keyword::OptIn) => self.shared.ledger().opt_in(from, Some(to)),
            None => {}
        }
        let params = self.inbound_params(from, to, body, media);
        self.post_webhook(url, &params).await
    }

    /// Stops serving and calling back, and waits for the server to wind down.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
