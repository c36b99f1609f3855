//! Patients: the document, plus index rows for identifiers (unique per authority),
//! phones (E.164) and name words, rewritten on every change.

use crate::{BATCH_ROWS, SqliteStore, db, from_doc, micros, to_doc};
use async_trait::async_trait;
use domain::{OrgId, Patient, PatientId};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use store::{Page, PageRequest, PatientQuery, PatientStore, StoreError, StoreResult};
use uuid::Uuid;

/// A patient as stored: the document, with the version and merge that only the columns
/// keep current.
pub(crate) fn read_patient(
    doc: &str,
    version: i64,
    merged_into: Option<Uuid>,
) -> StoreResult<Patient> {
    let mut p: Patient = from_doc(doc)?;
    p.version = version;
    p.merged_into = merged_into.map(PatientId);
    Ok(p)
}

/// Upper bound of a prefix range: every string that starts with `prefix` sorts below it.
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

pub(crate) fn name_tokens(text: &str) -> Vec<String> {
    text.split([' ', ',', '\t', '-', '\''])
        .map(domain::search_key)
        .filter(|t| !t.is_empty())
        .collect()
}

fn distinct_phones(p: &Patient) -> Vec<&str> {
    let mut phones: Vec<&str> = p
        .phones
        .iter()
        .filter_map(|ph| ph.e164.as_ref().map(|e| e.as_str()))
        .collect();
    phones.sort_unstable();
    phones.dedup();
    phones
}

/// Inserts patients (at version 1, whatever the structs say) with their index rows.
pub(crate) async fn insert_rows(
    conn: &mut SqliteConnection,
    patients: &[Patient],
) -> StoreResult<()> {
    for chunk in patients.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO patients (id, org_id, birth_date, doc, created_at, updated_at, version) ",
        );
        q.push_values(chunk, |mut b, p| {
            b.push_bind(p.id.0)
                .push_bind(p.org_id.0)
                .push_bind(p.birth_date.map(|d| d.to_string()))
                .push_bind(to_doc(p))
                .push_bind(micros(p.created_at))
                .push_bind(micros(p.updated_at))
                .push_bind(1_i64);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
        insert_index_rows(conn, chunk).await?;
    }
    Ok(())
}

