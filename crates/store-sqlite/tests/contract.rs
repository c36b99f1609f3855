//! The store contract, against a fresh SQLite file per test.

use rapport_store_sqlite::SqliteStore;
use std::sync::Arc;
use store::Store;

async fn fresh() -> Option<Arc<dyn Store>> {
    let path = std::env::temp_dir().join(format!("rapport-contract-{}.db", uuid::Uuid::now_v7()));
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open SQLite");
    store.migrate().await.expect("migrate");
    Some(Arc::new(store))
}

store::contract_tests!(fresh);

async fn fresh_concrete() -> Option<Arc<SqliteStore>> {
    let path = std::env::temp_dir().join(format!("rapport-contract-{}.db", uuid::Uuid::now_v7()));
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open SQLite");
    store.migrate().await.expect("migrate");
    Some(Arc::new(store))
}

mod messaging {
    use super::fresh_concrete;
    store::messaging_contract_tests!(fresh_concrete);
}

mod ehr {
    use super::fresh_concrete;
    store::ehr_contract_tests!(fresh_concrete);
}
