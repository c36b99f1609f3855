//! EHR integration: HL7 interfaces and their message log (one commit per received batch),
//! record events written with the records they describe, webhook endpoints, deliveries
//! (claims leased with `FOR UPDATE SKIP LOCKED`, so several nodes claim at once without
//! taking a delivery twice), FHIR documents, and patient merges.

use crate::{PostgresStore, db, instant, pg_instant, rows_per_insert, to_doc, touched};
use crate::{appointments, patients};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::interface::InterfaceSettings;
use domain::{
    AppointmentId, DeliveryId, DocumentId, EventId, Hl7MessageId, InterfaceId, OrgId, PatientId,
    WebhookId,
};
use jiff::Timestamp;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use std::collections::HashSet;
use store::{
    Delivery, DeliveryState, DeliveryStore, DocumentStore, EventQuery, EventSource, EventStore,
    FhirDocument, Hl7Interface, Hl7Message, Hl7MessageQuery, Hl7State, Hl7Store, Page, PageRequest,
    RecordEvent, RecordWrite, Recorded, StoreError, StoreResult, WebhookEndpoint, WritesInOrder,
};
use uuid::Uuid;

fn at(row: &PgRow, column: &str) -> StoreResult<Timestamp> {
    instant(row.try_get(column).map_err(db)?)
}

fn opt_at(row: &PgRow, column: &str) -> StoreResult<Option<Timestamp>> {
    row.try_get::<Option<DateTime<Utc>>, _>(column)
        .map_err(db)?
        .map(instant)
        .transpose()
}

fn cursor_key(key: &str) -> StoreResult<i64> {
    key.parse()
        .map_err(|_| StoreError::Corrupt("cursor".into()))
}

/// Records each message's result in one statement; fails with `NotFound` when one of
/// them is not in the log.
async fn finish_rows(
    conn: &mut PgConnection,
    done: &[(Hl7MessageId, Hl7State, serde_json::Value)],
    at: Timestamp,
) -> StoreResult<()> {
    if done.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = done.iter().map(|(id, _, _)| id.0).collect();
    let states: Vec<&str> = done.iter().map(|(_, s, _)| s.as_str()).collect();
    let results: Vec<Json<&serde_json::Value>> = done.iter().map(|(_, _, r)| to_doc(r)).collect();
    let r = sqlx::query(
        "UPDATE hl7_messages h SET state = v.state, result = v.result, processed_at = $1 FROM unnest($2::uuid[], $3::text[], $4::jsonb[]) AS v (id, state, result) WHERE h.id = v.id",
    )
    .bind(pg_instant(at))
    .bind(ids)
    .bind(states)
    .bind(results)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if r.rows_affected() != done.len() as u64 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Fails with `NotFound` when the row is not in `org`, else with a conflict on its state:
/// why a transition guarded by the row's state touched nothing.
async fn missing_or_wrong_state(
    conn: &mut PgConnection,
    table: &str,
    org: OrgId,
    id: Uuid,
) -> StoreError {
    let exists = sqlx::query_scalar::<_, i32>(&format!(
        "SELECT 1 FROM {table} WHERE org_id = $1 AND id = $2"
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

fn interface(row: PgRow) -> StoreResult<Hl7Interface> {
    let Json(settings) = row
        .try_get::<Json<InterfaceSettings>, _>("settings")
        .map_err(db)?;
    Ok(Hl7Interface {
        id: InterfaceId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        name: row.try_get("name").map_err(db)?,
        sending_application: row.try_get("sending_application").map_err(db)?,
        sending_facility: row.try_get("sending_facility").map_err(db)?,
        settings,
        created_at: at(&row, "created_at")?,
        updated_at: at(&row, "updated_at")?,
    })
}

fn hl7_message(row: PgRow) -> StoreResult<Hl7Message> {
    let state: String = row.try_get("state").map_err(db)?;
    let result = row
        .try_get::<Option<Json<serde_json::Value>>, _>("result")
        .map_err(db)?;
    Ok(Hl7Message {
        id: Hl7MessageId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        interface_id: row
            .try_get::<Option<Uuid>, _>("interface_id")
            .map_err(db)?
            .map(InterfaceId),
        received_at: at(&row, "received_at")?,
        sender: row.try_get("sender").map_err(db)?,
        control_id: row.try_get("control_id").map_err(db)?,
        content_hash: row.try_get("content_hash").map_err(db)?,
        message_type: row.try_get("message_type").map_err(db)?,
        raw: row.try_get("raw").map_err(db)?,
        ack: row.try_get("ack").map_err(db)?,
        ack_code: row.try_get("ack_code").map_err(db)?,
        state: Hl7State::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown HL7 message state {state:?}")))?,
        result: result.map(|Json(v)| v),
        processed_at: opt_at(&row, "processed_at")?,
    })
}

fn event(row: PgRow) -> StoreResult<RecordEvent> {
    let Json(changes) = row
        .try_get::<Json<serde_json::Value>, _>("changes")
        .map_err(db)?;
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
        changes,
        at: at(&row, "at")?,
    })
}

fn webhook(row: PgRow) -> StoreResult<WebhookEndpoint> {
    let Json(events) = row.try_get::<Json<Vec<String>>, _>("events").map_err(db)?;
    Ok(WebhookEndpoint {
        id: WebhookId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        url: row.try_get("url").map_err(db)?,
        secret_sealed: row.try_get("secret_sealed").map_err(db)?,
        events,
        active: row.try_get("active").map_err(db)?,
        created_at: at(&row, "created_at")?,
    })
}

fn delivery(row: PgRow) -> StoreResult<Delivery> {
    let state: String = row.try_get("state").map_err(db)?;
    let attempts: i64 = row.try_get("attempts").map_err(db)?;
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
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: at(&row, "next_attempt_at")?,
        last_error: row.try_get("last_error").map_err(db)?,
        created_at: at(&row, "created_at")?,
        updated_at: at(&row, "updated_at")?,
    })
}