async fn insert_index_rows(conn: &mut SqliteConnection, patients: &[Patient]) -> StoreResult<()> {
    let identifiers: Vec<_> = patients
        .iter()
        .flat_map(|p| p.identifiers.iter().map(move |i| (p, i)))
        .collect();
    for chunk in identifiers.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO patient_identifiers (org_id, patient_id, authority, type_code, value) ",
        );
        q.push_values(chunk, |mut b, (p, i)| {
            b.push_bind(p.org_id.0)
                .push_bind(p.id.0)
                .push_bind(&i.authority)
                .push_bind(&i.type_code)
                .push_bind(&i.value);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    let phones: Vec<_> = patients
        .iter()
        .flat_map(|p| distinct_phones(p).into_iter().map(move |e| (p, e)))
        .collect();
    for chunk in phones.chunks(BATCH_ROWS) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO patient_phones (org_id, patient_id, e164) ");
        q.push_values(chunk, |mut b, (p, e)| {
            b.push_bind(p.org_id.0).push_bind(p.id.0).push_bind(*e);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    let keys: Vec<_> = patients
        .iter()
        .flat_map(|p| p.name_keys().into_iter().map(move |k| (p, k)))
        .collect();
    for chunk in keys.chunks(BATCH_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO patient_name_keys (org_id, name_key, patient_id) ",
        );
        q.push_values(chunk, |mut b, (p, k)| {
            b.push_bind(p.org_id.0)
                .push_bind(k.clone())
                .push_bind(p.id.0);
        });
        q.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// Replaces a patient if it is still at the version the struct carries, bumping it, and
/// rewrites its index rows.
pub(crate) async fn update_row(conn: &mut SqliteConnection, p: &Patient) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE patients SET birth_date = ?, doc = ?, updated_at = ?, version = version + 1 WHERE org_id = ? AND id = ? AND version = ?",
    )
    .bind(p.birth_date.map(|d| d.to_string()))
    .bind(to_doc(p))
    .bind(micros(p.updated_at))
    .bind(p.org_id.0)
    .bind(p.id.0)
    .bind(p.version)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(missing_or_stale(conn, "patients", p.org_id, p.id.0).await);
    }
    for table in ["patient_identifiers", "patient_phones", "patient_name_keys"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE patient_id = ?"))
            .bind(p.id.0)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    insert_index_rows(conn, std::slice::from_ref(p)).await
}

/// Why a versioned update of `table` touched no row: the row is not in `org` at all, or
/// someone changed it since it was read.
pub(crate) async fn missing_or_stale(
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
        Ok(Some(_)) => StoreError::VersionMismatch,
        Ok(None) => StoreError::NotFound,
        Err(e) => db(e),
    }
}

#[async_trait]
impl PatientStore for SqliteStore {
    async fn insert_patient(&self, patient: &Patient) -> StoreResult<()> {
        self.insert_patients(std::slice::from_ref(patient)).await
    }

    async fn insert_patients(&self, patients: &[Patient]) -> StoreResult<()> {
        let mut tx = self.write().await?;
        insert_rows(&mut tx, patients).await?;
        tx.commit().await.map_err(db)
    }

    async fn update_patient(&self, p: &Patient) -> StoreResult<()> {
        let mut tx = self.write().await?;
        update_row(&mut tx, p).await?;
        tx.commit().await.map_err(db)
    }

    async fn patient(&self, org: OrgId, id: PatientId) -> StoreResult<Patient> {
        let row = sqlx::query(
            "SELECT doc, version, merged_into FROM patients WHERE org_id = ? AND id = ?",
        )
        .bind(org.0)
        .bind(id.0)
        .fetch_one(self.read())
        .await
        .map_err(db)?;
        read_patient(
            row.try_get("doc").map_err(db)?,
            row.try_get("version").map_err(db)?,
            row.try_get("merged_into").map_err(db)?,
        )
    }

    async fn patients_with_identifiers(
        &self,
        org: OrgId,
        values: &[String],
    ) -> StoreResult<Vec<Patient>> {
        let mut out = Vec::new();
        for chunk in values.chunks(BATCH_ROWS) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT doc, version, merged_into FROM patients WHERE org_id = ",
            );
            q.push_bind(org.0)
                .push(" AND merged_into IS NULL AND id IN (SELECT patient_id FROM patient_identifiers WHERE org_id = ")
                .push_bind(org.0)
                .push(" AND value IN (");
            let mut list = q.separated(", ");
            for v in chunk {
                list.push_bind(v.clone());
            }
            q.push(")) ORDER BY id");
            for r in q.build().fetch_all(self.read()).await.map_err(db)? {
                out.push(read_patient(
                    r.try_get("doc").map_err(db)?,
                    r.try_get("version").map_err(db)?,
                    r.try_get("merged_into").map_err(db)?,
                )?);
            }
        }
        Ok(out)
    }

    async fn search_patients(
        &self,
        org: OrgId,
        query: &PatientQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Patient>> {
        let tokens = query.name.as_deref().map(name_tokens).unwrap_or_default();
        let mut q = QueryBuilder::<Sqlite>::new("");
        match tokens.split_first() {
            Some((first, rest)) => {
                // Driven by the name index, ordered by the matching word; each patient is
                // listed once, under the smallest of its words that matches.
                q.push("SELECT k0.name_key AS sort_key, p.id, p.doc, p.version, p.merged_into FROM patient_name_keys k0 JOIN patients p ON p.org_id = k0.org_id AND p.id = k0.patient_id WHERE k0.org_id = ")
                    .push_bind(org.0)
                    .push(" AND k0.name_key >= ")
                    .push_bind(first.clone())
                    .push(" AND k0.name_key < ")
                    .push_bind(prefix_end(first))
                    .push(" AND NOT EXISTS (SELECT 1 FROM patient_name_keys kd WHERE kd.patient_id = k0.patient_id AND kd.name_key >= ")
                    .push_bind(first.clone())
                    .push(" AND kd.name_key < k0.name_key)");
                for token in rest {
                    q.push(" AND EXISTS (SELECT 1 FROM patient_name_keys k WHERE k.patient_id = k0.patient_id AND k.name_key >= ")
                        .push_bind(token.clone())
                        .push(" AND k.name_key < ")
                        .push_bind(prefix_end(token))
                        .push(")");
                }
                if let Some(c) = &page.after {
                    q.push(" AND (k0.name_key, k0.patient_id) > (")
                        .push_bind(c.key.clone())
                        .push(", ")
                        .push_bind(c.id)
                        .push(")");
                }
            }
            None => {
                q.push("SELECT '' AS sort_key, p.id, p.doc, p.version, p.merged_into FROM patients p WHERE p.org_id = ")
                    .push_bind(org.0);
                if let Some(c) = &page.after {
                    q.push(" AND p.id > ").push_bind(c.id);
                }
            }
        }
        // Merged patients live on in their survivor.
        q.push(" AND p.merged_into IS NULL");
        if let Some(phone) = &query.phone {
            q.push(" AND p.id IN (SELECT patient_id FROM patient_phones WHERE org_id = ")
                .push_bind(org.0)
                .push(" AND e164 = ")
                .push_bind(phone.as_str().to_owned())
                .push(")");
        }
        if let Some(value) = &query.identifier {
            q.push(" AND p.id IN (SELECT patient_id FROM patient_identifiers WHERE org_id = ")
                .push_bind(org.0)
                .push(" AND value = ")
                .push_bind(value.clone());
            if let Some(authority) = &query.identifier_authority {
                q.push(" AND authority = ").push_bind(authority.clone());
            }
            q.push(")");
        }
        if let Some(born) = query.birth_date {
            q.push(" AND p.birth_date = ").push_bind(born.to_string());
        }
        q.push(if tokens.is_empty() {
            " ORDER BY p.id"
        } else {
            " ORDER BY k0.name_key, k0.patient_id"
        });
        q.push(" LIMIT ").push_bind(page.fetch());
        let rows = q.build().fetch_all(self.read()).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let key: String = r.try_get("sort_key").map_err(db)?;
                let id: Uuid = r.try_get("id").map_err(db)?;
                let patient = read_patient(
                    r.try_get("doc").map_err(db)?,
                    r.try_get("version").map_err(db)?,
                    r.try_get("merged_into").map_err(db)?,
                )?;
                Ok((key, id, patient))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}
