#![forbid(unsafe_code)]
//! Rapport's SQLite backend, the default: one file, WAL, foreign keys on,
//! `synchronous=FULL` so a committed write survives a power cut, and `BEGIN IMMEDIATE`
//! for every write transaction on a single writer connection.

mod appointments;
mod ehr;
mod journal;
mod messaging;
mod organizations;
mod patients;
mod setup;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Execute, QueryBuilder, Sqlite, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::{PoolStatus, Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const READERS: u32 = 8;

#[derive(Clone)]
pub struct SqliteStore {
    /// The one connection that writes: SQLite allows one writer at a time anyway, and
    /// queueing here instead of on the file lock keeps writers fair and never busy.
    writer: SqlitePool,
    readers: SqlitePool,
    /// Set while the writer runs a derived transaction at `synchronous=NORMAL`; the
    /// writer pool puts it back to `FULL` before anyone else gets the connection.
    relaxed: Arc<AtomicBool>,
    /// Set while the writer runs a transaction sent as one command
    /// ([`SqliteStore::write_in_one_command`]); should that command be dropped half-way,
    /// the writer pool rolls the transaction back before anyone else gets the connection.
    open: Arc<AtomicBool>,
    /// The database file (`None` in memory): the HL7 journal lives beside it.
    path: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating it and its folder when missing) the database at `url`:
    /// `sqlite:///absolute/path.db` or `sqlite://relative/path.db`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory");
        let filename = options.get_filename().to_owned();
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
            && !Path::new(dir).exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let relaxed = Arc::new(AtomicBool::new(false));
        let restore = relaxed.clone();
        let open = Arc::new(AtomicBool::new(false));
        let left_open = open.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Both pools hold local connections to one file: there is nothing a ping
            // before each use could find, and on SQLite it costs a hand-off to the
            // connection's thread and back each time a connection is taken. (sqlx
            // still pings each connection as it is given back, off the caller's path.)
            .test_before_acquire(false)
            // A derived write (see `store::durability`) left the connection at NORMAL:
            // back to FULL before it is handed out again, even if that write was
            // cancelled half-way. Should that fail, the pool closes the connection and
            // opens a new one, which starts at FULL.
            .after_release(move |conn, _| {
                let restore = restore.clone();
                let left_open = left_open.clone();
                Box::pin(async move {
                    if left_open.swap(false, Ordering::SeqCst) {
                        // Fails harmlessly when the transaction did end.
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    }
                    if restore.swap(false, Ordering::SeqCst) {
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(true)
                })
            })
            // The writer's page cache serves bulk imports (32 MB).
            .connect_with(options.clone().pragma("cache_size", "-32000"))
            .await
            .map_err(unavailable)?;
        // Each cache_size below only bounds its own connection when SQLite is built without
        // SQLITE_ENABLE_MEMORY_MANAGEMENT (.cargo/config.toml); with it, all connections
        // share one pool as large as their sum, and the readers fill the writer's 32 MB.
        let pooled: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM pragma_compile_options WHERE compile_options = 'ENABLE_MEMORY_MANAGEMENT'",
        )
        .fetch_optional(&writer)
        .await
        .map_err(unavailable)?;
        if pooled.is_some() {
            tracing::warn!(
                "SQLite was built with SQLITE_ENABLE_MEMORY_MANAGEMENT: the connections' page caches are pooled, up to {} MB in all; build from the workspace (its .cargo/config.toml sets LIBSQLITE3_FLAGS)",
                32 + 2 * READERS
            );
        }
        // Readers keep small caches (the file is in the OS page cache anyway) and are
        // recycled, so a burst of searches does not leave the server holding 9 × 32 MB
        // (nor, see above, 32 + 8 × 2 MB of reader pages).
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .max_lifetime(Duration::from_secs(300))
            .connect_with(options.pragma("cache_size", "-2000"))
            .await
            .map_err(unavailable)?;
        // An in-memory database has no file to keep a journal beside.
        let path = (filename.is_file()).then_some(filename);
        Ok(Self {
            writer,
            readers,
            relaxed,
            open,
            path,
        })
    }

    /// A write transaction that holds the write lock from its first statement. Its commit
    /// waits for the disk, except inside `store::durability::derived`.
    pub(crate) async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        if store::durability::is_derived() {
            let conn = self.writer.acquire().await.map_err(db)?;
            // SQLite refuses to change the level inside a transaction: set it first, in
            // the same command as the BEGIN (one hand-off to the connection's thread).
            self.relaxed.store(true, Ordering::SeqCst);
            return Transaction::begin(
                conn,
                Some("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE".into()),
            )
            .await
            .map_err(db);
        }
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }

    /// Starts the statements of a write transaction that is sent to the connection's
    /// thread as one command by [`SqliteStore::write_in_one_command`].
    pub(crate) fn one_command() -> QueryBuilder<'static, Sqlite> {
        QueryBuilder::new("")
    }

    /// Runs `statements` (built from [`SqliteStore::one_command`], `;`-separated, with
    /// their arguments) as one write transaction, `BEGIN IMMEDIATE` to `COMMIT`, in a
    /// single hand-off to the writer connection's thread: a transaction through
    /// [`SqliteStore::write`] takes one per statement plus two, and on a busy machine
    /// each is a thread wake-up. Returns the rows the statements return (`RETURNING`).
    /// Durability as [`SqliteStore::write`]: the commit waits for the disk except inside
    /// `store::durability::derived`.
    pub(crate) async fn write_in_one_command(
        &self,
        mut statements: QueryBuilder<'static, Sqlite>,
    ) -> StoreResult<Vec<SqliteRow>> {
        let mut conn = self.writer.acquire().await.map_err(db)?;
        let derived = store::durability::is_derived();
        if derived {
            self.relaxed.store(true, Ordering::SeqCst);
        }
        let mut sql = String::from(if derived {
            "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE; "
        } else {
            "BEGIN IMMEDIATE; "
        });
        sql.push_str(statements.sql());
        sql.push_str("; COMMIT");
        self.open.store(true, Ordering::SeqCst);
        let arguments = statements.build().take_arguments().ok().flatten();
        let rows = match arguments {
            Some(a) => sqlx::query_with(&sql, a).fetch_all(&mut *conn).await,
            None => sqlx::query(&sql).fetch_all(&mut *conn).await,
        };
        match rows {
            Ok(rows) => {
                self.open.store(false, Ordering::SeqCst);
                Ok(rows)
            }
            Err(e) => {
                // A statement failed after BEGIN: the transaction is still open.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                self.open.store(false, Ordering::SeqCst);
                Err(db(e))
            }
        }
    }

    pub(crate) fn read(&self) -> &SqlitePool {
        &self.readers
    }

    /// The `synchronous` level a write transaction started here commits at (`2`, FULL,
    /// or `1`, NORMAL, inside `store::durability::derived`): for tests and diagnostics.
    /// The transaction is rolled back.
    pub async fn write_durability(&self) -> StoreResult<i64> {
        let mut tx = self.write().await?;
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.rollback().await.map_err(db)?;
        Ok(level)
    }

    /// The raw pool, for the benchmark's baseline and the schema-drift test.
    pub fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))
    }

    async fn ready(&self) -> StoreResult<bool> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.readers)
                .await
                .unwrap_or_default();
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: self.writer.size() + self.readers.size(),
            idle: (self.writer.num_idle() + self.readers.num_idle()) as u32,
            max: 1 + READERS,
        }
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Maps database errors to the store's; unique violations name the field a person fixes.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            let msg = d.message();
            let field = if msg.contains("organizations.slug") {
                "slug"
            } else if msg.contains("_identifiers.") {
                "identifiers"
            } else if msg.contains("hl7_interfaces.name") {
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
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => unavailable(e),
        _ => StoreError::Database(e.to_string()),
    }
}

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

pub(crate) fn instant(us: i64) -> StoreResult<Timestamp> {
    Timestamp::from_microsecond(us).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn to_doc<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| Value::Null.to_string())
}

pub(crate) fn from_doc<T: serde::de::DeserializeOwned>(doc: &str) -> StoreResult<T> {
    // serde's own message may quote the stored value (PHI): keep only where it failed.
    serde_json::from_str(doc).map_err(|e| {
        StoreError::Corrupt(format!(
            "stored document unreadable ({:?} at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Fails with `NotFound` when an update touched no row (absent, or another tenant's).
pub(crate) fn touched(result: sqlx::sqlite::SqliteQueryResult) -> StoreResult<()> {
    if result.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Largest number of rows in one multi-row INSERT: SQLite binds at most 32,766 values.
pub(crate) const BATCH_ROWS: usize = 1000;
