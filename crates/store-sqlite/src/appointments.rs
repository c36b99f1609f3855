//! Appointments: the document, with the columns that schedules are searched by, and
//! their external identifiers (unique per organisation, kind and system).

use crate::patients::missing_or_stale;
use crate::{BATCH_ROWS, SqliteStore, db, from_doc, micros, to_doc};
use async_trait::async_trait;
use domain::{Appointment, AppointmentId, ExternalIdKind, OrgId};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use store::{AppointmentQuery, AppointmentStore, Page, PageRequest, StoreError, StoreResult};
use uuid::Uuid;

/// An appointment as stored: the document, with the version only the column keeps current.
pub(crate) fn read_appointment(doc: &str, version: i64) -> StoreResult<Appointment> {
    let mut a: Appointment = from_doc(doc)?;
    a.version = version;
    Ok(a)
}

fn sort_at(a: &Appointment) -> i64 {
    micros(a.start.unwrap_or(a.created_at))
}

pub(crate) fn kind(k: ExternalIdKind) -> &'static str {
    match k {
        ExternalIdKind::Placer => "placer",
        ExternalIdKind::Filler => "filler",
    }
}

async fn insert_identifiers(
    conn: &mut SqliteConnection,
    appointments: &[Appointment],
) -> StoreResult<()> {
    let ids: Vec<_> = appointments
        .iter()
        .flat_map(|a| a.identifiers.iter().map(move |i| (a, i)))
        .collect();
    for chunk in ids.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO appointment_identifiers (org_id, appointment_id, kind, system, value) ",
        );
        q.push_values(chunk, |mut b, (a, i)| {
            b.push_bind(a.org_id.0)
                .push_bind(a.id.0)
                .push_bind(kind(i.kind))
                .push_bind(&i.system)
                .push_bind(&i.value);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// Inserts appointments (at version 1, whatever the structs say) with their identifiers.
pub(crate) async fn insert_rows(
    conn: &mut SqliteConnection,
    appointments: &[Appointment],
) -> StoreResult<()> {
    for chunk in appointments.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO appointments (id, org_id, patient_id, provider_id, location_id, start_at, sort_at, status, doc, created_at, updated_at, version) ",
        );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(a.id.0)
                .push_bind(a.org_id.0)
                .push_bind(a.patient_id.0)
                .push_bind(a.provider_id.map(|p| p.0))
                .push_bind(a.location_id.map(|l| l.0))
                .push_bind(a.start.map(micros))
                .push_bind(sort_at(a))
                .push_bind(a.status.as_str())
                .push_bind(to_doc(a))
                .push_bind(micros(a.created_at))
                .push_bind(micros(a.updated_at))
                .push_bind(1_i64);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
        insert_identifiers(conn, chunk).await?;
    }
    Ok(())
}

/// Replaces an appointment if it is still at the version the struct carries, bumping it,
/// and rewrites its identifiers.
pub(crate) async fn update_row(conn: &mut SqliteConnection, a: &Appointment) -> StoreResult<()> {
    let done = sqlx::query(
            "UPDATE appointments SET patient_id = ?, provider_id = ?, location_id = ?, start_at = ?, sort_at = ?, status = ?, doc = ?, updated_at = ?, version = version + 1 WHERE org_id = ? AND id = ? AND version = ?",
        )
        .bind(a.patient_id.0)
        .bind(a.provider_id.map(|p| p.0))
        .bind(a.location_id.map(|l| l.0))
        .bind(a.start.map(micros))
        .bind(sort_at(a))
        .bind(a.status.as_str())
        .bind(to_doc(a))
        .bind(micros(a.updated_at))
        .bind(a.org_id.0)
        .bind(a.id.0)
        .bind(a.version)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(missing_or_stale(conn, "appointments", a.org_id, a.id.0).await);
    }
    sqlx::query("DELETE FROM appointment_identifiers WHERE appointment_id = ?")
        .bind(a.id.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    insert_identifiers(conn, std::slice::from_ref(a)).await
}

#[async_trait]
impl AppointmentStore for SqliteStore {
    async fn insert_appointment(&self, a: &Appointment) -> StoreResult<()> {
        self.insert_appointments(std::slice::from_ref(a)).await
    }