fn document(row: PgRow) -> StoreResult<FhirDocument> {
    let Json(resource) = row
        .try_get::<Json<serde_json::Value>, _>("resource")
        .map_err(db)?;
    Ok(FhirDocument {
        id: DocumentId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        resource_type: row.try_get("resource_type").map_err(db)?,
        patient_id: row
            .try_get::<Option<Uuid>, _>("patient_id")
            .map_err(db)?
            .map(PatientId),
        authored: opt_at(&row, "authored")?,
        resource,
        version: row.try_get("version").map_err(db)?,
        created_at: at(&row, "created_at")?,
        updated_at: at(&row, "updated_at")?,
    })
}

/// Appends events; their identity numbers them after every event inserted before.
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    events: &[RecordEvent],
) -> StoreResult<()> {
    for chunk in events.chunks(rows_per_insert(10)) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO record_events (id, org_id, kind, patient_id, appointment_id, source_kind, source_ref, changes, at, routed) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.id.0)
                .push_bind(e.org_id.0)
                .push_bind(e.kind.as_str())
                .push_bind(e.patient_id.map(|p| p.0))
                .push_bind(e.appointment_id.map(|a| a.0))
                .push_bind(e.source.kind.as_str())
                .push_bind(e.source.reference.as_deref())
                .push_bind(to_doc(&e.changes))
                .push_bind(pg_instant(e.at))
                .push_bind(false);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

