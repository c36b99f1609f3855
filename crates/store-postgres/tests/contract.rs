//! The store contract, against a fresh PostgreSQL database per test; skipped when
//! `RAPPORT_TEST_POSTGRES_URL` does not name a server.

mod support;

use std::sync::Arc;
use store::Store;

async fn fresh() -> Option<Arc<dyn Store>> {
    Some(Arc::new(support::fresh_store().await?))
}

store::contract_tests!(fresh);

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        support::with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        support::with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        support::with_database("postgres://u@h:5432", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        support::with_database("postgres://u@h?application_name=a", "x"),
        "postgres://u@h/x?application_name=a"
    );
}
