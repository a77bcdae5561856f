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
        f.debug_struct("NewAppCredentials")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// What `payonce apps create` is given: everything but the name may be left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewApp<'a> {
    pub name: &'a str,
    /// Where events are POSTed (Standard Webhooks), unless the app has a broker `sink`.
    pub webhook_url: Option<&'a str>,
    /// Comma-separated hosts a per-order `notify_url` may name.
    pub allowed_hosts: Option<&'a str>,
    /// `webhook` (the default), `rabbitmq` or `nats`.
    pub sink: Option<&'a str>,
    /// The submission guard's window in seconds (default 10; 0 turns it off).
    pub submission_window_secs: Option<i64>,
    /// The channel account per channel (`--account wechatpay=shop-a`); checked against the
    /// accounts the database knows.
    pub accounts: &'a [(payonce_core::ChannelName, String)],
}

impl<'a> NewApp<'a> {
    pub fn named(name: &'a str) -> Self {
        NewApp {
            name,
            ..Default::default()
        }
    }
}

/// How long an order created by its content answers the same content again, by default.
pub const DEFAULT_SUBMISSION_WINDOW_SECS: i64 = 10;

/// Registers an app; its secret and webhook secret are returned once and never again.
pub async fn create_app(
    store: &dyn Store,
    key: &MasterKey,
    clock: &dyn Clock,
    new: NewApp<'_>,
) -> Result<NewAppCredentials, crate::engine::accounts::BindError> {
    let NewApp {
        name,
        webhook_url,
        allowed_hosts,
        sink,
        submission_window_secs,
        accounts,
    } = new;
    crate::engine::accounts::check_bindings(store, accounts).await?;
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
            Some(s) => payonce_store::Sink::parse(s).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown sink {s:?} (webhook, rabbitmq, nats)"))
            })?,
        },
        submission_window_secs: submission_window_secs.unwrap_or(DEFAULT_SUBMISSION_WINDOW_SECS),
        channel_accounts: accounts.iter().cloned().collect(),
        created_at: clock.now(),
    };
    store.insert_app(&app).await?;
    Ok(NewAppCredentials {
        app_id: id,
        secret,
        webhook_secret,
    })
}
