//! The store contract, against a fresh PostgreSQL database per test; skipped when
//! `RAPPORT_TEST_POSTGRES_URL` does not name a server.

mod support;

use rapport_store_postgres::PostgresStore;
use std::sync::Arc;
use store::Store;

async fn fresh() -> Option<Arc<dyn Store>> {
    Some(Arc::new(support::fresh_store().await?))
}

store::contract_tests!(fresh);

/// The messaging suite needs the concrete store: `MessagingStore` is not part of `dyn Store`.
async fn fresh_concrete() -> Option<Arc<PostgresStore>> {
    Some(Arc::new(support::fresh_store().await?))
}

mod messaging {
    use super::fresh_concrete;
    store::messaging_contract_tests!(fresh_concrete);
}

mod ehr {
    use super::fresh_concrete;
    store::ehr_contract_tests!(fresh_concrete);
}

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
