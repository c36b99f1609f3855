//! HL7 messages in: every framed message gets exactly one reply, and an accepted message
//! is on disk before its reply leaves (DESIGN §3). Applying it to the records happens
//! just after, in arrival order, by [`Engine::apply_pending_hl7`].

use super::apply::{Applied, ApplyContext, ApplyError};
use super::hl7_map::{self, Mapped, Refusal};
use super::hl7_page::PageRecords;
use crate::{Engine, EngineError};
use domain::interface::InterfaceSettings;
use domain::{Hl7MessageId, OrgId, Organization};
use hl7::Message;
use hl7::ack::{AckCode, AckError};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use store::{EventSource, Hl7Interface, Hl7Message, Hl7State, Recorded, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

/// Most messages committed together.
const GROUP_COMMIT_MAX: usize = 512;
/// Most messages the applier takes at once.
const APPLY_PAGE: u32 = 256;
/// How long the applier lets messages gather after a page that was not full.
const APPLY_GATHER: Duration = Duration::from_millis(20);
/// How long the interface list is trusted before it is read again.
const INTERFACES_TTL: Duration = Duration::from_secs(5);

type Pending = (Hl7Message, oneshot::Sender<Result<Recorded, String>>);

/// Receives HL7 frames (from the MLLP listener) for every organisation.
pub struct Hl7Receiver {
    engine: Arc<Engine>,
    interfaces: RwLock<Option<(Instant, u64, Arc<Routing>)>>,
    writer: mpsc::Sender<Pending>,
    counter: AtomicU64,
    warned_no_interface: std::sync::atomic::AtomicBool,
}

/// Who a message belongs to.
struct Routing {
    interfaces: Vec<Hl7Interface>,
    /// The organisation that takes messages when no interface is configured at all.
    only_org: Option<OrgId>,
}

/// The reply to one frame, and whether it is worth telling the applier.
pub struct Reply {
    pub text: String,
    pub stored: bool,
}

impl Hl7Receiver {
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Pending>(4 * GROUP_COMMIT_MAX);
        tokio::spawn(group_commit(engine.clone(), rx));
        Arc::new(Self {
            engine,
            interfaces: RwLock::new(None),
            writer: tx,
            counter: AtomicU64::new(0),
            warned_no_interface: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Forgets the cached interfaces (after one is created or changed).
    pub fn refresh(&self) {
        *self.interfaces.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn routing(&self) -> Result<Arc<Routing>, EngineError> {
        let epoch = self.engine.hl7_routing_epoch.load(Ordering::Relaxed);
        if let Some((at, seen, routing)) = self
            .interfaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < INTERFACES_TTL
            && *seen == epoch
        {
            return Ok(routing.clone());
        }
        let interfaces = self.engine.store.all_interfaces().await?;
        let only_org = if interfaces.is_empty() {
            let orgs = self.engine.store.organizations().await?;
            (orgs.len() == 1).then(|| orgs[0].id)
        } else {
            None
        };
        let routing = Arc::new(Routing {
            interfaces,
            only_org,
        });
        *self.interfaces.write().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), epoch, routing.clone()));
        Ok(routing)
    }

    /// A reply control id: unique per process run and short enough for MSH-10 (20).
    fn control_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let t = self.engine.clock.now().as_millisecond() as u64;
        format!("R{}{}", base36(t), base36(n))
    }

    fn timestamp(&self) -> String {
        self.engine
            .clock
            .now()
            .strftime("%Y%m%d%H%M%S+0000")
            .to_string()
    }

    /// One frame in (a message or a batch), exactly one reply out; accepted messages are
    /// stored by the receiver's group commit before the reply.
    pub async fn receive(&self, frame: &[u8]) -> Reply {
        self.receive_into(frame, &GroupCommit(self)).await
    }

    /// As [`Hl7Receiver::receive`], storing accepted messages through `sink`.
    pub(crate) async fn receive_into(&self, frame: &[u8], sink: &impl RowSink) -> Reply {
        if hl7::batch::is_batch(frame) {
            return self.receive_batch(frame, sink).await;
        }
        self.receive_message(frame, sink).await
    }

    async fn receive_batch(&self, frame: &[u8], sink: &impl RowSink) -> Reply {
        let batch = match hl7::batch::split(frame) {
            Ok(b) => b,
            Err(e) => {
                return Reply {
                    text: self.unparseable(&e.to_string()),
                    stored: false,
                };
            }
        };
        let mut acks = Vec::with_capacity(batch.messages.len());
        let mut stored = false;
        for message in &batch.messages {
            let reply = self.receive_message(message, sink).await;
            stored |= reply.stored;
            acks.push(reply.text);
        }
        // A batch is answered with a batch of replies (HL7 v2 batch protocol).
        let reference = batch
            .batch_header
            .and_then(|h| {
                String::from_utf8_lossy(h)
                    .split('|')
                    .nth(10)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut text = format!(
            "BHS|^~\\&|RAPPORT|RAPPORT|||{}||||{}|{}\r",
            self.timestamp(),
            self.control_id(),
            hl7::escape(&reference, &hl7::Separators::default())
        );
        for ack in &acks {
            text.push_str(ack.trim_end_matches('\r'));
            text.push('\r');
        }
        text.push_str(&format!("BTS|{}\r", acks.len()));
        Reply { text, stored }
    }

    fn unparseable(&self, why: &str) -> String {
        hl7::ack::build_for_unparseable(
            AckCode::AE,
            &self.control_id(),
            &self.timestamp(),
            &AckError {
                segment: "MSH".into(),
                sequence: 1,
                field: None,
                component: None,
                code: 100,
                severity: 'E',
                message: format!("the message could not be read: {why}"),
            },
        )
    }

    async fn receive_message(&self, bytes: &[u8], sink: &impl RowSink) -> Reply {
        let message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "HL7 frame could not be parsed; answered AE");
                return Reply {
                    text: self.unparseable(&e.to_string()),
                    stored: false,
                };
            }
        };
        let enhanced = !message.msh().field(15).is_empty();
        let (accept, error, reject) = if enhanced {
            (AckCode::CA, AckCode::CE, AckCode::CR)
        } else {
            (AckCode::AA, AckCode::AE, AckCode::AR)
        };
        let ack = |code: AckCode, errors: &[AckError]| {
            hl7::ack::build(
                &message,
                code,
                &self.control_id(),
                &self.timestamp(),
                errors,
            )
        };
        let app = message.msh().field(3).component(1).text().trim().to_owned();
        let facility = message.msh().field(4).component(1).text().trim().to_owned();

        let routing = match self.routing().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "HL7 interfaces unavailable; answered AR");
                return Reply {
                    text: ack(
                        reject,
                        &[internal_error(
                            "Rapport cannot store messages right now; send again later",
                        )],
                    ),
                    stored: false,
                };
            }
        };
        let Some((org_id, interface)) = route(&routing, &app, &facility) else {
            tracing::warn!(sending_application = %app, sending_facility = %facility, "HL7 message from a sender no interface takes; answered AR");
            return Reply {
                text: ack(
                    reject,
                    &[AckError {
                        segment: "MSH".into(),
                        sequence: 1,
                        field: Some(3),
                        component: None,
                        code: 207,
                        severity: 'E',
                        message:
                            "no interface is configured for this sending application and facility"
                                .into(),
                    }],
                ),
                stored: false,
            };
        };
        if interface.is_none() && !self.warned_no_interface.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "HL7 messages are taken for the only organisation: no interface is configured (warned once)"
            );
        }
        let settings = interface.map(|i| i.settings.clone()).unwrap_or_default();

        let verdict =
            hl7_map::classify(&message).and_then(|kind| hl7_map::map(&message, kind, &settings));
        let (text, state, result) = match verdict {
            Ok((_, warnings)) => (
                ack(accept, &[]),
                Hl7State::Pending,
                json!({ "warnings": warnings }),
            ),
            Err(Refusal {
                reject: r,
                error: e,
            }) => {
                let code = if r { reject } else { error };
                let result = json!({ "errors": [{
                    "segment": e.segment, "field": e.field, "code": e.code, "message": e.message,
                }]});
                (
                    ack(code, std::slice::from_ref(&e)),
                    Hl7State::Rejected,
                    result,
                )
            }
        };
        let ack_code = text
            .split('\r')
            .find(|s| s.starts_with("MSA"))
            .and_then(|s| s.split('|').nth(1))
            .unwrap_or_default()
            .to_owned();
        let row = Hl7Message {
            id: Hl7MessageId::new(),
            org_id,
            interface_id: interface.map(|i| i.id),
            received_at: self.engine.clock.now(),
            sender: format!("{app}|{facility}"),
            control_id: message.msh().field(10).text().trim().to_owned(),
            content_hash: hex(&Sha256::digest(bytes)),
            message_type: format!(
                "{}^{}",
                message.msh().field(9).component(1).text(),
                message.msh().field(9).component(2).text()
            ),
            raw: bytes.to_vec(),
            ack: text.clone(),
            ack_code,
            state,
            result: Some(result),
            processed_at: (state == Hl7State::Rejected).then(|| self.engine.clock.now()),
        };
        let recorded = sink.record(row).await;
        match recorded {
            Ok(Recorded::Stored) => Reply { text, stored: true },
            Ok(Recorded::Duplicate { ack, .. }) => Reply {
                text: ack,
                stored: false,
            },
            Err(e) => {
                // Not stored: refuse, so the sender keeps it and sends it again.
                tracing::error!(error = %e, "HL7 message could not be stored; answered AR");
                Reply {
                    text: ack(
                        reject,
                        &[internal_error(
                            "Rapport could not store the message; send it again later",
                        )],
                    ),
                    stored: false,
                }
            }
        }
    }
}

