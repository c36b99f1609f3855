//! EHR integration: HL7 interfaces and their message log (one commit per received batch),
//! record events written with the records they describe, webhook endpoints, deliveries
//! (claims leased inside `BEGIN IMMEDIATE`), FHIR documents, and patient merges.

use crate::{BATCH_ROWS, SqliteStore, db, from_doc, instant, micros, to_doc, touched};
use crate::{appointments, patients};
use async_trait::async_trait;
use domain::{
    AppointmentId, DeliveryId, DocumentId, EventId, Hl7MessageId, InterfaceId, OrgId, PatientId,
    WebhookId,
};
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use std::collections::HashSet;
use std::sync::Arc;
use store::{
    Delivery, DeliveryState, DeliveryStore, DocumentStore, EventQuery, EventSource, EventStore,
    FhirDocument, Hl7Interface, Hl7Journal, Hl7Message, Hl7MessageQuery, Hl7State, Hl7Store, Page,
    PageRequest, RecordEvent, RecordWrite, Recorded, StoreError, StoreResult, WebhookEndpoint,
    WritesInOrder,
};
use uuid::Uuid;

/// The journal as the store's port.
struct JournalHandle(Arc<crate::journal::Journal>);

#[async_trait]
impl Hl7Journal for JournalHandle {
    fn append(&self, messages: &[Hl7Message]) -> StoreResult<Vec<Recorded>> {
        self.0.append(messages)
    }

    async fn close(&self, timeout: std::time::Duration) -> bool {
        self.0.close(timeout).await
    }
}

