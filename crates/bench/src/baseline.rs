//! The baseline: the very rows the store writes (patients, patient_identifiers,
//! patient_phones, patient_name_keys; same columns, same values), computed before the
//! clock starts, then written with plain multi-row INSERTs: one transaction per batch,
//! each table in statements of as many rows as the store puts in one.
//!
//! What the store does on top is its domain logic: serialising each patient to its JSON
//! document, deriving the name keys and distinct phones, and converting ids, dates and
//! instants to the database's types. The ratio of the two rates is the cost of that.

use chrono::{DateTime, NaiveDate, Utc};
use domain::Patient;
use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::{PgPool, Postgres, QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

/// Rows per INSERT in the SQLite store (its `BATCH_ROWS`).
const SQLITE_ROWS_PER_INSERT: usize = 1000;

/// Rows per INSERT in the PostgreSQL store: as many as 65,535 bind parameters allow.
const fn pg_rows_per_insert(columns: usize) -> usize {
    u16::MAX as usize / columns
}

pub struct PatientRow<D, T> {
    id: Uuid,
    org: Uuid,
    birth: Option<D>,
    doc: String,
    created: T,
    updated: T,
}

pub struct IdentifierRow {
    org: Uuid,
    patient: Uuid,
    authority: String,
    type_code: String,
    value: String,
}

pub struct PhoneRow {
    org: Uuid,
    patient: Uuid,
    e164: String,
}

pub struct KeyRow {
    org: Uuid,
    key: String,
    patient: Uuid,
}

/// One transaction's worth of rows, in the database's own types.
pub struct Batch<D, T> {
    patients: Vec<PatientRow<D, T>>,
    identifiers: Vec<IdentifierRow>,
    phones: Vec<PhoneRow>,
    keys: Vec<KeyRow>,
}

impl<D, T> Batch<D, T> {
    pub fn patients(&self) -> usize {
        self.patients.len()
    }

    /// Rows in all four tables.
    pub fn rows(&self) -> usize {
        self.patients.len() + self.identifiers.len() + self.phones.len() + self.keys.len()
    }
}

pub type SqliteBatch = Batch<String, i64>;
pub type PgBatch = Batch<NaiveDate, DateTime<Utc>>;

fn prepare<D, T>(
    patients: &[Patient],
    batch: usize,
    date: impl Fn(Date) -> D,
    time: impl Fn(Timestamp) -> T,
) -> Vec<Batch<D, T>> {
    patients
        .chunks(batch)
        .map(|chunk| {
            let mut b = Batch {
                patients: Vec::with_capacity(chunk.len()),
                identifiers: Vec::with_capacity(chunk.len()),
                phones: Vec::with_capacity(chunk.len()),
                keys: Vec::with_capacity(chunk.len() * 4),
            };
            for p in chunk {
                let (org, patient) = (p.org_id.0, p.id.0);
                b.patients.push(PatientRow {
                    id: patient,
                    org,
                    birth: p.birth_date.map(&date),
                    doc: serde_json::to_string(p).expect("a patient always serialises"),
                    created: time(p.created_at),
                    updated: time(p.updated_at),
                });
                b.identifiers
                    .extend(p.identifiers.iter().map(|i| IdentifierRow {
                        org,
                        patient,
                        authority: i.authority.clone(),
                        type_code: i.type_code.clone(),
                        value: i.value.clone(),
                    }));
                let mut phones: Vec<&str> = p
                    .phones
                    .iter()
                    .filter_map(|ph| ph.e164.as_ref().map(|e| e.as_str()))
                    .collect();
                phones.sort_unstable();
                phones.dedup();
                b.phones.extend(phones.into_iter().map(|e| PhoneRow {
                    org,
                    patient,
                    e164: e.to_owned(),
                }));
                b.keys.extend(
                    p.name_keys()
                        .into_iter()
                        .map(|key| KeyRow { org, key, patient }),
                );
            }
            b
        })
        .collect()
}

/// The rows as the SQLite store binds them: dates as `YYYY-MM-DD`, instants as
/// microseconds since the epoch, documents as JSON text.
pub fn prepare_sqlite(patients: &[Patient], batch: usize) -> Vec<SqliteBatch> {
    prepare(patients, batch, |d| d.to_string(), |t| t.as_microsecond())
}

/// The rows as the PostgreSQL store binds them: date, timestamptz, and the document as
/// JSON text cast to jsonb (the server parses it either way).
pub fn prepare_pg(patients: &[Patient], batch: usize) -> Vec<PgBatch> {
    prepare(
        patients,
        batch,
        |d| {
            NaiveDate::from_ymd_opt(
                i32::from(d.year()),
                d.month().unsigned_abs().into(),
                d.day().unsigned_abs().into(),
            )
            .expect("a valid date")
        },
        |t| DateTime::from_timestamp_micros(t.as_microsecond()).expect("within chrono's range"),
    )
}

/// One batch in one `BEGIN IMMEDIATE` transaction, as the SQLite store writes.
pub async fn insert_sqlite(pool: &SqlitePool, b: &SqliteBatch) -> sqlx::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in b.patients.chunks(SQLITE_ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO patients (id, org_id, birth_date, doc, created_at, updated_at, version) ",
        );
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.id)
                .push_bind(r.org)
                .push_bind(r.birth.as_deref())
                .push_bind(r.doc.as_str())
                .push_bind(r.created)
                .push_bind(r.updated)
                .push_bind(1_i64);
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in b.identifiers.chunks(SQLITE_ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO patient_identifiers (org_id, patient_id, authority, type_code, value) ",
        );
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.org)
                .push_bind(r.patient)
                .push_bind(r.authority.as_str())
                .push_bind(r.type_code.as_str())
                .push_bind(r.value.as_str());
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in b.phones.chunks(SQLITE_ROWS_PER_INSERT) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO patient_phones (org_id, patient_id, e164) ");
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.org)
                .push_bind(r.patient)
                .push_bind(r.e164.as_str());
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in b.keys.chunks(SQLITE_ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO patient_name_keys (org_id, name_key, patient_id) ",
        );
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.org)
                .push_bind(r.key.as_str())
                .push_bind(r.patient);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// One batch in one transaction, as the PostgreSQL store writes.
pub async fn insert_pg(pool: &PgPool, b: &PgBatch) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for chunk in b.patients.chunks(pg_rows_per_insert(7)) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO patients (id, org_id, birth_date, doc, created_at, updated_at, version) ",
        );
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.id)
                .push_bind(r.org)
                .push_bind(r.birth)
                .push_bind(r.doc.as_str())
                .push_unseparated("::jsonb")
                .push_bind(r.created)
                .push_bind(r.updated)
                .push_bind(1_i64);
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in b.identifiers.chunks(pg_rows_per_insert(5)) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO patient_identifiers (org_id, patient_id, authority, type_code, value) ",
        );
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.org)
                .push_bind(r.patient)
                .push_bind(r.authority.as_str())
                .push_bind(r.type_code.as_str())
                .push_bind(r.value.as_str());
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in b.phones.chunks(pg_rows_per_insert(3)) {
        let mut q =
            QueryBuilder::<Postgres>::new("INSERT INTO patient_phones (org_id, patient_id, e164) ");
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.org)
                .push_bind(r.patient)
                .push_bind(r.e164.as_str());
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in b.keys.chunks(pg_rows_per_insert(3)) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO patient_name_keys (org_id, name_key, patient_id) ",
        );
        q.push_values(chunk, |mut s, r| {
            s.push_bind(r.org)
                .push_bind(r.key.as_str())
                .push_bind(r.patient);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}
