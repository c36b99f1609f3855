//! Organisations and their API tokens: plain rows, no documents, since every field is
//! a column that something looks up or lists by.

use crate::{PostgresStore, db, instant, pg_instant};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{OrgId, Organization, Role, TokenId, ZoneName};
use jiff::Timestamp;
use sqlx::Row;
use sqlx::postgres::PgRow;
use store::{ApiToken, OrganizationStore, StoreError, StoreResult, TokenStore};

fn organization(row: PgRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: OrgId(row.try_get("id").map_err(db)?),
        slug: row.try_get("slug").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        time_zone: ZoneName::parse(row.try_get("time_zone").map_err(db)?)
            .map_err(|e| StoreError::Corrupt(e.message))?,
        phone_region: row.try_get("phone_region").map_err(db)?,
        messaging: row
            .try_get::<sqlx::types::Json<domain::messaging_settings::MessagingSettings>, _>(
                "messaging",
            )
            .map_err(db)?
            .0,
        created_at: instant(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl OrganizationStore for PostgresStore {
    async fn insert_organization(&self, org: &Organization) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO organizations (id, slug, name, time_zone, phone_region, created_at, messaging) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(org.id.0)
        .bind(&org.slug)
        .bind(&org.name)
        .bind(org.time_zone.as_str())
        .bind(&org.phone_region)
        .bind(pg_instant(org.created_at))
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
        let done = sqlx::query("UPDATE organizations SET messaging = $1 WHERE id = $2")
            .bind(crate::to_doc(settings))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(db)
    }

    async fn organization(&self, id: OrgId) -> StoreResult<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE id = $1")
            .bind(id.0)
            .fetch_one(self.read())
            .await
            .map_err(db)?;
        organization(row)
    }

    async fn organization_by_slug(&self, slug: &str) -> StoreResult<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE slug = $1")
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

fn token(row: PgRow) -> StoreResult<ApiToken> {
    let role: String = row.try_get("role").map_err(db)?;
    let revoked: Option<DateTime<Utc>> = row.try_get("revoked_at").map_err(db)?;
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
impl TokenStore for PostgresStore {
    async fn insert_token(&self, t: &ApiToken) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, org_id, name, role, secret_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id.0)
        .bind(t.org_id.0)
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(&t.secret_hash)
        .bind(pg_instant(t.created_at))
        .bind(t.revoked_at.map(pg_instant))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<ApiToken> {
        let row =
            sqlx::query("SELECT * FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL")
                .bind(secret_hash)
                .fetch_one(self.read())
                .await
                .map_err(db)?;
        token(row)
    }

    async fn tokens(&self, org: OrgId) -> StoreResult<Vec<ApiToken>> {
        let rows = sqlx::query("SELECT * FROM api_tokens WHERE org_id = $1 ORDER BY id")
            .bind(org.0)
            .fetch_all(self.read())
            .await
            .map_err(db)?;
        rows.into_iter().map(token).collect()
    }

    async fn revoke_token(&self, org: OrgId, id: TokenId, at: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL")
                .bind(pg_instant(at))
                .bind(org.0)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        crate::touched(done)?;
        tx.commit().await.map_err(db)
    }
}
