//! Fresh databases for each run, opened through Rapport's own stores, and the plain SQL
//! that counts rows afterwards to verify a run.

use anyhow::{Context, bail};
use sqlx::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::AppStore;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How a store's writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// As Rapport ships: SQLite `synchronous=FULL` (an fsync per commit), PostgreSQL
    /// `synchronous_commit=on`.
    Shipped,
    /// Diagnostic only, to show what the fsyncs cost: SQLite `synchronous=NORMAL` (WAL synced
    /// at checkpoints only), PostgreSQL `synchronous_commit=off`.
    Relaxed,
    /// For loading test data before a timed run: SQLite `synchronous=OFF`, PostgreSQL
    /// `synchronous_commit=off`.
    Setup,
}

impl Durability {
    pub fn describe(self, backend: Backend) -> &'static str {
        match (backend, self) {
            (Backend::Sqlite, Durability::Shipped) => "synchronous=FULL (as shipped)",
            (Backend::Sqlite, Durability::Relaxed) => "synchronous=NORMAL (diagnostic)",
            (Backend::Sqlite, Durability::Setup) => "synchronous=OFF (setup only)",
            (Backend::Postgres, Durability::Shipped) => "synchronous_commit=on (as shipped)",
            (Backend::Postgres, _) => "synchronous_commit=off (diagnostic)",
        }
    }
}

fn postgres_server() -> String {
    std::env::var("RAPPORT_BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// Connects to the PostgreSQL server the benchmarks create their databases on.
pub async fn postgres_reachable() -> anyhow::Result<()> {
    let server = postgres_server();
    let conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&server))
        .await
        .with_context(|| format!("no answer from {server}"))?
        .with_context(|| format!("cannot connect to {server}"))?;
    conn.close().await.ok();
    Ok(())
}

/// A database created for one run; [`FreshDb::remove`] deletes it.
pub struct FreshDb {
    pub backend: Backend,
    pub url: String,
    place: Place,
}

enum Place {
    File(PathBuf),
    Postgres { server: String, name: String },
}

impl FreshDb {
    /// A new, empty database: a file under `<target>/bench/tmp`, or a database created on
    /// the server of `RAPPORT_BENCH_POSTGRES_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/test`).
    pub async fn create(backend: Backend, label: &str) -> anyhow::Result<FreshDb> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = crate::report::bench_dir().join("tmp");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let dir = dir.canonicalize()?;
                let path = dir.join(format!("{label}-{id}.db"));
                Ok(FreshDb {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    place: Place::File(path),
                })
            }
            Backend::Postgres => {
                let server = postgres_server();
                let name = format!("rapport_bench_{label}_{id}");
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .with_context(|| format!("connecting to PostgreSQL at {server}"))?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                conn.close().await.ok();
                let base = server.split('?').next().unwrap_or(&server);
                let Some((prefix, _)) = base.rsplit_once('/') else {
                    bail!("RAPPORT_BENCH_POSTGRES_URL must name a database: {server}");
                };
                Ok(FreshDb {
                    backend,
                    url: format!("{prefix}/{name}"),
                    place: Place::Postgres { server, name },
                })
            }
        }
    }

    /// Opens the database through Rapport's store (migrations applied) with `durability`;
    /// also answers the setting as read back from the database.
    pub async fn open(
        &self,
        durability: Durability,
    ) -> anyhow::Result<(Arc<dyn AppStore>, String)> {
        match &self.place {
            Place::File(_) => {
                let store = store_sqlite::SqliteStore::connect(&self.url)
                    .await
                    .context("opening SQLite")?;
                store::Store::migrate(&store)
                    .await
                    .context("applying migrations")?;
                let pragma = match durability {
                    Durability::Shipped => None,
                    Durability::Relaxed => Some("PRAGMA synchronous = NORMAL"),
                    Durability::Setup => Some("PRAGMA synchronous = OFF"),
                };
                // The writer pool holds exactly one connection, for the store's lifetime:
                // a pragma set on it stays set (and a replacement connection would come back
                // with the shipped setting, never a weaker one).
                if let Some(pragma) = pragma {
                    sqlx::query(pragma).execute(store.writer_pool()).await?;
                }
                let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(store.writer_pool())
                    .await?;
                let word = match level {
                    0 => "OFF",
                    1 => "NORMAL",
                    2 => "FULL",
                    3 => "EXTRA",
                    _ => "?",
                };
                Ok((Arc::new(store), format!("synchronous={word}")))
            }
            Place::Postgres { server, name } => {
                let setting = match durability {
                    Durability::Shipped => "RESET synchronous_commit".to_owned(),
                    _ => "SET synchronous_commit = off".to_owned(),
                };
                // New sessions pick the setting up; the store opens its own, after this.
                let mut conn = sqlx::PgConnection::connect(server).await?;
                sqlx::query(&format!("ALTER DATABASE {name} {setting}"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await.ok();
                let store = store_postgres::PostgresStore::connect(&self.url)
                    .await
                    .context("connecting to PostgreSQL")?;
                store::Store::migrate(&store)
                    .await
                    .context("applying migrations")?;
                let value: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(store.pool())
                    .await?;
                Ok((Arc::new(store), format!("synchronous_commit={value}")))
            }
        }
    }

    /// A plain pool on the same database, for counting rows.
    pub async fn counter(&self) -> anyhow::Result<Counter> {
        Ok(match &self.place {
            Place::File(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(30));
                Counter::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await?,
                )
            }
            Place::Postgres { .. } => Counter::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&self.url)
                    .await?,
            ),
        })
    }

    /// Deletes the database (its file and WAL, or the PostgreSQL database).
    pub async fn remove(self) -> anyhow::Result<()> {
        match self.place {
            Place::File(path) => {
                for suffix in ["", "-wal", "-shm", "-hl7journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Place::Postgres { server, name } => {
                let mut conn = sqlx::PgConnection::connect(&server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await.ok();
            }
        }
        Ok(())
    }
}

/// Plain SQL on a benchmark's database.
pub enum Counter {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Counter {
    /// Rows of a query returning (text, count).
    pub async fn groups(&self, sql: &str) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(match self {
            Counter::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
            Counter::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
        })
    }

    /// A query returning one count.
    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Counter::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Counter::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }

    /// A query returning one text column.
    pub async fn texts(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        Ok(match self {
            Counter::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await?,
            Counter::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await?,
        })
    }

    pub async fn close(self) {
        match self {
            Counter::Sqlite(pool) => pool.close().await,
            Counter::Postgres(pool) => pool.close().await,
        }
    }
}
