//! Each connection's page cache must be its own: SQLite compiled with
//! SQLITE_ENABLE_MEMORY_MANAGEMENT (libsqlite3-sys' default) pools all of them, so the
//! readers grow into the writer's 32 MB budget. The workspace's .cargo/config.toml
//! undefines it; this fails when a build misses that setting.

use rapport_store_sqlite::SqliteStore;

#[tokio::test]
async fn page_caches_are_per_connection() {
    let path = std::env::temp_dir().join(format!("rapport-pcache-{}.db", uuid::Uuid::now_v7()));
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open SQLite");
    let options: Vec<String> =
        sqlx::query_scalar("SELECT compile_options FROM pragma_compile_options")
            .fetch_all(store.writer_pool())
            .await
            .expect("compile options");
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "SQLite was built with SQLITE_ENABLE_MEMORY_MANAGEMENT (build from the workspace, whose .cargo/config.toml sets LIBSQLITE3_FLAGS): {options:?}"
    );
    drop(store);
    let _ = std::fs::remove_file(&path);
}
