//! Channels, the outbox (claims leased inside `BEGIN IMMEDIATE`), inbound messages and the
//! consent ledger.

use crate::{SqliteStore, db, instant, micros, touched};
use async_trait::async_trait;
use domain::ids::{ChannelId, ConsentEventId, InboundId, MessageId};
use domain::{AppointmentId, OrgId, PatientId};
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use store::{
    Channel, ChannelStore, ConsentEvent, ConsentStore, Enqueued, InboundMessage, InboundStore,
    OutboundMessage, OutboxStore, Page, PageRequest, Received, StateChange, StoreError,
    StoreResult,
};
use uuid::Uuid;

fn opt_instant(v: Option<i64>) -> StoreResult<Option<Timestamp>> {
    v.map(instant).transpose()
}

fn channel(row: SqliteRow) -> StoreResult<Channel> {
    let settings: String = row.try_get("settings").map_err(db)?;
    Ok(Channel {
        id: ChannelId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        kind: row.try_get("kind").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        account_sid: row.try_get("account_sid").map_err(db)?,
        auth_token_env: row.try_get("auth_token_env").map_err(db)?,
        auth_token_sealed: row.try_get("auth_token_sealed").map_err(db)?,
        from_number: row.try_get("from_number").map_err(db)?,
        messaging_service_sid: row.try_get("messaging_service_sid").map_err(db)?,
        api_base: row.try_get("api_base").map_err(db)?,
        settings: crate::from_doc(&settings)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl ChannelStore for SqliteStore {
    async fn insert_channel(&self, c: &Channel) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO channels (id, org_id, kind, name, account_sid, auth_token_env, auth_token_sealed, from_number, messaging_service_sid, api_base, settings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.0)
        .bind(c.org_id.0)
        .bind(&c.kind)
        .bind(&c.name)
        .bind(&c.account_sid)
        .bind(&c.auth_token_env)
        .bind(&c.auth_token_sealed)
        .bind(&c.from_number)
        .bind(&c.messaging_service_sid)
        .bind(&c.api_base)
        .bind(crate::to_doc(&c.settings))
        .bind(micros(c.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update_channel(&self, c: &Channel) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE channels SET name = ?, account_sid = ?, auth_token_env = ?, auth_token_sealed = ?, from_number = ?, messaging_service_sid = ?, api_base = ?, settings = ? WHERE org_id = ? AND id = ?",
        )
        .bind(&c.name)
        .bind(&c.account_sid)
        .bind(&c.auth_token_env)
        .bind(&c.auth_token_sealed)
        .bind(&c.from_number)
        .bind(&c.messaging_service_sid)
        .bind(&c.api_base)
        .bind(crate::to_doc(&c.settings))
        .bind(c.org_id.0)
        .bind(c.id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Channel> {
        let row = sqlx::query("SELECT * FROM channels WHERE id = ?")
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        channel(row)
    }

    async fn channels(&self, org: OrgId) -> StoreResult<Vec<Channel>> {
        let rows = sqlx::query("SELECT * FROM channels WHERE org_id = ? ORDER BY id")
            .bind(org.0)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(channel).collect()
    }
}

fn outbound(row: SqliteRow) -> StoreResult<OutboundMessage> {
    let segments: i64 = row.try_get("segments").map_err(db)?;
    let attempts: i64 = row.try_get("attempts").map_err(db)?;
    let error_code: Option<i64> = row.try_get("error_code").map_err(db)?;
    Ok(OutboundMessage {
        id: MessageId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        channel_id: row
            .try_get::<Option<Uuid>, _>("channel_id")
            .map_err(db)?
            .map(ChannelId),
        patient_id: row
            .try_get::<Option<Uuid>, _>("patient_id")
            .map_err(db)?
            .map(PatientId),
        appointment_id: row
            .try_get::<Option<Uuid>, _>("appointment_id")
            .map_err(db)?
            .map(AppointmentId),
        to: row.try_get("to_number").map_err(db)?,
        kind: row.try_get("kind").map_err(db)?,
        programme: row.try_get("programme").map_err(db)?,
        body: row.try_get("body").map_err(db)?,
        segments: u32::try_from(segments).unwrap_or(u32::MAX),
        dedupe_key: row.try_get("dedupe_key").map_err(db)?,
        state: row.try_get("state").map_err(db)?,
        not_before: instant(row.try_get("not_before").map_err(db)?)?,
        urgent: row.try_get("urgent").map_err(db)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        provider_message_id: row.try_get("provider_message_id").map_err(db)?,
        reason: row.try_get("reason").map_err(db)?,
        error_code: error_code.and_then(|c| u32::try_from(c).ok()),
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
        updated_at: instant(row.try_get("updated_at").map_err(db)?)?,
        attempted_at: opt_instant(row.try_get("attempted_at").map_err(db)?)?,
    })
}

/// One compare-and-set state change inside the caller's write transaction.
async fn apply_change(conn: &mut sqlx::SqliteConnection, c: &StateChange) -> StoreResult<bool> {
    let mut q = QueryBuilder::<Sqlite>::new("UPDATE outbound_messages SET state = ");
    q.push_bind(&c.to)
        .push(", updated_at = ")
        .push_bind(micros(c.at))
        .push(", lease_owner = NULL, lease_until = NULL");
    if let Some(p) = &c.provider_message_id {
        q.push(", provider_message_id = ").push_bind(p);
    }
    if let Some(channel) = c.channel_id {
        q.push(", channel_id = ").push_bind(channel.0);
    }
    if let Some(r) = &c.reason {
        q.push(", reason = ").push_bind(r);
    }
    if let Some(code) = c.error_code {
        q.push(", error_code = ").push_bind(i64::from(code));
    }
    if let Some(t) = c.not_before {
        q.push(", not_before = ").push_bind(micros(t));
    }
    if c.count_attempt {
        q.push(", attempts = attempts + 1, attempted_at = ")
            .push_bind(micros(c.at));
    }
    q.push(" WHERE id = ")
        .push_bind(c.id.0)
        .push(" AND state = ")
        .push_bind(&c.from)
        .push(" RETURNING org_id, to_number");
    let Some(row) = q.build().fetch_optional(&mut *conn).await.map_err(db)? else {
        return Ok(false);
    };
    if c.touch_conversation {
        let org: Uuid = row.try_get("org_id").map_err(db)?;
        let phone: String = row.try_get("to_number").map_err(db)?;
        sqlx::query(
            "INSERT INTO conversations (id, org_id, phone, status, attention, last_message_at, created_at) VALUES (?, ?, ?, 'closed', NULL, ?, ?) \
             ON CONFLICT (org_id, phone) DO UPDATE SET \
               last_message_at = MAX(conversations.last_message_at, excluded.last_message_at)",
        )
        .bind(domain::ids::ConversationId::new().0)
        .bind(org)
        .bind(phone)
        .bind(micros(c.at))
        .bind(micros(c.at))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(true)
}

/// Many compare-and-set changes to distinct rows in one statement: the changes go in as
/// one JSON array (ids in hex, as the ids are stored as 16-byte blobs), a field left `None`
/// keeping its value as `apply_change` leaves it out; then one upsert of the conversations
/// to touch. Row by row, each change cost a statement of its own (~70 µs of the writer's
/// time, most of a batch's commit).
async fn apply_changes(
    conn: &mut sqlx::SqliteConnection,
    cs: &[StateChange],
) -> StoreResult<Vec<bool>> {
    let hex = |id: Uuid| id.simple().to_string();
    let doc: Vec<serde_json::Value> = cs
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": hex(c.id.0),
                "from": c.from,
                "to": c.to,
                "at": micros(c.at),
                "pid": c.provider_message_id,
                "channel": c.channel_id.map(|ch| hex(ch.0)),
                "reason": c.reason,
                "code": c.error_code,
                "not_before": c.not_before.map(micros),
                "attempt": c.count_attempt,
            })
        })
        .collect();
    let rows = sqlx::query(
        "UPDATE outbound_messages AS o SET \
           state = c.to_state, updated_at = c.at, lease_owner = NULL, lease_until = NULL, \
           provider_message_id = COALESCE(c.pid, o.provider_message_id), \
           channel_id = COALESCE(unhex(c.channel), o.channel_id), \
           reason = COALESCE(c.reason, o.reason), \
           error_code = COALESCE(c.code, o.error_code), \
           not_before = COALESCE(c.not_before, o.not_before), \
           attempts = o.attempts + c.attempt, \
           attempted_at = CASE WHEN c.attempt THEN c.at ELSE o.attempted_at END \
         FROM (SELECT unhex(value ->> 'id') AS id, value ->> 'from' AS from_state, \
                      value ->> 'to' AS to_state, value ->> 'at' AS at, value ->> 'pid' AS pid, \
                      value ->> 'channel' AS channel, value ->> 'reason' AS reason, \
                      value ->> 'code' AS code, value ->> 'not_before' AS not_before, \
                      value ->> 'attempt' AS attempt \
               FROM json_each(?)) AS c \
         WHERE o.id = c.id AND o.state = c.from_state \
         RETURNING id, org_id, to_number",
    )
    .bind(serde_json::Value::Array(doc).to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut changed = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        let id: Uuid = r.try_get("id").map_err(db)?;
        let org: Uuid = r.try_get("org_id").map_err(db)?;
        let phone: String = r.try_get("to_number").map_err(db)?;
        changed.insert(id, (org, phone));
    }
    let mut latest: std::collections::HashMap<(Uuid, &str), i64> = std::collections::HashMap::new();
    for c in cs.iter().filter(|c| c.touch_conversation) {
        if let Some((org, phone)) = changed.get(&c.id.0) {
            let e = latest.entry((*org, phone.as_str())).or_insert(micros(c.at));
            *e = (*e).max(micros(c.at));
        }
    }
    if !latest.is_empty() {
        let doc: Vec<serde_json::Value> = latest
            .into_iter()
            .map(|((org, phone), at)| {
                serde_json::json!({
                    "id": hex(domain::ids::ConversationId::new().0),
                    "org": hex(org),
                    "phone": phone,
                    "at": at,
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO conversations (id, org_id, phone, status, attention, last_message_at, created_at) \
             SELECT unhex(value ->> 'id'), unhex(value ->> 'org'), value ->> 'phone', 'closed', NULL, value ->> 'at', value ->> 'at' \
             FROM json_each(?) WHERE true \
             ON CONFLICT (org_id, phone) DO UPDATE SET \
               last_message_at = MAX(conversations.last_message_at, excluded.last_message_at)",
        )
        .bind(serde_json::Value::Array(doc).to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(cs.iter().map(|c| changed.contains_key(&c.id.0)).collect())
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn save_early_status(
        &self,
        provider_message_id: &str,
        status: &str,
        error_code: Option<u32>,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.save_early_status_impl(provider_message_id, status, error_code, at)
            .await
    }

    async fn take_early_statuses(
        &self,
        provider_message_id: &str,
    ) -> StoreResult<Vec<(String, Option<u32>)>> {
        self.take_early_statuses_impl(provider_message_id).await
    }

    async fn enqueue(&self, m: &OutboundMessage) -> StoreResult<Enqueued> {
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO outbound_messages (id, org_id, channel_id, patient_id, appointment_id, to_number, kind, programme, body, segments, dedupe_key, state, not_before, urgent, attempts, provider_message_id, reason, error_code, created_at, updated_at, attempted_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, dedupe_key) DO NOTHING",
        )
        .bind(m.id.0)
        .bind(m.org_id.0)
        .bind(m.channel_id.map(|c| c.0))
        .bind(m.patient_id.map(|p| p.0))
        .bind(m.appointment_id.map(|a| a.0))
        .bind(&m.to)
        .bind(&m.kind)
        .bind(&m.programme)
        .bind(&m.body)
        .bind(i64::from(m.segments))
        .bind(&m.dedupe_key)
        .bind(&m.state)
        .bind(micros(m.not_before))
        .bind(m.urgent)
        .bind(i64::from(m.attempts))
        .bind(&m.provider_message_id)
        .bind(&m.reason)
        .bind(m.error_code.map(i64::from))
        .bind(micros(m.created_at))
        .bind(micros(m.updated_at))
        .bind(m.attempted_at.map(micros))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let result = if inserted.rows_affected() == 1 {
            Enqueued::Inserted(m.id)
        } else {
            let id: Uuid = sqlx::query_scalar(
                "SELECT id FROM outbound_messages WHERE org_id = ? AND dedupe_key = ?",
            )
            .bind(m.org_id.0)
            .bind(&m.dedupe_key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            Enqueued::Duplicate(MessageId(id))
        };
        tx.commit().await.map_err(db)?;
        Ok(result)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        per_org: u32,
        owner: &str,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<OutboundMessage>> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "UPDATE outbound_messages SET lease_owner = ?, lease_until = ? WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT id, not_before, ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY not_before, id) AS turn \
                 FROM outbound_messages \
                 WHERE state IN ('scheduled', 'queued') AND not_before <= ? AND (lease_until IS NULL OR lease_until < ?) \
               ) WHERE turn <= ? ORDER BY turn, not_before LIMIT ?) \
             RETURNING *",
        )
        .bind(owner)
        .bind(micros(lease_until))
        .bind(micros(now))
        .bind(micros(now))
        .bind(i64::from(per_org))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut claimed = rows
            .into_iter()
            .map(outbound)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|m| (m.not_before, m.id));
        Ok(claimed)
    }

    async fn change_state(&self, c: &StateChange) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let applied = apply_change(&mut tx, c).await?;
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }

    async fn change_states(&self, changes: &[StateChange]) -> StoreResult<Vec<bool>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: std::collections::HashSet<Uuid> = changes.iter().map(|c| c.id.0).collect();
        let mut tx = self.write().await?;
        let applied = if ids.len() == changes.len() {
            apply_changes(&mut tx, changes).await?
        } else {
            // One row changed twice: the second change must see the first, so one by one.
            let mut applied = Vec::with_capacity(changes.len());
            for c in changes {
                applied.push(apply_change(&mut tx, c).await?);
            }
            applied
        };
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }

    async fn stuck_sending(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<OutboundMessage>> {
        let rows = sqlx::query("SELECT * FROM outbound_messages WHERE state = 'sending' AND attempted_at < ? ORDER BY attempted_at LIMIT ?")
            .bind(micros(before))
            .bind(i64::from(limit))
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(outbound).collect()
    }

    async fn outbound(&self, org: OrgId, id: MessageId) -> StoreResult<OutboundMessage> {
        let row = sqlx::query("SELECT * FROM outbound_messages WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        outbound(row)
    }

    async fn outbound_by_provider_id(
        &self,
        provider_message_id: &str,
    ) -> StoreResult<OutboundMessage> {
        let row = sqlx::query("SELECT * FROM outbound_messages WHERE provider_message_id = ?")
            .bind(provider_message_id)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        outbound(row)
    }

    async fn outbound_for_patient(
        &self,
        org: OrgId,
        patient: PatientId,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboundMessage>> {
        let after = page.after.as_ref().map(|c| c.id).unwrap_or(Uuid::nil());
        let rows = sqlx::query("SELECT * FROM outbound_messages WHERE org_id = ? AND patient_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(org.0)
            .bind(patient.0)
            .bind(after)
            .bind(page.fetch())
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| outbound(r).map(|m| (String::new(), m.id.0, m)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    async fn sent_to_number(
        &self,
        org: OrgId,
        to: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<(Timestamp, String)>> {
        let rows = sqlx::query(
            "SELECT attempted_at, kind FROM outbound_messages WHERE org_id = ? AND to_number = ? AND attempted_at >= ? AND attempted_at < ? AND state IN ('sending', 'sent', 'delivered', 'undelivered')",
        )
        .bind(org.0)
        .bind(to)
        .bind(micros(since))
        .bind(micros(until))
        .fetch_all(self.read())
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    instant(r.try_get("attempted_at").map_err(db)?)?,
                    r.try_get("kind").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn sent_to_numbers(
        &self,
        org: OrgId,
        numbers: &[String],
        since: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<(String, Timestamp, String)>> {
        let rows = sqlx::query(
            "SELECT to_number, attempted_at, kind FROM outbound_messages WHERE org_id = ? AND to_number IN (SELECT value FROM json_each(?)) AND attempted_at >= ? AND attempted_at < ? AND state IN ('sending', 'sent', 'delivered', 'undelivered')",
        )
        .bind(org.0)
        .bind(crate::to_doc(&numbers))
        .bind(micros(since))
        .bind(micros(until))
        .fetch_all(self.read())
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("to_number").map_err(db)?,
                    instant(r.try_get("attempted_at").map_err(db)?)?,
                    r.try_get("kind").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn consent_of_numbers(
        &self,
        org: OrgId,
        numbers: &[String],
    ) -> StoreResult<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT phone, scope, status FROM consent_state WHERE org_id = ? AND phone IN (SELECT value FROM json_each(?)) ORDER BY phone, scope",
        )
        .bind(org.0)
        .bind(crate::to_doc(&numbers))
        .fetch_all(self.read())
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("phone").map_err(db)?,
                    r.try_get("scope").map_err(db)?,
                    r.try_get("status").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn dedupe_keys_taken(&self, org: OrgId, keys: &[String]) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT dedupe_key FROM outbound_messages WHERE org_id = ? AND dedupe_key IN (SELECT value FROM json_each(?))",
        )
        .bind(org.0)
        .bind(crate::to_doc(&keys))
        .fetch_all(self.read())
        .await
        .map_err(db)
    }

    async fn sent_by_channel(&self, channel: ChannelId, since: Timestamp) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbound_messages WHERE channel_id = ? AND attempted_at >= ?",
        )
        .bind(channel.0)
        .bind(micros(since))
        .fetch_one(self.read())
        .await
        .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn take_early_statuses_of(
        &self,
        provider_message_ids: &[String],
    ) -> StoreResult<Vec<(String, String, Option<u32>)>> {
        // A reader first: the caller's own commit (the provider ids) came before this, so a
        // report kept before that commit is seen here; usually there is none, and then
        // nothing waits for the writer.
        let ids = crate::to_doc(&provider_message_ids);
        let kept: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM early_status_reports WHERE provider_message_id IN (SELECT value FROM json_each(?)) LIMIT 1",
        )
        .bind(&ids)
        .fetch_optional(self.read())
        .await
        .map_err(db)?;
        if kept.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "DELETE FROM early_status_reports WHERE provider_message_id IN (SELECT value FROM json_each(?)) RETURNING id, provider_message_id, status, error_code",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                let id: Uuid = r.try_get("id").map_err(db)?;
                let code: Option<i64> = r.try_get("error_code").map_err(db)?;
                Ok((
                    id,
                    r.try_get::<String, _>("provider_message_id").map_err(db)?,
                    r.try_get::<String, _>("status").map_err(db)?,
                    code.and_then(|c| u32::try_from(c).ok()),
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|(id, _, _, _)| *id);
        Ok(out.into_iter().map(|(_, sid, s, c)| (sid, s, c)).collect())
    }

    async fn pending_to_number(&self, org: OrgId, to: &str) -> StoreResult<Vec<OutboundMessage>> {
        let rows = sqlx::query("SELECT * FROM outbound_messages WHERE org_id = ? AND to_number = ? AND state IN ('scheduled', 'queued') ORDER BY id")
            .bind(org.0)
            .bind(to)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(outbound).collect()
    }
}

fn inbound(row: SqliteRow) -> StoreResult<InboundMessage> {
    let details: String = row.try_get("details").map_err(db)?;
    Ok(InboundMessage {
        id: InboundId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        channel_id: ChannelId(row.try_get("channel_id").map_err(db)?),
        provider_message_id: row.try_get("provider_message_id").map_err(db)?,
        from: row.try_get("from_number").map_err(db)?,
        to: row.try_get("to_number").map_err(db)?,
        body: row.try_get("body").map_err(db)?,
        details: crate::from_doc(&details)?,
        received_at: instant(row.try_get("received_at").map_err(db)?)?,
        processed_at: opt_instant(row.try_get("processed_at").map_err(db)?)?,
        outcome: row.try_get("outcome").map_err(db)?,
    })
}

/// Inserts one inbound message inside `tx`, or finds the one with its provider id.
#[async_trait]
impl InboundStore for SqliteStore {
    /// One statement for the whole group (rows as a JSON array): a group commit of
    /// hundreds of webhooks is one round trip to SQLite's thread, not one per webhook.
    async fn insert_inbounds(&self, messages: &[InboundMessage]) -> StoreResult<Vec<Received>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let hex = |id: Uuid| id.simple().to_string();
        let doc: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": hex(m.id.0),
                    "org": hex(m.org_id.0),
                    "channel": hex(m.channel_id.0),
                    "sid": m.provider_message_id,
                    "from": m.from,
                    "to": m.to,
                    "body": m.body,
                    "details": m.details.to_string(),
                    "at": micros(m.received_at),
                    "processed": m.processed_at.map(micros),
                    "outcome": m.outcome,
                })
            })
            .collect();
        let mut tx = self.write().await?;
        let inserted: std::collections::HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO inbound_messages (id, org_id, channel_id, provider_message_id, from_number, to_number, body, details, received_at, processed_at, outcome) \
             SELECT unhex(value ->> 'id'), unhex(value ->> 'org'), unhex(value ->> 'channel'), value ->> 'sid', \
                    value ->> 'from', value ->> 'to', value ->> 'body', value ->> 'details', value ->> 'at', \
                    value ->> 'processed', value ->> 'outcome' \
             FROM json_each(?) WHERE true \
             ON CONFLICT (provider_message_id) DO NOTHING RETURNING id",
        )
        .bind(serde_json::Value::Array(doc).to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(if inserted.contains(&m.id.0) {
                Received::Inserted(m.id)
            } else {
                // Stored before (a retried webhook), or earlier in this same group.
                let id: Uuid = sqlx::query_scalar(
                    "SELECT id FROM inbound_messages WHERE provider_message_id = ?",
                )
                .bind(&m.provider_message_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                Received::Duplicate(InboundId(id))
            });
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn insert_inbound(&self, m: &InboundMessage) -> StoreResult<Received> {
        let mut results = self.insert_inbounds(std::slice::from_ref(m)).await?;
        results
            .pop()
            .ok_or_else(|| StoreError::Database("no result for the inbound message".into()))
    }

    async fn unprocessed_inbound(&self, limit: u32) -> StoreResult<Vec<InboundMessage>> {
        let rows = sqlx::query("SELECT * FROM inbound_messages WHERE processed_at IS NULL ORDER BY received_at, id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(inbound).collect()
    }

    async fn mark_inbound_processed(
        &self,
        id: InboundId,
        outcome: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        mark_inbound_in(&mut tx, id, outcome, at).await?;
        tx.commit().await.map_err(db)
    }

    async fn finish_inbound(&self, routed: &[store::RoutedInbound]) -> StoreResult<()> {
        if routed.is_empty() {
            return Ok(());
        }
        // Three statements for the page (rows as JSON arrays), so the one writer is held
        // briefly and webhooks' group commits do not queue behind routing.
        let hex = |id: Uuid| id.simple().to_string();
        let touches: Vec<serde_json::Value> = routed
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": hex(domain::ids::ConversationId::new().0),
                    "org": hex(r.org_id.0),
                    "phone": r.phone,
                    "open": r.needs_team,
                    "attention": r.attention,
                    "at": micros(r.received_at),
                })
            })
            .collect();
        let marks: Vec<serde_json::Value> = routed
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": hex(r.id.0),
                    "outcome": r.outcome,
                    "at": micros(r.processed_at),
                })
            })
            .collect();
        let mut tx = self.write().await?;
        // Rows apply in order, so two messages from one number in a page touch it twice.
        sqlx::query(
            "INSERT INTO conversations (id, org_id, phone, status, attention, last_message_at, created_at) \
             SELECT unhex(value ->> 'id'), unhex(value ->> 'org'), value ->> 'phone', \
                    CASE WHEN value ->> 'open' THEN 'open' ELSE 'closed' END, value ->> 'attention', \
                    value ->> 'at', value ->> 'at' \
             FROM json_each(?) WHERE true \
             ON CONFLICT (org_id, phone) DO UPDATE SET \
               last_message_at = MAX(conversations.last_message_at, excluded.last_message_at), \
               status = CASE WHEN excluded.status = 'open' THEN 'open' ELSE conversations.status END, \
               attention = COALESCE(excluded.attention, conversations.attention)",
        )
        .bind(serde_json::Value::Array(touches).to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let done = sqlx::query(
            "UPDATE inbound_messages AS i SET processed_at = c.at, outcome = c.outcome \
             FROM (SELECT unhex(value ->> 'id') AS id, value ->> 'outcome' AS outcome, value ->> 'at' AS at \
                   FROM json_each(?)) AS c \
             WHERE i.id = c.id",
        )
        .bind(serde_json::Value::Array(marks).to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() != routed.len() as u64 {
            return Err(StoreError::NotFound);
        }
        let events: Vec<store::RecordEvent> = routed
            .iter()
            .flat_map(|r| r.events.iter().cloned())
            .collect();
        crate::ehr::insert_events(&mut tx, &events).await?;
        tx.commit().await.map_err(db)
    }

    async fn inbound_from(
        &self,
        org: OrgId,
        from: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<InboundMessage>> {
        let after = page.after.as_ref().map(|c| c.id).unwrap_or(Uuid::nil());
        let rows = sqlx::query("SELECT * FROM inbound_messages WHERE org_id = ? AND from_number = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(org.0)
            .bind(from)
            .bind(after)
            .bind(page.fetch())
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| inbound(r).map(|m| (String::new(), m.id.0, m)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}

fn consent_event(row: SqliteRow) -> StoreResult<ConsentEvent> {
    Ok(ConsentEvent {
        id: ConsentEventId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        phone: row.try_get("phone").map_err(db)?,
        scope: row.try_get("scope").map_err(db)?,
        status: row.try_get("status").map_err(db)?,
        source: row.try_get("source").map_err(db)?,
        actor: row.try_get("actor").map_err(db)?,
        inbound_id: row
            .try_get::<Option<Uuid>, _>("inbound_id")
            .map_err(db)?
            .map(InboundId),
        recorded_at: instant(row.try_get("recorded_at").map_err(db)?)?,
    })
}

#[async_trait]
impl ConsentStore for SqliteStore {
    async fn record_consent(&self, e: &ConsentEvent) -> StoreResult<()> {
        if e.status != "opted_in" && e.status != "opted_out" {
            return Err(StoreError::Database(format!(
                "unknown consent status {:?}",
                e.status
            )));
        }
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO consent_events (id, org_id, phone, scope, status, source, actor, inbound_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(e.id.0)
            .bind(e.org_id.0)
            .bind(&e.phone)
            .bind(&e.scope)
            .bind(&e.status)
            .bind(&e.source)
            .bind(&e.actor)
            .bind(e.inbound_id.map(|i| i.0))
            .bind(micros(e.recorded_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO consent_state (org_id, phone, scope, status, event_id, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (org_id, phone, scope) DO UPDATE SET status = excluded.status, event_id = excluded.event_id, updated_at = excluded.updated_at",
        )
        .bind(e.org_id.0)
        .bind(&e.phone)
        .bind(&e.scope)
        .bind(&e.status)
        .bind(e.id.0)
        .bind(micros(e.recorded_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn consent_state(&self, org: OrgId, phone: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT scope, status FROM consent_state WHERE org_id = ? AND phone = ? ORDER BY scope",
        )
        .bind(org.0)
        .bind(phone)
        .fetch_all(self.read())
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("scope").map_err(db)?,
                    r.try_get("status").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn consent_history(&self, org: OrgId, phone: &str) -> StoreResult<Vec<ConsentEvent>> {
        let rows =
            sqlx::query("SELECT * FROM consent_events WHERE org_id = ? AND phone = ? ORDER BY id")
                .bind(org.0)
                .bind(phone)
                .fetch_all(self.read())
                .await
                .map_err(db)?;
        rows.into_iter().map(consent_event).collect()
    }
}

fn conversation(row: SqliteRow) -> StoreResult<store::Conversation> {
    Ok(store::Conversation {
        id: domain::ids::ConversationId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        phone: row.try_get("phone").map_err(db)?,
        status: row.try_get("status").map_err(db)?,
        attention: row.try_get("attention").map_err(db)?,
        last_message_at: instant(row.try_get("last_message_at").map_err(db)?)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
    })
}

async fn mark_inbound_in(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    id: InboundId,
    outcome: &str,
    at: Timestamp,
) -> StoreResult<()> {
    let done =
        sqlx::query("UPDATE inbound_messages SET processed_at = ?, outcome = ? WHERE id = ?")
            .bind(micros(at))
            .bind(outcome)
            .bind(id.0)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    touched(done)
}

async fn touch_conversation_in(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    org: OrgId,
    phone: &str,
    at: Timestamp,
    needs_team: bool,
    attention: Option<&str>,
) -> StoreResult<sqlx::sqlite::SqliteRow> {
    sqlx::query(
        "INSERT INTO conversations (id, org_id, phone, status, attention, last_message_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (org_id, phone) DO UPDATE SET \
           last_message_at = MAX(conversations.last_message_at, excluded.last_message_at), \
           status = CASE WHEN ? THEN 'open' ELSE conversations.status END, \
           attention = COALESCE(excluded.attention, conversations.attention) \
         RETURNING *",
    )
    .bind(domain::ids::ConversationId::new().0)
    .bind(org.0)
    .bind(phone)
    .bind(if needs_team { "open" } else { "closed" })
    .bind(attention)
    .bind(micros(at))
    .bind(micros(at))
    .bind(needs_team)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)
}

#[async_trait]
impl store::ConversationStore for SqliteStore {
    async fn touch_conversation(
        &self,
        org: OrgId,
        phone: &str,
        at: Timestamp,
        needs_team: bool,
        attention: Option<&str>,
    ) -> StoreResult<store::Conversation> {
        let mut tx = self.write().await?;
        let row = touch_conversation_in(&mut tx, org, phone, at, needs_team, attention).await?;
        tx.commit().await.map_err(db)?;
        conversation(row)
    }

    async fn conversations(
        &self,
        org: OrgId,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<store::Conversation>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM conversations WHERE org_id = ");
        q.push_bind(org.0);
        if let Some(s) = status {
            q.push(" AND status = ").push_bind(s.to_owned());
        }
        if let Some(c) = &page.after {
            let key: i64 = c
                .key
                .parse()
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND (last_message_at, id) < (")
                .push_bind(key)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY last_message_at DESC, id DESC LIMIT ")
            .push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| conversation(r).map(|c| (micros(c.last_message_at).to_string(), c.id.0, c)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    async fn conversation(
        &self,
        org: OrgId,
        id: domain::ids::ConversationId,
    ) -> StoreResult<store::Conversation> {
        let row = sqlx::query("SELECT * FROM conversations WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        conversation(row)
    }

    async fn set_conversation_status(
        &self,
        org: OrgId,
        id: domain::ids::ConversationId,
        status: &str,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE conversations SET status = ?, attention = CASE WHEN ? = 'closed' THEN NULL ELSE attention END WHERE org_id = ? AND id = ?")
            .bind(status)
            .bind(status)
            .bind(org.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn thread(
        &self,
        org: OrgId,
        phone: &str,
        limit: u32,
    ) -> StoreResult<Vec<store::ThreadItem>> {
        let inbound_rows = sqlx::query("SELECT * FROM inbound_messages WHERE org_id = ? AND from_number = ? ORDER BY received_at DESC LIMIT ?")
            .bind(org.0)
            .bind(phone)
            .bind(i64::from(limit))
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        let outbound_rows = sqlx::query("SELECT * FROM outbound_messages WHERE org_id = ? AND to_number = ? ORDER BY created_at DESC LIMIT ?")
            .bind(org.0)
            .bind(phone)
            .bind(i64::from(limit))
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        let mut items = inbound_rows
            .into_iter()
            .map(|r| inbound(r).map(store::ThreadItem::Inbound))
            .chain(
                outbound_rows
                    .into_iter()
                    .map(|r| outbound(r).map(store::ThreadItem::Outbound)),
            )
            .collect::<StoreResult<Vec<_>>>()?;
        items.sort_by_key(|i| i.at());
        let excess = items.len().saturating_sub(limit as usize);
        Ok(items.split_off(excess))
    }
}

#[async_trait]
impl store::MediaStore for SqliteStore {
    async fn insert_media(&self, m: &store::InboundMedia) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO inbound_media (id, org_id, inbound_id, position, content_type, size, data, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (inbound_id, position) DO NOTHING",
        )
        .bind(m.id.0)
        .bind(m.org_id.0)
        .bind(m.inbound_id.0)
        .bind(i64::from(m.position))
        .bind(&m.content_type)
        .bind(i64::try_from(m.data.len()).unwrap_or(i64::MAX))
        .bind(&m.data)
        .bind(micros(m.fetched_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn media(
        &self,
        org: OrgId,
        id: domain::ids::MediaId,
    ) -> StoreResult<store::InboundMedia> {
        let row = sqlx::query("SELECT * FROM inbound_media WHERE org_id = ? AND id = ?")
            .bind(org.0)
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        let position: i64 = row.try_get("position").map_err(db)?;
        Ok(store::InboundMedia {
            id: domain::ids::MediaId(row.try_get("id").map_err(db)?),
            org_id: OrgId(row.try_get("org_id").map_err(db)?),
            inbound_id: InboundId(row.try_get("inbound_id").map_err(db)?),
            position: u32::try_from(position).unwrap_or(0),
            content_type: row.try_get("content_type").map_err(db)?,
            data: row.try_get("data").map_err(db)?,
            fetched_at: instant(row.try_get("fetched_at").map_err(db)?)?,
        })
    }

    async fn media_of(
        &self,
        org: OrgId,
        inbound: InboundId,
    ) -> StoreResult<Vec<(domain::ids::MediaId, u32, String, u64)>> {
        let rows = sqlx::query("SELECT id, position, content_type, size FROM inbound_media WHERE org_id = ? AND inbound_id = ? ORDER BY position")
            .bind(org.0)
            .bind(inbound.0)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                let position: i64 = r.try_get("position").map_err(db)?;
                let size: i64 = r.try_get("size").map_err(db)?;
                Ok((
                    domain::ids::MediaId(r.try_get("id").map_err(db)?),
                    u32::try_from(position).unwrap_or(0),
                    r.try_get("content_type").map_err(db)?,
                    u64::try_from(size).unwrap_or(0),
                ))
            })
            .collect()
    }
}

impl SqliteStore {
    pub(crate) async fn save_early_status_impl(
        &self,
        sid: &str,
        status: &str,
        code: Option<u32>,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO early_status_reports (id, provider_message_id, status, error_code, received_at) VALUES (?, ?, ?, ?, ?)")
            .bind(Uuid::now_v7())
            .bind(sid)
            .bind(status)
            .bind(code.map(i64::from))
            .bind(micros(at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn take_early_statuses_impl(
        &self,
        sid: &str,
    ) -> StoreResult<Vec<(String, Option<u32>)>> {
        let mut tx = self.write().await?;
        let rows = sqlx::query("DELETE FROM early_status_reports WHERE provider_message_id = ? RETURNING status, error_code, id")
            .bind(sid)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                let id: Uuid = r.try_get("id").map_err(db)?;
                let code: Option<i64> = r.try_get("error_code").map_err(db)?;
                Ok((
                    id,
                    r.try_get::<String, _>("status").map_err(db)?,
                    code.and_then(|c| u32::try_from(c).ok()),
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|(id, _, _)| *id);
        Ok(out.into_iter().map(|(_, s, c)| (s, c)).collect())
    }
}