async fn insert_deliveries(conn: &mut PgConnection, deliveries: &[Delivery]) -> StoreResult<()> {
    for chunk in deliveries.chunks(rows_per_insert(13)) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO deliveries (id, org_id, target_kind, target_id, event_id, event_kind, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, d| {
            b.push_bind(d.id.0)
                .push_bind(d.org_id.0)
                .push_bind(d.target_kind.as_str())
                .push_bind(d.target_id)
                .push_bind(d.event_id.0)
                .push_bind(d.event_kind.as_str())
                .push_bind(d.payload.as_str())
                .push_bind(d.state.as_str())
                .push_bind(i64::from(d.attempts))
                .push_bind(pg_instant(d.next_attempt_at))
                .push_bind(d.last_error.as_deref())
                .push_bind(pg_instant(d.created_at))
                .push_bind(pg_instant(d.updated_at));
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl Hl7Store for PostgresStore {
    async fn insert_interface(&self, i: &Hl7Interface) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO hl7_interfaces (id, org_id, name, sending_application, sending_facility, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(i.id.0)
        .bind(i.org_id.0)
        .bind(&i.name)
        .bind(&i.sending_application)
        .bind(&i.sending_facility)
        .bind(to_doc(&i.settings))
        .bind(pg_instant(i.created_at))
        .bind(pg_instant(i.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update_interface(&self, i: &Hl7Interface) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE hl7_interfaces SET name = $1, sending_application = $2, sending_facility = $3, settings = $4, updated_at = $5 WHERE org_id = $6 AND id = $7",
        )
        .bind(&i.name)
        .bind(&i.sending_application)
        .bind(&i.sending_facility)
        .bind(to_doc(&i.settings))
        .bind(pg_instant(i.updated_at))
        .bind(i.org_id.0)
        .bind(i.id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn interface(&self, org: OrgId, id: InterfaceId) -> StoreResult<Hl7Interface> {
        let row = sqlx::query("SELECT * FROM hl7_interfaces WHERE org_id = $1 AND id = $2")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        interface(row)
    }

    async fn interfaces(&self, org: OrgId) -> StoreResult<Vec<Hl7Interface>> {
        let rows = sqlx::query("SELECT * FROM hl7_interfaces WHERE org_id = $1 ORDER BY name, id")
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
        let mut tx = self.write().await?;
        let mut stored = HashSet::with_capacity(messages.len());
        for chunk in messages.chunks(rows_per_insert(14)) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO hl7_messages (id, org_id, interface_id, received_at, sender, control_id, content_hash, message_type, raw, ack, ack_code, state, result, processed_at) ",
            );
            q.push_values(chunk, |mut b, m| {
                b.push_bind(m.id.0)
                    .push_bind(m.org_id.0)
                    .push_bind(m.interface_id.map(|i| i.0))
                    .push_bind(pg_instant(m.received_at))
                    .push_bind(m.sender.as_str())
                    .push_bind(m.control_id.as_str())
                    .push_bind(m.content_hash.as_str())
                    .push_bind(m.message_type.as_str())
                    .push_bind(m.raw.as_slice())
                    .push_bind(m.ack.as_str())
                    .push_bind(m.ack_code.as_str())
                    .push_bind(m.state.as_str())
                    .push_bind(m.result.as_ref().map(to_doc))
                    .push_bind(m.processed_at.map(pg_instant));
            });
            // A row whose key is taken (stored before, or earlier in this very batch) is
            // skipped, after waiting for a concurrent insert of the same key to commit or
            // roll back; RETURNING names the rows that were stored. The identity numbers
            // the rows in the order given.
            q.push(" ON CONFLICT ON CONSTRAINT hl7_messages_duplicate_key DO NOTHING RETURNING id");
            let ids: Vec<Uuid> = q
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            stored.extend(ids);
        }
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            if stored.contains(&m.id.0) {
                out.push(Recorded::Stored);
                continue;
            }
            // The original is committed or ours: this statement's snapshot sees it.
            let (id, ack): (Uuid, String) = sqlx::query_as(
                "SELECT id, ack FROM hl7_messages WHERE org_id = $1 AND sender = $2 AND control_id = $3 AND content_hash = $4",
            )
            .bind(m.org_id.0)
            .bind(&m.sender)
            .bind(&m.control_id)
            .bind(&m.content_hash)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if id == m.id.0 {
                // Recorded before under its own id: recording again changes nothing.
                out.push(Recorded::Stored);
                continue;
            }
            out.push(Recorded::Duplicate {
                original: Hl7MessageId(id),
                ack,
            });
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn pending_hl7_messages(&self, limit: u32) -> StoreResult<Vec<Hl7Message>> {
        let rows =
            sqlx::query("SELECT * FROM hl7_messages WHERE state = 'pending' ORDER BY seq LIMIT $1")
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
            "UPDATE hl7_messages SET state = $1, result = $2, processed_at = $3 WHERE id = $4",
        )
        .bind(state.as_str())
        .bind(to_doc(result))
        .bind(pg_instant(at))
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
        if !order.new_patients.is_empty() {
            patients::insert_rows(&mut tx, &order.new_patients).await?;
        }
        for p in order.changed_patients {
            patients::update_row(&mut tx, p).await?;
        }
        if !order.new_appointments.is_empty() {
            appointments::insert_rows(&mut tx, &order.new_appointments).await?;
        }
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
            "UPDATE hl7_messages SET state = 'pending', result = NULL, processed_at = NULL WHERE org_id = $1 AND id = $2 AND state = 'failed'",
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

    async fn hl7_message(&self, org: OrgId, id: Hl7MessageId) -> StoreResult<Hl7Message> {
        let row = sqlx::query("SELECT * FROM hl7_messages WHERE org_id = $1 AND id = $2")
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM hl7_messages WHERE org_id = ");
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
            q.push(" AND received_at >= ").push_bind(pg_instant(from));
        }
        if let Some(to) = query.to {
            q.push(" AND received_at < ").push_bind(pg_instant(to));
        }
        if let Some(text) = query.contains.as_deref().filter(|t| !t.is_empty()) {
            // Bytes within bytes, whatever the message's encoding.
            q.push(" AND position(")
                .push_bind(text.as_bytes().to_vec())
                .push("::bytea IN raw) > 0");
        }
        if let Some(c) = &page.after {
            let key = cursor_key(&c.key)?;
            let after = Timestamp::from_microsecond(key)
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND (received_at, id) < (")
                .push_bind(pg_instant(after))
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY received_at DESC, id DESC LIMIT ")
            .push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                hl7_message(r).map(|m| (m.received_at.as_microsecond().to_string(), m.id.0, m))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}

#[async_trait]
impl EventStore for PostgresStore {
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM record_events WHERE org_id = ");
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
            q.push(" AND seq > ").push_bind(cursor_key(&c.key)?);
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
        let rows =
            sqlx::query("SELECT * FROM record_events WHERE NOT routed ORDER BY seq LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(self.read())
                .await
                .map_err(db)?;
        rows.into_iter().map(event).collect()
    }

    async fn route_events(&self, events: &[EventId], deliveries: &[Delivery]) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
        sqlx::query("UPDATE record_events SET routed = TRUE WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
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
        // Locks the loser, so that two merges of it cannot both go ahead.
        let loser_state = sqlx::query_scalar::<_, Option<Uuid>>(
            "SELECT merged_into FROM patients WHERE org_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(org.0)
        .bind(loser.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match loser_state {
            None => return Err(StoreError::NotFound),
            Some(Some(_)) => return Err(already_merged()),
            Some(None) => {}
        }
        // The survivor usually takes over the loser's identifiers (MRNs): free them first.
        sqlx::query("DELETE FROM patient_identifiers WHERE org_id = $1 AND patient_id = $2")
            .bind(org.0)
            .bind(loser.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let survivor_state = sqlx::query_scalar::<_, Option<Uuid>>(
            "SELECT merged_into FROM patients WHERE org_id = $1 AND id = $2",
        )
        .bind(org.0)
        .bind(survivor.id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match survivor_state {
            None => patients::insert_rows(&mut tx, std::slice::from_ref(survivor)).await?,
            Some(None) => patients::update_row(&mut tx, survivor).await?,
            Some(Some(_)) => return Err(already_merged()),
        }
        let when = survivor.updated_at;
        sqlx::query(
            "UPDATE appointments SET patient_id = $1, doc = jsonb_set(jsonb_set(doc, '{patient_id}', $2), '{updated_at}', $3), updated_at = $4, version = version + 1 WHERE org_id = $5 AND patient_id = $6",
        )
        .bind(survivor.id.0)
        .bind(Json(survivor.id))
        .bind(Json(when))
        .bind(pg_instant(when))
        .bind(org.0)
        .bind(loser.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for table in ["outbound_messages", "fhir_documents"] {
            sqlx::query(&format!(
                "UPDATE {table} SET patient_id = $1 WHERE org_id = $2 AND patient_id = $3"
            ))
            .bind(survivor.id.0)
            .bind(org.0)
            .bind(loser.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(
            "UPDATE patients SET merged_into = $1, doc = jsonb_set(jsonb_set(doc, '{merged_into}', $2), '{updated_at}', $3), updated_at = $4, version = version + 1 WHERE org_id = $5 AND id = $6",
        )
        .bind(survivor.id.0)
        .bind(Json(survivor.id))
        .bind(Json(when))
        .bind(pg_instant(when))
        .bind(org.0)
        .bind(loser.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(db)
    }
}

/// Leases due deliveries: locks them oldest first, skipping rows another claim holds (it
/// never waits, so claims never deadlock). A row whose claim committed after this
/// statement's snapshot is re-checked on its latest version when locked, and dropped,
/// since its lease is no longer free.
const CLAIM_DELIVERIES: &str = "\
WITH picked AS (
    SELECT id FROM deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
      AND (lease_until IS NULL OR lease_until < $1)
    ORDER BY next_attempt_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET lease_until = $3
FROM picked
WHERE d.id = picked.id
RETURNING d.*";

#[async_trait]
impl DeliveryStore for PostgresStore {
    async fn insert_webhook(&self, w: &WebhookEndpoint) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, org_id, url, secret_sealed, events, active, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(w.id.0)
        .bind(w.org_id.0)
        .bind(&w.url)
        .bind(&w.secret_sealed)
        .bind(to_doc(&w.events))
        .bind(w.active)
        .bind(pg_instant(w.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update_webhook(&self, w: &WebhookEndpoint) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, secret_sealed = $2, events = $3, active = $4 WHERE org_id = $5 AND id = $6",
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
        let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE org_id = $1 AND id = $2")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        webhook(row)
    }

    async fn webhooks(&self, org: OrgId) -> StoreResult<Vec<WebhookEndpoint>> {
        let rows = sqlx::query("SELECT * FROM webhook_endpoints WHERE org_id = $1 ORDER BY id")
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
        let rows = sqlx::query(CLAIM_DELIVERIES)
            .bind(pg_instant(now))
            .bind(i64::from(limit))
            .bind(pg_instant(lease_until))
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
            "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_error = $4, updated_at = $5, lease_until = NULL WHERE id = $6",
        )
        .bind(state.as_str())
        .bind(i64::from(attempts))
        .bind(pg_instant(next_attempt_at))
        .bind(last_error)
        .bind(pg_instant(at))
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn delivery(&self, org: OrgId, id: DeliveryId) -> StoreResult<Delivery> {
        let row = sqlx::query("SELECT * FROM deliveries WHERE org_id = $1 AND id = $2")
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM deliveries WHERE org_id = ");
        q.push_bind(org.0);
        if let Some(s) = state {
            q.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(c) = &page.after {
            let after = Timestamp::from_microsecond(cursor_key(&c.key)?)
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND (created_at, id) < (")
                .push_bind(pg_instant(after))
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| delivery(r).map(|d| (d.created_at.as_microsecond().to_string(), d.id.0, d)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    async fn replay_delivery(&self, org: OrgId, id: DeliveryId, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1, lease_until = NULL, updated_at = $1 WHERE org_id = $2 AND id = $3 AND state = 'dead'",
        )
        .bind(pg_instant(now))
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
impl DocumentStore for PostgresStore {
    async fn insert_document(&self, d: &FhirDocument) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO fhir_documents (id, org_id, resource_type, patient_id, authored, resource, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)",
        )
        .bind(d.id.0)
        .bind(d.org_id.0)
        .bind(&d.resource_type)
        .bind(d.patient_id.map(|p| p.0))
        .bind(d.authored.map(pg_instant))
        .bind(to_doc(&d.resource))
        .bind(pg_instant(d.created_at))
        .bind(pg_instant(d.updated_at))
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
            "SELECT * FROM fhir_documents WHERE org_id = $1 AND resource_type = $2 AND id = $3",
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM fhir_documents WHERE org_id = ");
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
