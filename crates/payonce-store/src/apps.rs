//! Apps (tenants): secrets, webhook endpoints and secrets: the `Apps` part of the store, and its SQL, expanded for each backend by
//! `sql::impl_store!` (SQLite and PostgreSQL accept the same statements).

#[allow(unused_imports)]
use crate::*;
#[allow(unused_imports)]
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, Timestamp};

#[async_trait::async_trait]
pub trait Apps: Send + Sync {
    async fn insert_app(&self, app: &App) -> Result<()>;
    async fn app_by_secret_hash(&self, secret_hash: &str) -> Result<Option<App>>;
    async fn app(&self, id: &AppId) -> Result<Option<App>>;
    async fn disable_webhook(&self, app: &AppId, now: Timestamp) -> Result<()>;
    /// Installs a new webhook secret and keeps the current one as the previous.
    async fn rotate_webhook_secret(&self, app: &AppId, new_enc: &str) -> Result<bool>;
}

/// The SQL of `Apps` for one backend (see `sql::impl_store!` for the parameters).
macro_rules! apps_sql {
    ($Store:ty, $Db:ty, backend = $backend:expr, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = $migrations:expr) => {
        #[async_trait::async_trait]
        impl $crate::Apps for $Store {
            async fn insert_app(&self, app: &$crate::App) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO apps (id, name, secret_hash, webhook_url, webhook_secret_enc, created_at, allowed_hosts, sink, submission_window_secs) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(app.id.as_str())
                .bind(&app.name)
                .bind(&app.secret_hash)
                .bind(&app.webhook_url)
                .bind(&app.webhook_secret_enc)
                .bind(app.created_at.0)
                .bind(&app.allowed_hosts)
                .bind(match app.sink { $crate::Sink::Webhook => None, other => Some(other.as_str()) })
                .bind(app.submission_window_secs)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn app_by_secret_hash(&self, secret_hash: &str) -> $crate::Result<Option<$crate::App>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::app_cols!(), " FROM apps WHERE secret_hash = $1"))
                    .bind(secret_hash)
                    .fetch_optional(&self.reader())
                    .await?;
                row.as_ref().map($crate::rows::app_row).transpose()
            }

            async fn app(&self, id: &payonce_core::AppId) -> $crate::Result<Option<$crate::App>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::app_cols!(), " FROM apps WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&self.reader())
                    .await?;
                row.as_ref().map($crate::rows::app_row).transpose()
            }

            async fn disable_webhook(&self, app: &payonce_core::AppId, _now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE apps SET webhook_disabled = 1 WHERE id = $1").bind(app.as_str()).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_webhook_secret(&self, app: &payonce_core::AppId, new_enc: &str) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("UPDATE apps SET webhook_secret_prev_enc = webhook_secret_enc, webhook_secret_enc = $1, webhook_disabled = 0 WHERE id = $2")
                    .bind(new_enc)
                    .bind(app.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use apps_sql;
