//! Locations and providers, the clinic's set-up: stored as documents, with the columns
//! that lists need.

use crate::{PostgresStore, db, pg_instant, to_doc, touched};
use async_trait::async_trait;
use domain::{Location, LocationId, OrgId, Provider, ProviderId};
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::types::Json;
use store::{LocationStore, Page, PageRequest, ProviderStore, StoreResult};
use uuid::Uuid;

/// A table of documents keyed by (org_id, id), with one label column.
struct DocTable {
    table: &'static str,
    label: &'static str,
}

const LOCATIONS: DocTable = DocTable {
    table: "locations",
    label: "name",
};
const PROVIDERS: DocTable = DocTable {
    table: "providers",
    label: "display_name",
};

/// What a document row is written from: its keys, its label and the document itself.
struct DocRow<'a, T> {
    id: Uuid,
    org: OrgId,
    label: &'a str,
    doc: &'a T,
    created: Timestamp,
    updated: Timestamp,
}

impl DocTable {
    async fn insert<T: Serialize + Sync>(
        &self,
        store: &PostgresStore,
        row: DocRow<'_, T>,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (id, org_id, {}, doc, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, 1)",
            self.table, self.label
        );
        let mut tx = store.write().await?;
        sqlx::query(&sql)
            .bind(row.id)
            .bind(row.org.0)
            .bind(row.label)
            .bind(to_doc(row.doc))
            .bind(pg_instant(row.created))
            .bind(pg_instant(row.updated))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update<T: Serialize + Sync>(
        &self,
        store: &PostgresStore,
        row: DocRow<'_, T>,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE {} SET {} = $1, doc = $2, updated_at = $3, version = version + 1 WHERE org_id = $4 AND id = $5",
            self.table, self.label
        );
        let mut tx = store.write().await?;
        let done = sqlx::query(&sql)
            .bind(row.label)
            .bind(to_doc(row.doc))
            .bind(pg_instant(row.updated))
            .bind(row.org.0)
            .bind(row.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn get<T: DeserializeOwned + Send + Unpin + 'static>(
        &self,
        store: &PostgresStore,
        org: OrgId,
        id: Uuid,
    ) -> StoreResult<T> {
        let sql = format!(
            "SELECT doc FROM {} WHERE org_id = $1 AND id = $2",
            self.table
        );
        let Json(doc) = sqlx::query_scalar::<_, Json<T>>(&sql)
            .bind(org.0)
            .bind(id)
            .fetch_one(store.read())
            .await
            .map_err(db)?;
        Ok(doc)
    }

    async fn page<T: DeserializeOwned>(
        &self,
        store: &PostgresStore,
        org: OrgId,
        page: &PageRequest,
    ) -> StoreResult<Page<T>> {
        let after = page.after.as_ref().map(|c| c.id).unwrap_or(Uuid::nil());
        let sql = format!(
            "SELECT id, doc FROM {} WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            self.table
        );
        let rows = sqlx::query(&sql)
            .bind(org.0)
            .bind(after)
            .bind(page.fetch())
            .fetch_all(store.read())
            .await
            .map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let id: Uuid = r.try_get("id").map_err(db)?;
                let Json(doc) = r.try_get::<Json<T>, _>("doc").map_err(db)?;
                Ok((String::new(), id, doc))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}

fn location_row(l: &Location) -> DocRow<'_, Location> {
    DocRow {
        id: l.id.0,
        org: l.org_id,
        label: &l.name,
        doc: l,
        created: l.created_at,
        updated: l.updated_at,
    }
}

fn provider_row(p: &Provider) -> DocRow<'_, Provider> {
    DocRow {
        id: p.id.0,
        org: p.org_id,
        label: &p.display_name,
        doc: p,
        created: p.created_at,
        updated: p.updated_at,
    }
}

#[async_trait]
impl LocationStore for PostgresStore {
    async fn insert_location(&self, l: &Location) -> StoreResult<()> {
        LOCATIONS.insert(self, location_row(l)).await
    }

    async fn update_location(&self, l: &Location) -> StoreResult<()> {
        LOCATIONS.update(self, location_row(l)).await
    }

    async fn location(&self, org: OrgId, id: LocationId) -> StoreResult<Location> {
        LOCATIONS.get(self, org, id.0).await
    }

    async fn locations(&self, org: OrgId, page: &PageRequest) -> StoreResult<Page<Location>> {
        LOCATIONS.page(self, org, page).await
    }
}

#[async_trait]
impl ProviderStore for PostgresStore {
    async fn insert_provider(&self, p: &Provider) -> StoreResult<()> {
        PROVIDERS.insert(self, provider_row(p)).await
    }

    async fn update_provider(&self, p: &Provider) -> StoreResult<()> {
        PROVIDERS.update(self, provider_row(p)).await
    }

    async fn provider(&self, org: OrgId, id: ProviderId) -> StoreResult<Provider> {
        PROVIDERS.get(self, org, id.0).await
    }

    async fn providers(&self, org: OrgId, page: &PageRequest) -> StoreResult<Page<Provider>> {
        PROVIDERS.page(self, org, page).await
    }
}
