//! Test databases: each test gets a brand-new PostgreSQL database on the server that
//! `RAPPORT_TEST_POSTGRES_URL` names, so tests never see each other's rows.

use rapport_store_postgres::PostgresStore;
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicBool, Ordering};
use store::Store;
use uuid::Uuid;

pub const URL_VAR: &str = "RAPPORT_TEST_POSTGRES_URL";

/// Test databases older than this are left over from earlier runs, and are dropped.
const STALE_AFTER_SECS: u64 = 3600;

static SWEPT: AtomicBool = AtomicBool::new(false);

/// `url` with its database name replaced by `database`, keeping any query string.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    format!("{root}/{database}{query}")
}

/// A fresh, migrated store in a database of its own, or `None` when no server is given.
pub async fn fresh_store() -> Option<PostgresStore> {
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!("skipped: {URL_VAR} not set");
        return None;
    };
    let mut admin = PgConnection::connect(&url)
        .await
        .expect("connect to the test server");
    if !SWEPT.swap(true, Ordering::SeqCst) {
        sweep(&mut admin).await;
    }
    let name = format!("rapport_test_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    admin.close().await.ok();
    let store = PostgresStore::connect(&with_database(&url, &name))
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate");
    Some(store)
}

/// Drops test databases that earlier runs left behind. Names carry a UUIDv7, whose
/// timestamp tells their age, so that a concurrent run's databases are left alone.
async fn sweep(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'rapport\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for name in names {
        let made = name
            .strip_prefix("rapport_test_")
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| id.get_timestamp())
            .map(|t| t.to_unix().0);
        if made.is_some_and(|made| made + STALE_AFTER_SECS < now) {
            // Another run may be sweeping the same database: losing that race is fine.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}
