//! Events back to the EHR: signed webhooks and, per interface, HL7 over MLLP.
//!
//! Routing turns each new [`RecordEvent`] into one delivery per interested target, in the
//! same transaction that marks the event routed, so nothing is sent twice or forgotten.
//! Sending claims due deliveries with a lease (safe with several nodes), retries with
//! exponential backoff and jitter, and after the last attempt (or a refusal that will not
//! change, such as HTTP 410 or an HL7 `AR`) leaves the delivery on the dead-letter list,
//! from which staff can replay it.
//!
//! Webhook signature: header `Rapport-Signature: t=<unix seconds>,v1=<hex>` where `<hex>`
//! is HMAC-SHA256 over `"<t>.<body>"` with the endpoint's secret. Receivers recompute it
//! and refuse a timestamp older than a few minutes (replays).

use crate::{Engine, EngineError};
use domain::interface::OutboundHl7;
use domain::{DeliveryId, OrgId};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;
use store::{Delivery, DeliveryState, Hl7Interface, RecordEvent, StoreError, WebhookEndpoint};

/// Attempts before a delivery is dead.
pub const MAX_ATTEMPTS: u32 = 10;
const LEASE: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Every event kind Rapport emits now; later work adds confirmation, reschedule and
/// cancel requests, surveys and forms.
pub const EVENT_KINDS: &[&str] = &[
    "appointment.created",
    "appointment.changed",
    "appointment.rescheduled",
    "appointment.status_changed",
    "appointment.cancelled",
    "appointment.no_show",
    "appointment.deleted",
    "appointment.confirmed",
    "appointment.cancel_requested",
    "patient.created",
    "patient.changed",
    "patient.merged",
    "message.received",
    "consent.changed",
];

