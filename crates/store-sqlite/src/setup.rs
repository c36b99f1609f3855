//! Locations and providers: stored as documents, with the columns that lists need.

use crate::{SqliteStore, db, from_doc, micros, to_doc, touched};
use async_trait::async_trait;
use domain::{Location, LocationId, OrgId, Provider, ProviderId};
use jiff::Timestamp;
use sqlx::Row;
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

impl DocTable {
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        store: &SqliteStore,
        id: Uuid,
        org: OrgId,
        label: &str,
        doc: String,
        created: Timestamp,
        updated: Timestamp,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (id, org_id, {}, doc, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, 1)",
            self.table, self.label
        );
        let mut tx = store.write().await?;
        sqlx::query(&sql)
            .bind(id)
            .bind(org.0)
            .bind(label)
            .bind(doc)
            .bind(micros(created))
            .bind(micros(updated))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update(
        &self,
        store: &SqliteStore,
        id: Uuid,
        org: OrgId,
        label: &str,
        doc: String,
        updated: Timestamp,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE {} SET {} = ?, doc = ?, updated_at = ?, version = version + 1 WHERE org_id = ? AND id = ?",
            self.table, self.label
        );
        let mut tx = store.write().await?;
        let done = sqlx::query(&sql)
            .bind(label)
            .bind(doc)
            .bind(micros(updated))
            .bind(org.0)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        store: &SqliteStore,
        org: OrgId,
        id: Uuid,
    ) -> StoreResult<T> {
        let sql = format!("SELECT doc FROM {} WHERE org_id = ? AND id = ?", self.table);
        let doc: String = sqlx::query_scalar(&sql)
            .bind(org.0)
            .bind(id)
            .fetch_one(store.read())
            .await
            .map_err(db)?;
        from_doc(&doc)
    }

    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        store: &SqliteStore,
        org: OrgId,
        page: &PageRequest,
    ) -> StoreResult<Page<T>> {
        let after = page.after.as_ref().map(|c| c.id).unwrap_or(Uuid::nil());
        let sql = format!(
            "SELECT id, doc FROM {} WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?",
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
                let doc: String = r.try_get("doc").map_err(db)?;
                Ok((String::new(), id, from_doc(&doc)?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }
}

#[async_trait]
impl LocationStore for SqliteStore {
    async fn insert_location(&self, l: &Location) -> StoreResult<()> {
        LOCATIONS
            .insert(
                self,
                l.id.0,
                l.org_id,
                &l.name,
                to_doc(l),
                l.created_at,
                l.updated_at,
            )
            .await
    }

    async fn update_location(&self, l: &Location) -> StoreResult<()> {
        LOCATIONS
            .update(self, l.id.0, l.org_id, &l.name, to_doc(l), l.updated_at)
            .await
    }

    async fn location(&self, org: OrgId, id: LocationId) -> StoreResult<Location> {
        LOCATIONS.get(self, org, id.0).await
    }

    async fn locations(&self, org: OrgId, page: &PageRequest) -> StoreResult<Page<Location>> {
        LOCATIONS.page(self, org, page).await
    }
}

#[async_trait]
impl ProviderStore for SqliteStore {
    async fn insert_provider(&self, p: &Provider) -> StoreResult<()> {
        PROVIDERS
            .insert(
                self,
                p.id.0,
                p.org_id,
                &p.display_name,
                to_doc(p),
                p.created_at,
                p.updated_at,
            )
            .await
    }

    async fn update_provider(&self, p: &Provider) -> StoreResult<()> {
        PROVIDERS
            .update(
                self,
                p.id.0,
                p.org_id,
                &p.display_name,
                to_doc(p),
                p.updated_at,
            )
            .await
    }

    async fn provider(&self, org: OrgId, id: ProviderId) -> StoreResult<Provider> {
        PROVIDERS.get(self, org, id.0).await
    }

    async fn providers(&self, org: OrgId, page: &PageRequest) -> StoreResult<Page<Provider>> {
        PROVIDERS.page(self, org, page).await
    }
}
