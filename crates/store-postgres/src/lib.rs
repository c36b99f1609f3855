#![forbid(unsafe_code)]
//! Rapport's PostgreSQL backend: the same schema and behaviour as the SQLite one, in
//! native types (uuid, timestamptz, date, jsonb), over a pool of connections where every
//! write runs in its own transaction.

mod appointments;
mod ehr;
mod messaging;
mod organizations;
mod patients;
mod setup;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use store::{PoolStatus, Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const MAX_CONNECTIONS: u32 = 16;

/// Unique constraints whose violation a person fixes by changing the slug.
const SLUG_CONSTRAINTS: &[&str] = &["organizations_slug_key"];
/// Unique constraints whose violation a person fixes by changing the name.
const NAME_CONSTRAINTS: &[&str] = &["hl7_interfaces_name_key"];
/// Unique constraints whose violation a person fixes by changing an identifier.
const IDENTIFIER_CONSTRAINTS: &[&str] = &[
    "patient_identifiers_unique",
    "appointment_identifiers_unique",
];

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// opening one connection now so that a wrong address fails at start-up, not later.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .application_name("rapport")
            // Rapport's queries are small index look-ups; JIT compilation only adds latency
            // (140 ms per search measured when a missing-statistics plan looked costly).
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(300))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        Ok(Self { pool })
    }

    /// A write transaction. Its commit waits for the disk, except inside
    /// `store::durability::derived`.
    pub(crate) async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if store::durability::is_derived() {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        Ok(tx)
    }

    /// The `synchronous_commit` a write transaction started here commits with (`on`, or
    /// `off` inside `store::durability::derived`): for tests and diagnostics. The
    /// transaction is rolled back.
    pub async fn write_durability(&self) -> StoreResult<String> {
        let mut tx = self.write().await?;
        let level: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.rollback().await.map_err(db)?;
        Ok(level)
    }

    pub(crate) fn read(&self) -> &PgPool {
        &self.pool
    }

    /// The raw pool, for the benchmark's baseline and the schema-drift test.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))
    }

    async fn ready(&self) -> StoreResult<bool> {
        // A database that does not answer, or was never migrated, is simply not ready.
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: MAX_CONNECTIONS,
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Maps database errors to the store's; unique violations name the field a person fixes.
/// Only PostgreSQL's message is kept, never its detail, which quotes the offending values.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            let constraint = d.constraint().unwrap_or_default();
            let field = if SLUG_CONSTRAINTS.contains(&constraint) {
                "slug"
            } else if IDENTIFIER_CONSTRAINTS.contains(&constraint) {
                "identifiers"
            } else if NAME_CONSTRAINTS.contains(&constraint) {
                "name"
            } else {
                "id"
            };
            StoreError::Conflict {
                field: field.into(),
                message: format!("a record with this {field} already exists"),
            }
        }
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::Conflict {
            field: "reference".into(),
            message: "a referenced record does not exist in this organisation".into(),
        },
        // Connection exceptions, a server shutting down or refusing connections, and
        // too many clients: the database is there but cannot serve us now.
        sqlx::Error::Database(d)
            if d.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300") =>
        {
            unavailable(e)
        }
        sqlx::Error::ColumnDecode { index, source } => {
            // serde's messages quote the unexpected value, which may be a patient's.
            let why = match source.downcast_ref::<serde_json::Error>() {
                Some(j) => format!(
                    "{:?} error at line {}, column {}",
                    j.classify(),
                    j.line(),
                    j.column()
                ),
                None => source.to_string(),
            };
            StoreError::Corrupt(format!("column {index}: {why}"))
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => unavailable(e),
        _ => StoreError::Database(e.to_string()),
    }
}

/// An instant as PostgreSQL keeps it: whole microseconds, as SQLite's integers do.
pub(crate) fn pg_instant(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.as_microsecond())
        .expect("jiff's range (±9999 years) lies within chrono's (±262,143 years)")
}

pub(crate) fn instant(t: DateTime<Utc>) -> StoreResult<Timestamp> {
    Timestamp::from_microsecond(t.timestamp_micros())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn pg_date(d: Date) -> NaiveDate {
    NaiveDate::from_ymd_opt(
        i32::from(d.year()),
        d.month().unsigned_abs().into(),
        d.day().unsigned_abs().into(),
    )
    .expect("jiff's dates (±9999 years) are all valid chrono dates")
}

/// A document to bind to a jsonb column.
pub(crate) fn to_doc<T: serde::Serialize>(value: &T) -> Json<&T> {
    Json(value)
}

/// Fails with `NotFound` when an update touched no row (absent, or another tenant's).
pub(crate) fn touched(result: PgQueryResult) -> StoreResult<()> {
    if result.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Rows in one multi-row INSERT of `columns` values each: the protocol numbers bind
/// parameters with a u16, so a statement carries at most 65,535 of them.
pub(crate) const fn rows_per_insert(columns: usize) -> usize {
    u16::MAX as usize / columns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(d: NaiveDate) -> Date {
        use chrono::Datelike;
        Date::new(d.year() as i16, d.month() as i8, d.day() as i8).unwrap()
    }

    #[test]
    fn instants_and_dates_survive_the_conversion() {
        let t = Timestamp::from_microsecond(-1_234_567_890_123_456).unwrap();
        assert_eq!(instant(pg_instant(t)).unwrap(), t);
        // Near both ends of jiff's range, with nanoseconds that storage drops.
        for (second, nanos) in [
            (-377_705_000_000, 123_456_789),
            (253_402_000_000, 999_999_999),
        ] {
            let t = Timestamp::new(second, nanos).unwrap();
            let whole = Timestamp::from_microsecond(t.as_microsecond()).unwrap();
            assert_eq!(instant(pg_instant(t)).unwrap(), whole);
        }
        for d in [
            jiff::civil::date(1980, 2, 29),
            jiff::civil::date(-9999, 1, 1),
            jiff::civil::date(9999, 12, 31),
        ] {
            assert_eq!(date(pg_date(d)), d);
        }
    }

    #[test]
    fn batches_stay_within_the_bind_limit() {
        for columns in [3, 5, 7, 12] {
            assert!(rows_per_insert(columns) * columns <= 65_535);
        }
    }
}