/// The signature header value for `body` sent at `t`.
pub fn sign(secret: &[u8], t: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Backoff before attempt `attempts + 1`: 10 s doubling to at most an hour, ± 20 %.
pub fn backoff(attempts: u32) -> Duration {
    let base = 10u64.saturating_mul(1u64 << attempts.min(20)).min(3600);
    let jitter = rand::rng().random_range(0.8..1.2);
    Duration::from_secs_f64(base as f64 * jitter)
}

impl Engine {
    /// Turns new events into deliveries; returns how many events were routed.
    pub async fn route_events_step(&self) -> Result<usize, EngineError> {
        let events = self.store.unrouted_events(500).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let webhooks = self.store.active_webhooks().await?;
        let interfaces = self.store.all_interfaces().await?;
        let now = self.clock.now();
        let mut deliveries = Vec::new();
        for event in &events {
            for hook in webhooks.iter().filter(|w| w.org_id == event.org_id) {
                if !hook.events.is_empty() && !hook.events.iter().any(|k| k == &event.kind) {
                    continue;
                }
                deliveries.push(Delivery {
                    id: DeliveryId::new(),
                    org_id: event.org_id,
                    target_kind: "webhook".into(),
                    target_id: hook.id.0,
                    event_id: event.id,
                    event_kind: event.kind.clone(),
                    payload: webhook_body(event),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_attempt_at: now,
                    last_error: None,
                    created_at: now,
                    updated_at: now,
                });
            }
            for interface in interfaces.iter().filter(|i| i.org_id == event.org_id) {
                let Some(outbound) = &interface.settings.outbound else {
                    continue;
                };
                if let Some(payload) = self.hl7_for_event(interface, outbound, event).await? {
                    deliveries.push(Delivery {
                        id: DeliveryId::new(),
                        org_id: event.org_id,
                        target_kind: "hl7".into(),
                        target_id: interface.id.0,
                        event_id: event.id,
                        event_kind: event.kind.clone(),
                        payload,
                        state: DeliveryState::Pending,
                        attempts: 0,
                        next_attempt_at: now,
                        last_error: None,
                        created_at: now,
                        updated_at: now,
                    });
                }
            }
        }
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        self.store.route_events(&ids, &deliveries).await?;
        Ok(events.len())
    }

    /// The HL7 message an event sends back to the EHR, if any: SIU^S14 with the
    /// confirmation when a patient confirms, SIU^S15 when a patient's cancellation is
    /// applied in Rapport. Changes that came from the EHR are never echoed back.
    async fn hl7_for_event(
        &self,
        interface: &Hl7Interface,
        outbound: &OutboundHl7,
        event: &RecordEvent,
    ) -> Result<Option<String>, EngineError> {
        if matches!(event.source.kind.as_str(), "hl7" | "fhir" | "csv") {
            return Ok(None);
        }
        let trigger = match event.kind.as_str() {
            "appointment.confirmed" if outbound.send_confirmations => "S14",
            "appointment.cancelled" if outbound.send_cancellations => "S15",
            _ => return Ok(None),
        };
        let Some(appointment_id) = event.appointment_id else {
            return Ok(None);
        };
        let appointment = match self.store.appointment(event.org_id, appointment_id).await {
            Ok(a) => a,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let patient = self
            .store
            .patient(event.org_id, appointment.patient_id)
            .await?;
        Ok(Some(super::hl7_out::siu(
            interface,
            outbound,
            trigger,
            &appointment,
            &patient,
            event,
        )))
    }

    /// Sends due deliveries; returns how many were attempted.
    pub async fn deliver_step(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let lease_until = now
            .checked_add(LEASE)
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let due = self.store.claim_deliveries(now, lease_until, 50).await?;
        let n = due.len();
        let results = futures::future::join_all(due.iter().map(|d| self.attempt(d))).await;
        for (delivery, outcome) in due.iter().zip(results) {
            let attempts = delivery.attempts + 1;
            let at = self.clock.now();
            let (state, next, error) = match outcome {
                Attempt::Done => (DeliveryState::Delivered, at, None),
                Attempt::Refused(why) => {
                    tracing::error!(delivery = %delivery.id, target = %delivery.target_kind, "delivery refused for good; on the dead-letter list");
                    (DeliveryState::Dead, at, Some(why))
                }
                Attempt::Retry(why) if attempts >= MAX_ATTEMPTS => {
                    tracing::error!(delivery = %delivery.id, target = %delivery.target_kind, "delivery failed {MAX_ATTEMPTS} times; on the dead-letter list");
                    (DeliveryState::Dead, at, Some(why))
                }
                Attempt::Retry(why) => {
                    let wait = backoff(attempts);
                    let next = at.checked_add(wait).unwrap_or(at);
                    (DeliveryState::Pending, next, Some(why))
                }
            };
            self.store
                .finish_delivery(delivery.id, state, attempts, next, error.as_deref(), at)
                .await?;
        }
        Ok(n)
    }

    async fn attempt(&self, delivery: &Delivery) -> Attempt {
        match delivery.target_kind.as_str() {
            "webhook" => {
                let endpoint = match self
                    .store
                    .webhook(delivery.org_id, domain::WebhookId(delivery.target_id))
                    .await
                {
                    Ok(e) => e,
                    Err(StoreError::NotFound) => {
                        return Attempt::Refused("the endpoint no longer exists".into());
                    }
                    Err(e) => return Attempt::Retry(e.to_string()),
                };
                self.post_webhook(&endpoint, delivery).await
            }
            "hl7" => {
                let interface = match self
                    .store
                    .interface(delivery.org_id, domain::InterfaceId(delivery.target_id))
                    .await
                {
                    Ok(i) => i,
                    Err(StoreError::NotFound) => {
                        return Attempt::Refused("the interface no longer exists".into());
                    }
                    Err(e) => return Attempt::Retry(e.to_string()),
                };
                let Some(outbound) = interface.settings.outbound else {
                    return Attempt::Refused("the interface no longer sends HL7 back".into());
                };
                super::hl7_out::send(&outbound.address, &delivery.payload, ACK_TIMEOUT).await
            }
            other => Attempt::Refused(format!("unknown delivery target {other}")),
        }
    }

    async fn post_webhook(&self, endpoint: &WebhookEndpoint, delivery: &Delivery) -> Attempt {
        let secret = match self.sealer.unseal(&endpoint.secret_sealed) {
            Ok(s) => s,
            Err(e) => return Attempt::Retry(format!("the signing secret cannot be opened: {e}")),
        };
        let t = self.clock.now().as_second();
        let signature = sign(secret.as_bytes(), t, &delivery.payload);
        let sent = self
            .http
            .post(&endpoint.url)
            .timeout(HTTP_TIMEOUT)
            .header("content-type", "application/json")
            .header("rapport-signature", signature)
            .header("rapport-event", &delivery.event_kind)
            .header("rapport-delivery", delivery.id.to_string())
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Attempt::Done,
            Ok(r) => {
                let code = r.status().as_u16();
                if matches!(code, 400..=499) && !matches!(code, 408 | 409 | 425 | 429) {
                    Attempt::Refused(format!("the endpoint answered HTTP {code}"))
                } else {
                    Attempt::Retry(format!("the endpoint answered HTTP {code}"))
                }
            }
            Err(e) if e.is_timeout() => {
                Attempt::Retry("the endpoint did not answer in 10 s".into())
            }
            Err(e) if e.is_connect() => Attempt::Retry("the endpoint could not be reached".into()),
            Err(_) => Attempt::Retry("the request to the endpoint failed".into()),
        }
    }

    /// Routes and sends until `stop` resolves.
    pub async fn run_deliveries(
        self: std::sync::Arc<Self>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let routed = self.route_events_step().await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "routing events failed; retrying");
                0
            });
            let sent = self.deliver_step().await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "sending deliveries failed; retrying");
                0
            });
            if routed > 0 || sent > 0 {
                if futures::FutureExt::now_or_never(stop.as_mut()).is_some() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = self.events_ready.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Puts a dead delivery back in the queue.
    pub async fn replay_delivery(&self, org: OrgId, id: DeliveryId) -> Result<(), EngineError> {
        self.store
            .replay_delivery(org, id, self.clock.now())
            .await?;
        self.events_ready.notify_one();
        Ok(())
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Done,
    Retry(String),
    Refused(String),
}

fn webhook_body(event: &RecordEvent) -> String {
    json!({
        "id": event.id,
        "type": event.kind,
        "created_at": event.at,
        "organization_id": event.org_id,
        "data": {
            "patient_id": event.patient_id,
            "appointment_id": event.appointment_id,
            "source": event.source,
            "changes": event.changes,
        },
    })
    .to_string()
}