/// Where accepted messages are stored before their reply.
pub(crate) trait RowSink {
    /// Stores `row` (or finds the original it duplicates) and returns once it is on disk.
    fn record(&self, row: Hl7Message) -> impl std::future::Future<Output = StoreResult<Recorded>>;
}

/// The receiver's own group commit (a task gathering rows from every caller).
struct GroupCommit<'r>(&'r Hl7Receiver);

impl RowSink for GroupCommit<'_> {
    async fn record(&self, row: Hl7Message) -> StoreResult<Recorded> {
        let receiver = self.0;
        let (done_tx, done_rx) = oneshot::channel();
        match receiver.writer.send((row, done_tx)).await {
            Ok(()) => match done_rx.await {
                Ok(r) => r.map_err(StoreError::Unavailable),
                Err(_) => Err(StoreError::Unavailable("the group commit stopped".into())),
            },
            Err(mpsc::error::SendError((row, _))) => {
                record_now(&receiver.engine, std::slice::from_ref(&row))
                    .await
                    .map(|mut v| v.remove(0))
            }
        }
    }
}

/// Stores received messages in the message log directly (one transaction) and wakes the
/// applier when one of them waits for it.
pub(crate) async fn record_now(engine: &Engine, rows: &[Hl7Message]) -> StoreResult<Vec<Recorded>> {
    let recorded = engine.store.record_hl7_messages(rows).await?;
    if rows
        .iter()
        .zip(&recorded)
        .any(|(row, r)| row.state == Hl7State::Pending && *r == Recorded::Stored)
    {
        engine.hl7_ready.notify_one();
    }
    Ok(recorded)
}

