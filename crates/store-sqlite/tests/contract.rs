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

/// Derived writes (`store::durability`) commit at `synchronous=NORMAL`; every other write
/// on the one writer connection still commits at FULL, also after a derived write was
/// cancelled half-way.
#[tokio::test]
async fn only_derived_writes_commit_without_waiting_for_the_disk() {
    let store = fresh_concrete().await.unwrap();
    const FULL: i64 = 2;
    const NORMAL: i64 = 1;
    assert_eq!(store.write_durability().await.unwrap(), FULL);
    let derived = store::durability::derived(store.write_durability())
        .await
        .unwrap();
    assert_eq!(derived, NORMAL);
    assert_eq!(store.write_durability().await.unwrap(), FULL);
    // Cancelled at each point in turn: after 1, 2, … wake-ups (getting the connection,
    // lowering the level, beginning, reading): the next ordinary write is at FULL.
    let mut cancelled = 0;
    for polls in 1..=16 {
        let done = store::durability::derived(poll_at_most(polls, store.write_durability())).await;
        if done.is_none() {
            cancelled += 1;
        }
        assert_eq!(
            store.write_durability().await.unwrap(),
            FULL,
            "after {polls} polls"
        );
    }
    assert!(cancelled >= 2, "some derived writes were cut short");
}

/// Polls `work` until it finishes or has been polled `polls` times, then drops it.
async fn poll_at_most<F: std::future::Future>(polls: usize, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let mut count = 0;
    std::future::poll_fn(|cx| {
        count += 1;
        match work.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending if count >= polls => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}