fn opt_instant(v: Option<i64>) -> StoreResult<Option<Timestamp>> {
    v.map(instant).transpose()
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The next number of a `seq` column. Only the one writer connection inserts, inside
/// `BEGIN IMMEDIATE`, so nobody else can take it before this transaction commits.
async fn next_seq(conn: &mut SqliteConnection, table: &str) -> StoreResult<i64> {
    sqlx::query_scalar(&format!("SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(db)
}

/// Records each message's result, a statement per 1,000 messages; fails with `NotFound`
/// when one of them is not in the log.
async fn finish_rows(
    conn: &mut SqliteConnection,
    done: &[(Hl7MessageId, Hl7State, serde_json::Value)],
    at: Timestamp,
) -> StoreResult<()> {
    for chunk in done.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE hl7_messages SET state = v.column2, result = v.column3, processed_at = ",
        );
        q.push_bind(micros(at)).push(" FROM (");
        q.push_values(chunk, |mut b, (id, state, result)| {
            b.push_bind(id.0)
                .push_bind(state.as_str())
                .push_bind(to_doc(result));
        });
        q.push(") AS v WHERE hl7_messages.id = v.column1");
        let r = q.build().execute(&mut *conn).await.map_err(db)?;
        if r.rows_affected() != chunk.len() as u64 {
            return Err(StoreError::NotFound);
        }
    }
    Ok(())
}

/// Fails with `NotFound` when the row is not in `org`, else with a conflict on its state:
/// why a transition guarded by the row's state touched nothing.
async fn missing_or_wrong_state(
    conn: &mut SqliteConnection,
    table: &str,
    org: OrgId,
    id: Uuid,
) -> StoreError {
    let exists = sqlx::query_scalar::<_, i64>(&format!(
        "SELECT 1 FROM {table} WHERE org_id = ? AND id = ?"
    ))
    .bind(org.0)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await;
    match exists {
        Ok(Some(_)) => StoreError::Conflict {
            field: "state".into(),
            message: "the record is not in a state that allows this".into(),
        },
        Ok(None) => StoreError::NotFound,
        Err(e) => db(e),
    }
}

fn interface(row: SqliteRow) -> StoreResult<Hl7Interface> {
    let settings: String = row.try_get("settings").map_err(db)?;
    Ok(Hl7Interface {
        id: InterfaceId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        name: row.try_get("name").map_err(db)?,
        sending_application: row.try_get("sending_application").map_err(db)?,
        sending_facility: row.try_get("sending_facility").map_err(db)?,
        settings: from_doc(&settings)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
        updated_at: instant(row.try_get("updated_at").map_err(db)?)?,
    })
}

fn hl7_message(row: SqliteRow) -> StoreResult<Hl7Message> {
    let state: String = row.try_get("state").map_err(db)?;
    let result: Option<String> = row.try_get("result").map_err(db)?;
    Ok(Hl7Message {
        id: Hl7MessageId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        interface_id: row
            .try_get::<Option<Uuid>, _>("interface_id")
            .map_err(db)?
            .map(InterfaceId),
        received_at: instant(row.try_get("received_at").map_err(db)?)?,
        sender: row.try_get("sender").map_err(db)?,
        control_id: row.try_get("control_id").map_err(db)?,
        content_hash: row.try_get("content_hash").map_err(db)?,
        message_type: row.try_get("message_type").map_err(db)?,
        raw: row.try_get("raw").map_err(db)?,
        ack: row.try_get("ack").map_err(db)?,
        ack_code: row.try_get("ack_code").map_err(db)?,
        state: Hl7State::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown HL7 message state {state:?}")))?,
        result: result.as_deref().map(from_doc).transpose()?,
        processed_at: opt_instant(row.try_get("processed_at").map_err(db)?)?,
    })
}

fn event(row: SqliteRow) -> StoreResult<RecordEvent> {
    let changes: String = row.try_get("changes").map_err(db)?;
    Ok(RecordEvent {
        id: EventId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        kind: row.try_get("kind").map_err(db)?,
        patient_id: row
            .try_get::<Option<Uuid>, _>("patient_id")
            .map_err(db)?
            .map(PatientId),
        appointment_id: row
            .try_get::<Option<Uuid>, _>("appointment_id")
            .map_err(db)?
            .map(AppointmentId),
        source: EventSource {
            kind: row.try_get("source_kind").map_err(db)?,
            reference: row.try_get("source_ref").map_err(db)?,
        },
        changes: from_doc(&changes)?,
        at: instant(row.try_get("at").map_err(db)?)?,
    })
}

fn webhook(row: SqliteRow) -> StoreResult<WebhookEndpoint> {
    let events: String = row.try_get("events").map_err(db)?;
    Ok(WebhookEndpoint {
        id: WebhookId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        url: row.try_get("url").map_err(db)?,
        secret_sealed: row.try_get("secret_sealed").map_err(db)?,
        events: from_doc(&events)?,
        active: row.try_get("active").map_err(db)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
    })
}

fn delivery(row: SqliteRow) -> StoreResult<Delivery> {
    let state: String = row.try_get("state").map_err(db)?;
    Ok(Delivery {
        id: DeliveryId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        target_kind: row.try_get("target_kind").map_err(db)?,
        target_id: row.try_get("target_id").map_err(db)?,
        event_id: EventId(row.try_get("event_id").map_err(db)?),
        event_kind: row.try_get("event_kind").map_err(db)?,
        payload: row.try_get("payload").map_err(db)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state {state:?}")))?,
        attempts: count(row.try_get("attempts").map_err(db)?),
        next_attempt_at: instant(row.try_get("next_attempt_at").map_err(db)?)?,
        last_error: row.try_get("last_error").map_err(db)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
        updated_at: instant(row.try_get("updated_at").map_err(db)?)?,
    })
}

fn document(row: SqliteRow) -> StoreResult<FhirDocument> {
    let resource: String = row.try_get("resource").map_err(db)?;
    Ok(FhirDocument {
        id: DocumentId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        resource_type: row.try_get("resource_type").map_err(db)?,
        patient_id: row
            .try_get::<Option<Uuid>, _>("patient_id")
            .map_err(db)?
            .map(PatientId),
        authored: opt_instant(row.try_get("authored").map_err(db)?)?,
        resource: from_doc(&resource)?,
        version: row.try_get("version").map_err(db)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
        updated_at: instant(row.try_get("updated_at").map_err(db)?)?,
    })
}

/// Appends events, numbered after every event already written.
pub(crate) async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[RecordEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut seq = next_seq(conn, "record_events").await?;
    for chunk in events.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO record_events (id, seq, org_id, kind, patient_id, appointment_id, source_kind, source_ref, changes, at, routed) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.id.0)
                .push_bind(seq)
                .push_bind(e.org_id.0)
                .push_bind(e.kind.clone())
                .push_bind(e.patient_id.map(|p| p.0))
                .push_bind(e.appointment_id.map(|a| a.0))
                .push_bind(e.source.kind.clone())
                .push_bind(e.source.reference.clone())
                .push_bind(to_doc(&e.changes))
                .push_bind(micros(e.at))
                .push_bind(false);
            seq += 1;
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

async fn insert_deliveries(
    conn: &mut SqliteConnection,
    deliveries: &[Delivery],
) -> StoreResult<()> {
    for chunk in deliveries.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO deliveries (id, org_id, target_kind, target_id, event_id, event_kind, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, d| {
            b.push_bind(d.id.0)
                .push_bind(d.org_id.0)
                .push_bind(d.target_kind.clone())
                .push_bind(d.target_id)
                .push_bind(d.event_id.0)
                .push_bind(d.event_kind.clone())
                .push_bind(d.payload.clone())
                .push_bind(d.state.as_str())
                .push_bind(i64::from(d.attempts))
                .push_bind(micros(d.next_attempt_at))
                .push_bind(d.last_error.clone())
                .push_bind(micros(d.created_at))
                .push_bind(micros(d.updated_at));
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl Hl7Store for SqliteStore {
    async fn insert_interface(&self, i: &Hl7Interface) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO hl7_interfaces (id, org_id, name, sending_application, sending_facility, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i.id.0)
        .bind(i.org_id.0)
        .bind(&i.name)
        .bind(&i.sending_application)
        .bind(&i.sending_facility)
        .bind(to_doc(&i.settings))
        .bind(micros(i.created_at))
        .bind(micros(i.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update_interface(&self, i: &Hl7Interface) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE hl7_interfaces SET name = ?, sending_application = ?, sending_facility = ?, settings = ?, updated_at = ? WHERE org_id = ? AND id = ?",
        )
        .bind(&i.name)
        .bind(&i.sending_application)
        .bind(&i.sending_facility)
        .bind(to_doc(&i.settings))
        .bind(micros(i.updated_at))
        .bind(i.org_id.0)
        .bind(i.id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn interface(&self, org: OrgId, id: InterfaceId) -> StoreResult<Hl7Interface> {
        let row = sqlx::query("SELECT * FROM hl7_interfaces WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        interface(row)
    }

    async fn interfaces(&self, org: OrgId) -> StoreResult<Vec<Hl7Interface>> {
        let rows = sqlx::query("SELECT * FROM hl7_interfaces WHERE org_id = ? ORDER BY name, id")
            .bind(org.0)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(interface).collect()
    }

    async fn all_interfaces(&self) -> StoreResult<Vec<Hl7Interface>> {
        let rows = sqlx::query("SELECT * FROM hl7_interfaces ORDER BY org_id, name, id")
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(interface).collect()
    }

    async fn record_hl7_messages(&self, messages: &[Hl7Message]) -> StoreResult<Vec<Recorded>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // The whole group commit is one command to the writer's thread (the messages'
        // senders are waiting for it). Each row's seq is the table's highest before this
        // statement plus its place in the batch: SQLite reads the SELECT's rows, the
        // subquery included, before it inserts any of them, as the SELECT reads the table
        // it inserts into.
        let mut q = SqliteStore::one_command();
        for (c, chunk) in messages.chunks(BATCH_ROWS).enumerate() {
            if c > 0 {
                q.push("; ");
            }
            q.push(
                "INSERT INTO hl7_messages (id, seq, org_id, interface_id, received_at, sender, control_id, content_hash, message_type, raw, ack, ack_code, state, result, processed_at) \
                 SELECT column1, (SELECT COALESCE(MAX(seq), 0) FROM hl7_messages) + column2, column3, column4, column5, column6, column7, column8, column9, column10, column11, column12, column13, column14, column15 FROM (",
            );
            let mut place = 0i64;
            q.push_values(chunk, |mut b, m| {
                place += 1;
                b.push_bind(m.id.0)
                    .push_bind(place)
                    .push_bind(m.org_id.0)
                    .push_bind(m.interface_id.map(|i| i.0))
                    .push_bind(micros(m.received_at))
                    .push_bind(m.sender.clone())
                    .push_bind(m.control_id.clone())
                    .push_bind(m.content_hash.clone())
                    .push_bind(m.message_type.clone())
                    .push_bind(m.raw.clone())
                    .push_bind(m.ack.clone())
                    .push_bind(m.ack_code.clone())
                    .push_bind(m.state.as_str())
                    .push_bind(m.result.as_ref().map(to_doc))
                    .push_bind(m.processed_at.map(micros));
            });
            // A row whose key is taken (stored before, or earlier in this very batch) is
            // skipped; RETURNING names the rows that were stored. (`WHERE true` tells the
            // parser the ON CONFLICT belongs to the INSERT.)
            q.push(
                ") WHERE true ON CONFLICT (org_id, sender, control_id, content_hash) DO NOTHING RETURNING id; ",
            );
            // Then, before the commit, each skipped row's original and its reply, so
            // that a duplicate's answer is known once the command has succeeded.
            q.push("SELECT h.id, h.ack, v.column1 FROM hl7_messages h JOIN (");
            q.push_values(chunk, |mut b, m| {
                b.push_bind(m.id.0)
                    .push_bind(m.org_id.0)
                    .push_bind(m.sender.clone())
                    .push_bind(m.control_id.clone())
                    .push_bind(m.content_hash.clone());
            });
            q.push(
                ") AS v ON h.org_id = v.column2 AND h.sender = v.column3 AND h.control_id = v.column4 AND h.content_hash = v.column5",
            );
        }
        // Rows of one column are the stored ids; of three, a duplicate's original.
        let mut stored = HashSet::with_capacity(messages.len());
        let mut originals = std::collections::HashMap::new();
        for r in self.write_in_one_command(q).await? {
            if r.len() == 1 {
                stored.insert(r.try_get::<Uuid, _>(0).map_err(db)?);
            } else {
                let original: Uuid = r.try_get(0).map_err(db)?;
                let ack: String = r.try_get(1).map_err(db)?;
                let duplicate: Uuid = r.try_get(2).map_err(db)?;
                originals.insert(duplicate, (original, ack));
            }
        }
        messages
            .iter()
            .map(|m| {
                if stored.contains(&m.id.0) {
                    return Ok(Recorded::Stored);
                }
                let (original, ack) = originals.remove(&m.id.0).ok_or_else(|| {
                    StoreError::Database("an HL7 message was neither stored nor a duplicate".into())
                })?;
                if original == m.id.0 {
                    // Recorded before under its own id (moved again from the journal).
                    return Ok(Recorded::Stored);
                }
                Ok(Recorded::Duplicate {
                    original: Hl7MessageId(original),
                    ack,
                })
            })
            .collect()
    }

    async fn pending_hl7_messages(&self, limit: u32) -> StoreResult<Vec<Hl7Message>> {
        let rows =
            sqlx::query("SELECT * FROM hl7_messages WHERE state = 'pending' ORDER BY seq LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(self.read())
                .await
                .map_err(db)?;
        rows.into_iter().map(hl7_message).collect()
    }

    async fn finish_hl7_message(
        &self,
        id: Hl7MessageId,
        state: Hl7State,
        result: &serde_json::Value,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE hl7_messages SET state = ?, result = ?, processed_at = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(to_doc(result))
        .bind(micros(at))
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn finish_hl7_messages(
        &self,
        done: &[(Hl7MessageId, Hl7State, serde_json::Value)],
        at: Timestamp,
    ) -> StoreResult<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        finish_rows(&mut tx, done, at).await?;
        tx.commit().await.map_err(db)
    }

    async fn apply_hl7_page(
        &self,
        writes: &[RecordWrite],
        events: &[RecordEvent],
        done: &[(Hl7MessageId, Hl7State, serde_json::Value)],
        at: Timestamp,
    ) -> StoreResult<()> {
        let order = WritesInOrder::of(writes);
        let mut tx = self.write().await?;
        patients::insert_rows(&mut tx, &order.new_patients).await?;
        for p in order.changed_patients {
            patients::update_row(&mut tx, p).await?;
        }
        appointments::insert_rows(&mut tx, &order.new_appointments).await?;
        for a in order.changed_appointments {
            appointments::update_row(&mut tx, a).await?;
        }
        insert_events(&mut tx, events).await?;
        finish_rows(&mut tx, done, at).await?;
        tx.commit().await.map_err(db)
    }

    async fn retry_hl7_message(&self, org: OrgId, id: Hl7MessageId) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE hl7_messages SET state = 'pending', result = NULL, processed_at = NULL WHERE org_id = ? AND id = ? AND state = 'failed'",
        )
        .bind(org.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(missing_or_wrong_state(&mut tx, "hl7_messages", org, id.0).await);
        }
        tx.commit().await.map_err(db)
    }

    async fn open_hl7_journal(
        &self,
        moved: Arc<dyn Fn() + Send + Sync>,
    ) -> StoreResult<Option<Arc<dyn Hl7Journal>>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let journal = crate::journal::Journal::open(self, path, moved).await?;
        Ok(Some(Arc::new(JournalHandle(journal))))
    }

    async fn hl7_message(&self, org: OrgId, id: Hl7MessageId) -> StoreResult<Hl7Message> {
        let row = sqlx::query("SELECT * FROM hl7_messages WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        hl7_message(row)
    }

    async fn search_hl7_messages(
        &self,
        org: OrgId,
        query: &Hl7MessageQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Hl7Message>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM hl7_messages WHERE org_id = ");
        q.push_bind(org.0);
        if let Some(c) = &query.control_id {
            q.push(" AND control_id = ").push_bind(c.clone());
        }
        if let Some(t) = &query.message_type {
            q.push(" AND message_type = ").push_bind(t.clone());
        }
        if let Some(s) = query.state {
            q.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(i) = query.interface_id {
            q.push(" AND interface_id = ").push_bind(i.0);
        }
        if let Some(from) = query.from {
            q.push(" AND received_at >= ").push_bind(micros(from));
        }
        if let Some(to) = query.to {
            q.push(" AND received_at < ").push_bind(micros(to));
        }
        if let Some(text) = query.contains.as_deref().filter(|t| !t.is_empty()) {
            // Both BLOBs: instr compares bytes, whatever the message's encoding.
            q.push(" AND instr(raw, ")
                .push_bind(text.as_bytes().to_vec())
                .push(") > 0");
        }
        if let Some(c) = &page.after {
            let key: i64 = c
                .key
                .parse()
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND (received_at, id) < (")
                .push_bind(key)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY received_at DESC, id DESC LIMIT ")
            .push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| hl7_message(r).map(|m| (micros(m.received_at).to_string(), m.id.0, m)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}

/// The JSON text of a value as serde writes it, for `json_set` into a stored document.
fn json_text<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Database("expected a JSON string".into())),
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn write_with_events(
        &self,
        writes: &[RecordWrite],
        events: &[RecordEvent],
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for w in writes {
            match w {
                RecordWrite::InsertPatient(p) => {
                    patients::insert_rows(&mut tx, std::slice::from_ref(p)).await?
                }
                RecordWrite::UpdatePatient(p) => patients::update_row(&mut tx, p).await?,
                RecordWrite::InsertAppointment(a) => {
                    appointments::insert_rows(&mut tx, std::slice::from_ref(a)).await?
                }
                RecordWrite::UpdateAppointment(a) => appointments::update_row(&mut tx, a).await?,
            }
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(db)
    }

    async fn append_events(&self, events: &[RecordEvent]) -> StoreResult<()> {
        let mut tx = self.write().await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(db)
    }

    async fn events(
        &self,
        org: OrgId,
        query: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<RecordEvent>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM record_events WHERE org_id = ");
        q.push_bind(org.0);
        if let Some(p) = query.patient_id {
            q.push(" AND patient_id = ").push_bind(p.0);
        }
        if let Some(a) = query.appointment_id {
            q.push(" AND appointment_id = ").push_bind(a.0);
        }
        if let Some(k) = &query.kind {
            q.push(" AND kind = ").push_bind(k.clone());
        }
        if let Some(c) = &page.after {
            let key: i64 = c
                .key
                .parse()
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND seq > ").push_bind(key);
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(db)?;
                event(r).map(|e| (seq.to_string(), e.id.0, e))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    async fn unrouted_events(&self, limit: u32) -> StoreResult<Vec<RecordEvent>> {
        let rows = sqlx::query("SELECT * FROM record_events WHERE NOT routed ORDER BY seq LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(event).collect()
    }

    async fn route_events(&self, events: &[EventId], deliveries: &[Delivery]) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for chunk in events.chunks(BATCH_ROWS) {
            let mut q =
                QueryBuilder::<Sqlite>::new("UPDATE record_events SET routed = TRUE WHERE id IN (");
            let mut ids = q.separated(", ");
            for e in chunk {
                ids.push_bind(e.0);
            }
            q.push(")");
            q.build().execute(&mut *tx).await.map_err(db)?;
        }
        insert_deliveries(&mut tx, deliveries).await?;
        tx.commit().await.map_err(db)
    }

    async fn merge_patients(
        &self,
        org: OrgId,
        survivor: &domain::Patient,
        loser: PatientId,
        events: &[RecordEvent],
    ) -> StoreResult<()> {
        if survivor.org_id != org {
            return Err(StoreError::NotFound);
        }
        if survivor.id == loser {
            return Err(StoreError::Conflict {
                field: "id".into(),
                message: "a patient cannot be merged into itself".into(),
            });
        }
        let already_merged = || StoreError::Conflict {
            field: "merged_into".into(),
            message: "this patient was already merged into another".into(),
        };
        let mut tx = self.write().await?;
        let merged_state = |id: PatientId| {
            sqlx::query_scalar::<_, Option<Uuid>>(
                "SELECT merged_into FROM patients WHERE org_id = ? AND id = ?",
            )
            .bind(org.0)
            .bind(id.0)
        };
        match merged_state(loser)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
        {
            None => return Err(StoreError::NotFound),
            Some(Some(_)) => return Err(already_merged()),
            Some(None) => {}
        }
        // The survivor usually takes over the loser's identifiers (MRNs): free them first.
        sqlx::query("DELETE FROM patient_identifiers WHERE org_id = ? AND patient_id = ?")
            .bind(org.0)
            .bind(loser.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        match merged_state(survivor.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
        {
            None => patients::insert_rows(&mut tx, std::slice::from_ref(survivor)).await?,
            Some(None) => patients::update_row(&mut tx, survivor).await?,
            Some(Some(_)) => return Err(already_merged()),
        }
        let at = survivor.updated_at;
        let survivor_text = survivor.id.0.to_string();
        let at_text = json_text(&at)?;
        sqlx::query(
            "UPDATE appointments SET patient_id = ?, doc = json_set(doc, '$.patient_id', ?, '$.updated_at', ?), updated_at = ?, version = version + 1 WHERE org_id = ? AND patient_id = ?",
        )
        .bind(survivor.id.0)
        .bind(&survivor_text)
        .bind(&at_text)
        .bind(micros(at))
        .bind(org.0)
        .bind(loser.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for table in ["outbound_messages", "fhir_documents"] {
            sqlx::query(&format!(
                "UPDATE {table} SET patient_id = ? WHERE org_id = ? AND patient_id = ?"
            ))
            .bind(survivor.id.0)
            .bind(org.0)
            .bind(loser.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(
            "UPDATE patients SET merged_into = ?, doc = json_set(doc, '$.merged_into', ?, '$.updated_at', ?), updated_at = ?, version = version + 1 WHERE org_id = ? AND id = ?",
        )
        .bind(survivor.id.0)
        .bind(&survivor_text)
        .bind(&at_text)
        .bind(micros(at))
        .bind(org.0)
        .bind(loser.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(db)
    }
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn insert_webhook(&self, w: &WebhookEndpoint) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, org_id, url, secret_sealed, events, active, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(w.id.0)
        .bind(w.org_id.0)
        .bind(&w.url)
        .bind(&w.secret_sealed)
        .bind(to_doc(&w.events))
        .bind(w.active)
        .bind(micros(w.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update_webhook(&self, w: &WebhookEndpoint) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET url = ?, secret_sealed = ?, events = ?, active = ? WHERE org_id = ? AND id = ?",
        )
        .bind(&w.url)
        .bind(&w.secret_sealed)
        .bind(to_doc(&w.events))
        .bind(w.active)
        .bind(w.org_id.0)
        .bind(w.id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<WebhookEndpoint> {
        let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        webhook(row)
    }

    async fn webhooks(&self, org: OrgId) -> StoreResult<Vec<WebhookEndpoint>> {
        let rows = sqlx::query("SELECT * FROM webhook_endpoints WHERE org_id = ? ORDER BY id")
            .bind(org.0)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(webhook).collect()
    }

    async fn active_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>> {
        let rows = sqlx::query("SELECT * FROM webhook_endpoints WHERE active ORDER BY org_id, id")
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(webhook).collect()
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_until = ? WHERE id IN ( \
               SELECT id FROM deliveries \
               WHERE state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?) \
               ORDER BY next_attempt_at, id LIMIT ?) \
             RETURNING *",
        )
        .bind(micros(lease_until))
        .bind(micros(now))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut claimed = rows
            .into_iter()
            .map(delivery)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
        Ok(claimed)
    }

    async fn finish_delivery(
        &self,
        id: DeliveryId,
        state: DeliveryState,
        attempts: u32,
        next_attempt_at: Timestamp,
        last_error: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?, updated_at = ?, lease_until = NULL WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(i64::from(attempts))
        .bind(micros(next_attempt_at))
        .bind(last_error)
        .bind(micros(at))
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn delivery(&self, org: OrgId, id: DeliveryId) -> StoreResult<Delivery> {
        let row = sqlx::query("SELECT * FROM deliveries WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        delivery(row)
    }

    async fn deliveries(
        &self,
        org: OrgId,
        state: Option<DeliveryState>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM deliveries WHERE org_id = ");
        q.push_bind(org.0);
        if let Some(s) = state {
            q.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(c) = &page.after {
            let key: i64 = c
                .key
                .parse()
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND (created_at, id) < (")
                .push_bind(key)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| delivery(r).map(|d| (micros(d.created_at).to_string(), d.id.0, d)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    async fn replay_delivery(&self, org: OrgId, id: DeliveryId, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, lease_until = NULL, updated_at = ? WHERE org_id = ? AND id = ? AND state = 'dead'",
        )
        .bind(micros(now))
        .bind(micros(now))
        .bind(org.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(missing_or_wrong_state(&mut tx, "deliveries", org, id.0).await);
        }
        tx.commit().await.map_err(db)
    }
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn insert_document(&self, d: &FhirDocument) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO fhir_documents (id, org_id, resource_type, patient_id, authored, resource, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
        )
        .bind(d.id.0)
        .bind(d.org_id.0)
        .bind(&d.resource_type)
        .bind(d.patient_id.map(|p| p.0))
        .bind(d.authored.map(micros))
        .bind(to_doc(&d.resource))
        .bind(micros(d.created_at))
        .bind(micros(d.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn document(
        &self,
        org: OrgId,
        resource_type: &str,
        id: DocumentId,
    ) -> StoreResult<FhirDocument> {
        let row = sqlx::query(
            "SELECT * FROM fhir_documents WHERE org_id = ? AND resource_type = ? AND id = ?",
        )
        .bind(org.0)
        .bind(resource_type)
        .bind(id.0)
        .fetch_one(self.read())
        .await
        .map_err(db)?;
        document(row)
    }

    async fn documents(
        &self,
        org: OrgId,
        resource_type: &str,
        patient: Option<PatientId>,
        page: &PageRequest,
    ) -> StoreResult<Page<FhirDocument>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM fhir_documents WHERE org_id = ");
        q.push_bind(org.0)
            .push(" AND resource_type = ")
            .push_bind(resource_type.to_owned());
        if let Some(p) = patient {
            q.push(" AND patient_id = ").push_bind(p.0);
        }
        if let Some(c) = &page.after {
            q.push(" AND id > ").push_bind(c.id);
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| document(r).map(|d| (String::new(), d.id.0, d)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}
