//! Registering business systems (`payonce apps create`).

use crate::crypto::{MasterKey, new_app_secret, new_webhook_secret, sha256_hex};
use payonce_core::{AppId, Clock};
use payonce_store::{App, Store, StoreError};

/// A new app's credentials, shown once: only the secret's hash is kept.
pub struct NewAppCredentials {
    pub app_id: AppId,
    pub secret: String,
    pub webhook_secret: String,
}

impl std::fmt::Debug for NewAppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAppCredentials").field("app_id", &self.app_id).finish_non_exhaustive()
    }
}

pub async fn create_app(
    store: &dyn Store,
    key: &MasterKey,
    clock: &dyn Clock,
    name: &str,
    webhook_url: Option<&str>,
    allowed_hosts: Option<&str>,
) -> Result<NewAppCredentials, StoreError> {
    create_app_with_sink(store, key, clock, name, webhook_url, allowed_hosts, None).await
}

/// Like `create_app`, with the app's events going to `sink` (`rabbitmq`, `nats`) instead of
/// its webhook.
pub async fn create_app_with_sink(
    store: &dyn Store,
    key: &MasterKey,
    clock: &dyn Clock,
    name: &str,
    webhook_url: Option<&str>,
    allowed_hosts: Option<&str>,
    sink: Option<&str>,
) -> Result<NewAppCredentials, StoreError> {
    let id = AppId::new();
    let secret = new_app_secret();
    let webhook_secret = new_webhook_secret();
    let app = App {
        id: id.clone(),
        name: name.to_owned(),
        secret_hash: sha256_hex(secret.as_bytes()),
        webhook_url: webhook_url.map(str::to_owned),
        webhook_secret_enc: key.encrypt(&webhook_secret, id.as_str()),
        webhook_secret_prev_enc: None,
        webhook_disabled: false,
        allowed_hosts: allowed_hosts.map(str::to_owned),
        sink: match sink {
            None => payonce_store::Sink::Webhook,
            Some(s) => payonce_store::Sink::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown sink {s:?} (webhook, rabbitmq, nats)")))?,
        },
        created_at: clock.now(),
    };
    store.insert_app(&app).await?;
    Ok(NewAppCredentials { app_id: id, secret, webhook_secret })
}
