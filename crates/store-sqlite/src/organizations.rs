//! Organisations and their API tokens.

use crate::{SqliteStore, db, instant, micros};
use async_trait::async_trait;
use domain::{OrgId, Organization, Role, TokenId, ZoneName};
use jiff::Timestamp;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use store::{ApiToken, OrganizationStore, StoreError, StoreResult, TokenStore};

fn organization(row: SqliteRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: OrgId(row.try_get("id").map_err(db)?),
        slug: row.try_get("slug").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        time_zone: ZoneName::parse(row.try_get("time_zone").map_err(db)?)
            .map_err(|e| StoreError::Corrupt(e.message))?,
        phone_region: row.try_get("phone_region").map_err(db)?,
        messaging: crate::from_doc(&row.try_get::<String, _>("messaging").map_err(db)?)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl OrganizationStore for SqliteStore {
    async fn insert_organization(&self, org: &Organization) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO organizations (id, slug, name, time_zone, phone_region, created_at, messaging) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(org.id.0)
            .bind(&org.slug)
            .bind(&org.name)
            .bind(org.time_zone.as_str())
            .bind(&org.phone_region)
            .bind(micros(org.created_at))
            .bind(crate::to_doc(&org.messaging))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn update_messaging_settings(
        &self,
        id: OrgId,
        settings: &domain::messaging_settings::MessagingSettings,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE organizations SET messaging = ? WHERE id = ?")
            .bind(crate::to_doc(settings))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        crate::touched(done)?;
        tx.commit().await.map_err(db)
    }

    async fn organization(&self, id: OrgId) -> StoreResult<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE id = ?")
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        organization(row)
    }

    async fn organization_by_slug(&self, slug: &str) -> StoreResult<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE slug = ?")
            .bind(slug)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        organization(row)
    }

    async fn organizations(&self) -> StoreResult<Vec<Organization>> {
        let rows = sqlx::query("SELECT * FROM organizations ORDER BY created_at, id")
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(organization).collect()
    }
}

fn token(row: SqliteRow) -> StoreResult<ApiToken> {
    let role: String = row.try_get("role").map_err(db)?;
    let revoked: Option<i64> = row.try_get("revoked_at").map_err(db)?;
    Ok(ApiToken {
        id: TokenId(row.try_get("id").map_err(db)?),
        org_id: OrgId(row.try_get("org_id").map_err(db)?),
        name: row.try_get("name").map_err(db)?,
        role: role.parse::<Role>().map_err(StoreError::Corrupt)?,
        secret_hash: row.try_get("secret_hash").map_err(db)?,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
        revoked_at: revoked.map(instant).transpose()?,
    })
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(&self, t: &ApiToken) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO api_tokens (id, org_id, name, role, secret_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(t.id.0)
            .bind(t.org_id.0)
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.secret_hash)
            .bind(micros(t.created_at))
            .bind(t.revoked_at.map(micros))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<ApiToken> {
        let row =
            sqlx::query("SELECT * FROM api_tokens WHERE secret_hash = ? AND revoked_at IS NULL")
                .bind(secret_hash)
                .fetch_one(self.read())
                .await
                .map_err(db)?;
        token(row)
    }

    async fn tokens(&self, org: OrgId) -> StoreResult<Vec<ApiToken>> {
        let rows = sqlx::query("SELECT * FROM api_tokens WHERE org_id = ? ORDER BY id")
            .bind(org.0)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(token).collect()
    }

    async fn revoke_token(&self, org: OrgId, id: TokenId, at: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE org_id = ? AND id = ? AND revoked_at IS NULL")
            .bind(micros(at))
            .bind(org.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        crate::touched(done)?;
        tx.commit().await.map_err(db)
    }
}
