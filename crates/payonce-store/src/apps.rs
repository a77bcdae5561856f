//! Apps (tenants): secrets, webhook endpoints and secrets: the `Apps` trait of the store and its
//! implementation for `SqlStore`.

use crate::db::{q, q_fmt};
use crate::sql::APP_COLS;
use crate::*;
use payonce_core::{AppId, Timestamp};

#[async_trait::async_trait]
pub trait Apps: Send + Sync {
    async fn insert_app(&self, app: &App) -> Result<()>;
    async fn app_by_secret_hash(&self, secret_hash: &str) -> Result<Option<App>>;
    async fn app(&self, id: &AppId) -> Result<Option<App>>;
    /// Every app, oldest first (the console's home page lists them).
    async fn apps(&self) -> Result<Vec<App>>;
    async fn disable_webhook(&self, app: &AppId, now: Timestamp) -> Result<()>;
    /// Installs a new webhook secret and keeps the current one as the previous.
    async fn rotate_webhook_secret(&self, app: &AppId, new_enc: &str) -> Result<bool>;
}

#[async_trait::async_trait]
impl Apps for SqlStore {
    async fn insert_app(&self, app: &App) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q(
            "INSERT INTO apps (id, name, secret_hash, webhook_url, webhook_secret_enc, created_at, allowed_hosts, sink, submission_window_secs, channel_accounts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(app.id.as_str())
        .bind(&app.name)
        .bind(&app.secret_hash)
        .bind(&app.webhook_url)
        .bind(&app.webhook_secret_enc)
        .bind(app.created_at.0)
        .bind(&app.allowed_hosts)
        .bind(match app.sink { Sink::Webhook => None, other => Some(other.as_str()) })
        .bind(app.submission_window_secs)
        .bind(crate::accounts::encode_bindings(&app.channel_accounts).as_deref())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn app_by_secret_hash(&self, secret_hash: &str) -> Result<Option<App>> {
        q_fmt(format!(
            "SELECT {APP_COLS} FROM apps WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .load_optional::<App>(&self.reader())
        .await
    }

    async fn app(&self, id: &AppId) -> Result<Option<App>> {
        q_fmt(format!("SELECT {APP_COLS} FROM apps WHERE id = $1"))
            .bind(id.as_str())
            .load_optional::<App>(&self.reader())
            .await
    }

    async fn apps(&self) -> Result<Vec<App>> {
        q_fmt(format!(
            "SELECT {APP_COLS} FROM apps ORDER BY created_at, id"
        ))
        .load_all::<App>(&self.reader())
        .await
    }

    async fn disable_webhook(&self, app: &AppId, _now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("UPDATE apps SET webhook_disabled = 1 WHERE id = $1")
            .bind(app.as_str())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_webhook_secret(&self, app: &AppId, new_enc: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = q("UPDATE apps SET webhook_secret_prev_enc = webhook_secret_enc, webhook_secret_enc = $1, webhook_disabled = 0 WHERE id = $2")
            .bind(new_enc)
            .bind(app.as_str())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(done == 1)
    }
}