    async fn insert_appointments(&self, appointments: &[Appointment]) -> StoreResult<()> {
        let mut tx = self.write().await?;
        insert_rows(&mut tx, appointments).await?;
        tx.commit().await.map_err(db)
    }

    async fn update_appointment(&self, a: &Appointment) -> StoreResult<()> {
        let mut tx = self.write().await?;
        update_row(&mut tx, a).await?;
        tx.commit().await.map_err(db)
    }

    async fn appointments_with_identifiers(
        &self,
        org: OrgId,
        ids: &[domain::ExternalId],
    ) -> StoreResult<Vec<Appointment>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(BATCH_ROWS) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT doc, version FROM appointments WHERE org_id = ",
            );
            q.push_bind(org.0)
                .push(" AND id IN (SELECT appointment_id FROM appointment_identifiers WHERE org_id = ")
                .push_bind(org.0)
                .push(" AND (kind, system, value) IN (");
            q.push_values(chunk, |mut b, i| {
                b.push_bind(kind(i.kind))
                    .push_bind(i.system.clone())
                    .push_bind(i.value.clone());
            });
            q.push(")) ORDER BY id");
            for r in q.build().fetch_all(self.read()).await.map_err(db)? {
                out.push(read_appointment(
                    r.try_get("doc").map_err(db)?,
                    r.try_get("version").map_err(db)?,
                )?);
            }
        }
        Ok(out)
    }

    async fn appointment(&self, org: OrgId, id: AppointmentId) -> StoreResult<Appointment> {
        let (doc, version): (String, i64) =
            sqlx::query_as("SELECT doc, version FROM appointments WHERE org_id = ? AND id = ?")
                .bind(org.0)
                .bind(id.0)
                .fetch_one(self.read())
                .await
                .map_err(db)?;
        read_appointment(&doc, version)
    }

    async fn appointment_by_identifier(
        &self,
        org: OrgId,
        k: ExternalIdKind,
        system: &str,
        value: &str,
    ) -> StoreResult<Appointment> {
        let (doc, version): (String, i64) = sqlx::query_as(
            "SELECT a.doc, a.version FROM appointment_identifiers i JOIN appointments a ON a.id = i.appointment_id WHERE i.org_id = ? AND i.kind = ? AND i.system = ? AND i.value = ?",
        )
        .bind(org.0)
        .bind(kind(k))
        .bind(system)
        .bind(value)
        .fetch_one(self.read())
        .await
        .map_err(db)?;
        read_appointment(&doc, version)
    }

    async fn search_appointments(
        &self,
        org: OrgId,
        query: &AppointmentQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Appointment>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, sort_at, doc, version FROM appointments WHERE org_id = ",
        );
        q.push_bind(org.0);
        if let Some(from) = query.from {
            q.push(" AND start_at >= ").push_bind(micros(from));
        }
        if let Some(to) = query.to {
            q.push(" AND start_at < ").push_bind(micros(to));
        }
        if let Some(p) = query.patient_id {
            q.push(" AND patient_id = ").push_bind(p.0);
        }
        if let Some(p) = query.provider_id {
            q.push(" AND provider_id = ").push_bind(p.0);
        }
        if let Some(l) = query.location_id {
            q.push(" AND location_id = ").push_bind(l.0);
        }
        if !query.statuses.is_empty() {
            q.push(" AND status IN (");
            let mut list = q.separated(", ");
            for s in &query.statuses {
                list.push_bind(s.as_str());
            }
            q.push(")");
        }
        if let Some(c) = &page.after {
            let key: i64 = c
                .key
                .parse()
                .map_err(|_| StoreError::Corrupt("cursor".into()))?;
            q.push(" AND (sort_at, id) > (")
                .push_bind(key)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY sort_at, id LIMIT ")
            .push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let id: Uuid = r.try_get("id").map_err(db)?;
                let key: i64 = r.try_get("sort_at").map_err(db)?;
                let appointment = read_appointment(
                    r.try_get("doc").map_err(db)?,
                    r.try_get("version").map_err(db)?,
                )?;
                Ok((key.to_string(), id, appointment))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}