fn internal_error(message: &str) -> AckError {
    AckError {
        segment: "MSH".into(),
        sequence: 1,
        field: None,
        component: None,
        code: 207,
        severity: 'E',
        message: message.into(),
    }
}

/// The interface for a sender: the most specific match (application and facility, then
/// either, then a catch-all); with no interfaces at all, the only organisation.
fn route<'r>(
    routing: &'r Routing,
    app: &str,
    facility: &str,
) -> Option<(OrgId, Option<&'r Hl7Interface>)> {
    let eq = |want: &Option<String>, got: &str| {
        want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(got))
    };
    let best = routing
        .interfaces
        .iter()
        .filter(|i| eq(&i.sending_application, app) && eq(&i.sending_facility, facility))
        .max_by_key(|i| {
            (i.sending_application.is_some() as u8) * 2 + i.sending_facility.is_some() as u8
        });
    match best {
        Some(i) => Some((i.org_id, Some(i))),
        None => routing.only_org.map(|o| (o, None)),
    }
}

async fn group_commit(engine: Arc<Engine>, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut drain = |batch: &mut Vec<Pending>| {
            while batch.len() < GROUP_COMMIT_MAX {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        };
        drain(&mut batch);
        if batch.len() > 1 {
            // Several senders are active: let the ones that just got their reply hand
            // in their next message, so they share this commit's fsync. A lone sender
            // (one connection) is never kept waiting.
            tokio::task::yield_now().await;
            drain(&mut batch);
        }
        let rows: Vec<Hl7Message> = batch.iter().map(|(m, _)| m.clone()).collect();
        match record_now(&engine, &rows).await {
            Ok(results) => {
                for ((_, done), r) in batch.into_iter().zip(results) {
                    let _ = done.send(Ok(r));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (_, done) in batch {
                    let _ = done.send(Err(why.clone()));
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Why a stored message's facts cannot be read: the field, and a message for staff.
type Unreadable = (String, String);

/// A stored message's facts, read again (mapping is pure and fast).
fn map_stored(
    ctx: &ApplyContext,
    raw: &[u8],
) -> Result<(Mapped, Vec<domain::ehr::Warning>), Unreadable> {
    let message = Message::parse(raw).map_err(|e| ("MSH".to_owned(), e.to_string()))?;
    hl7_map::classify(&message)
        .and_then(|kind| hl7_map::map(&message, kind, &ctx.settings))
        .map_err(|r| (r.error.segment.clone(), r.error.message))
}

/// A message's result from what applying it did; `Err` when the database failed, so
/// that the page is tried again rather than its messages marked failed.
fn settle(
    row: &Hl7Message,
    outcome: Result<Applied, ApplyError>,
) -> Result<(Hl7MessageId, Hl7State, serde_json::Value), EngineError> {
    let (state, result) = match outcome {
        Ok(applied) => (Hl7State::Applied, applied.to_json()),
        Err(ApplyError::Invalid { field, message }) => (
            Hl7State::Failed,
            json!({ "error": { "field": field, "message": message } }),
        ),
        Err(ApplyError::Engine(EngineError::Store(
            e @ (StoreError::Unavailable(_) | StoreError::Database(_)),
        ))) => return Err(e.into()),
        Err(ApplyError::Engine(e)) => (
            Hl7State::Failed,
            json!({ "error": { "field": null, "message": e.to_string() } }),
        ),
    };
    if state == Hl7State::Failed {
        tracing::warn!(message_id = %row.id, "HL7 message could not be applied; see its processing result");
    }
    Ok((row.id, state, result))
}

impl Engine {
    /// Applies stored messages in arrival order; returns how many were processed.
    ///
    /// Its writes are derived (`store::durability`): the messages are on disk already
    /// and stay pending until their results are recorded, so a power cut can only make
    /// them be applied again, which changes nothing twice. Not waiting for the disk per
    /// transaction is what lets the applier keep up with ingest.
    pub async fn apply_pending_hl7(&self) -> Result<usize, EngineError> {
        store::durability::derived(self.apply_pending_hl7_page()).await
    }

    /// Applies the pending messages one at a time, each change in its own transaction,
    /// as the applier does for merges and refused pages: the reference that tests hold
    /// the page path to.
    #[doc(hidden)]
    pub async fn apply_pending_hl7_one_at_a_time(&self) -> Result<usize, EngineError> {
        store::durability::derived(async {
            let pending = self.store.pending_hl7_messages(APPLY_PAGE).await?;
            let mut orgs = Default::default();
            let mut interfaces = Default::default();
            let mut rows = Vec::with_capacity(pending.len());
            for row in pending {
                let ctx = self.hl7_context(&row, &mut orgs, &mut interfaces).await?;
                rows.push((row, ctx));
            }
            self.apply_hl7_one_by_one(rows).await
        })
        .await
    }

    async fn apply_pending_hl7_page(&self) -> Result<usize, EngineError> {
        let pending = self.store.pending_hl7_messages(APPLY_PAGE).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let mut orgs: std::collections::HashMap<OrgId, Organization> = Default::default();
        let mut interfaces: std::collections::HashMap<domain::InterfaceId, InterfaceSettings> =
            Default::default();
        let mut page = Vec::with_capacity(pending.len());
        for row in pending {
            tokio::task::yield_now().await;
            let ctx = self.hl7_context(&row, &mut orgs, &mut interfaces).await?;
            let mapped = map_stored(&ctx, &row.raw);
            if let Ok((Mapped::Merge(_), _)) = &mapped {
                // A merge moves records between patients: applied alone, after the
                // messages before it and before those after it.
                if page.is_empty() {
                    return self.apply_hl7_one_by_one(vec![(row, ctx)]).await;
                }
                break;
            }
            page.push((row, ctx, mapped));
        }
        let n = page.len();
        let mut records = PageRecords::new();
        let mut by_org: Vec<OrgId> = page.iter().map(|(r, _, _)| r.org_id).collect();
        by_org.sort();
        by_org.dedup();
        for org in by_org {
            let mapped = page
                .iter()
                .filter(|(r, _, _)| r.org_id == org)
                .filter_map(|(_, _, m)| m.as_ref().ok().map(|(m, _)| m));
            PageRecords::load(self, org, mapped, &mut records).await?;
        }
        let mut finished = Vec::with_capacity(n);
        for (row, ctx, mapped) in &page {
            // A page is CPU work with few awaits that wait (as is reading it, above):
            // let the MLLP connections, whose senders wait for their ACK, run between
            // its messages.
            tokio::task::yield_now().await;
            let outcome = match mapped {
                Ok((m, warnings)) => {
                    let mut applied = Applied {
                        warnings: warnings.clone(),
                        ..Default::default()
                    };
                    records
                        .apply(self, ctx, m, &mut applied)
                        .await
                        .map(|()| applied)
                }
                Err((field, message)) => Err(ApplyError::Invalid {
                    field: field.clone(),
                    message: message.clone(),
                }),
            };
            finished.push(settle(row, outcome)?);
        }
        let (writes, events) = records.into_writes();
        match self
            .store
            .apply_hl7_page(&writes, &events, &finished, self.clock.now())
            .await
        {
            Ok(()) => {}
            Err(
                StoreError::VersionMismatch | StoreError::Conflict { .. } | StoreError::NotFound,
            ) => {
                // A record changed meanwhile, or two messages disagree about whose an
                // identifier is: settle each message on its own.
                tracing::info!(messages = n, "HL7 page applied again one message at a time");
                let rows = page.into_iter().map(|(row, ctx, _)| (row, ctx)).collect();
                return self.apply_hl7_one_by_one(rows).await;
            }
            Err(e) => return Err(e.into()),
        }
        if !events.is_empty() {
            self.events_ready.notify_one();
        }
        Ok(n)
    }

    /// Who a stored message belongs to and how its interface reads it.
    async fn hl7_context(
        &self,
        row: &Hl7Message,
        orgs: &mut std::collections::HashMap<OrgId, Organization>,
        interfaces: &mut std::collections::HashMap<domain::InterfaceId, InterfaceSettings>,
    ) -> Result<ApplyContext, EngineError> {
        let org = match orgs.get(&row.org_id) {
            Some(o) => o.clone(),
            None => {
                let o = self.store.organization(row.org_id).await?;
                orgs.insert(row.org_id, o.clone());
                o
            }
        };
        let mut settings = match row.interface_id {
            Some(id) => match interfaces.get(&id) {
                Some(s) => s.clone(),
                None => {
                    let s = self
                        .store
                        .interface(row.org_id, id)
                        .await
                        .map(|i| i.settings)
                        .unwrap_or_default();
                    interfaces.insert(id, s.clone());
                    s
                }
            },
            None => InterfaceSettings::default(),
        };
        if settings.phone_region.is_empty() {
            settings.phone_region = org.phone_region.clone();
        }
        Ok(ApplyContext {
            org,
            source: EventSource {
                kind: "hl7".into(),
                reference: Some(row.id.to_string()),
            },
            settings,
            now: self.clock.now(),
        })
    }

    /// Applies messages one at a time, each change in its own transaction (merges, and
    /// pages whose write was refused); their results are recorded together at the end.
    /// A crash before that applies them again, which changes nothing twice.
    async fn apply_hl7_one_by_one(
        &self,
        rows: Vec<(Hl7Message, ApplyContext)>,
    ) -> Result<usize, EngineError> {
        let n = rows.len();
        let mut finished = Vec::with_capacity(n);
        for (row, ctx) in rows {
            let outcome = self.apply_hl7(&ctx, &row.raw).await;
            finished.push(settle(&row, outcome)?);
        }
        self.store
            .finish_hl7_messages(&finished, self.clock.now())
            .await?;
        if n > 0 {
            self.events_ready.notify_one();
        }
        Ok(n)
    }

    async fn apply_hl7(&self, ctx: &ApplyContext, raw: &[u8]) -> Result<Applied, ApplyError> {
        let (mapped, warnings) = map_stored(ctx, raw)
            .map_err(|(field, message)| ApplyError::Invalid { field, message })?;
        let mut applied = Applied {
            warnings,
            ..Default::default()
        };
        match mapped {
            Mapped::Patient(facts) => {
                self.upsert_patient(ctx, &facts, &mut applied).await?;
            }
            Mapped::Appointment(action, facts) => {
                self.apply_appointment(ctx, Some(action), &facts, &mut applied)
                    .await?;
            }
            Mapped::Merge(pairs) => {
                for pair in pairs {
                    self.merge_patient(ctx, &pair.survivor, &pair.prior, &mut applied)
                        .await?;
                }
            }
        }
        Ok(applied)
    }

    /// Applies HL7 messages as they are stored, until `stop` resolves.
    ///
    /// A page costs about as much to read and write whether it holds one message or
    /// hundreds, so after a page that was not full the applier lets messages gather for
    /// a moment ([`APPLY_GATHER`]) before it takes the next: under load it applies
    /// large pages, and a message waits at most that long for its page.
    pub async fn run_hl7_applier(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let n = match self.apply_pending_hl7().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "applying HL7 messages failed; retrying");
                    0
                }
            };
            if n >= APPLY_PAGE as usize {
                // A backlog must not hold up shutdown.
                if futures::FutureExt::now_or_never(stop.as_mut()).is_some() {
                    return;
                }
                continue;
            }
            if n == 0 {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = self.hl7_ready.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(APPLY_GATHER) => {}
            }
        }
    }
}
