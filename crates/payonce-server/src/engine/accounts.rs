//! Channel accounts as the database knows them: `serve` records the accounts of
//! `channels.toml` at start (public facts only: names, merchant numbers, fingerprints), apps are
//! bound to them by name, and the admin API lists them beside what this instance loaded.

use payonce_channels::ChannelRegistry;
use payonce_core::{AppId, ChannelName, Timestamp};
use payonce_store::{ChannelAccountRecord, Store, StoreError};

/// Records the accounts this instance loaded from `channels.toml` (see
/// `ChannelAccounts::record_file_accounts`).
pub async fn record_file_accounts(
    store: &dyn Store,
    channels: &ChannelRegistry,
    now: Timestamp,
) -> Result<(), StoreError> {
    let records: Vec<ChannelAccountRecord> = channels
        .all_accounts()
        .map(|a| ChannelAccountRecord {
            channel: a.channel(),
            name: a.name.clone(),
            source: "file".into(),
            merchant_id: a.merchant_id.clone(),
            is_default: channels
                .default_account(a.channel())
                .is_some_and(|d| d.name == a.name),
            enabled: true,
            fingerprints: a.fingerprints.clone(),
            created_at: now,
            updated_at: now,
        })
        .collect();
    store.record_file_accounts(&records, now).await
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "no {channel} account named {account:?} is known (GET /admin/v1/channel-accounts lists them)"
    )]
    UnknownAccount {
        channel: ChannelName,
        account: String,
    },
    #[error("the {channel} account {account:?} is disabled")]
    Disabled {
        channel: ChannelName,
        account: String,
    },
    #[error("no such app")]
    NoSuchApp,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that every `(channel, account)` names an enabled account the database knows.
pub async fn check_bindings(
    store: &dyn Store,
    bindings: &[(ChannelName, String)],
) -> Result<(), BindError> {
    if bindings.is_empty() {
        return Ok(());
    }
    let known = store.channel_accounts().await?;
    for (channel, account) in bindings {
        match known
            .iter()
            .find(|k| k.channel == *channel && k.name == *account)
        {
            None => {
                return Err(BindError::UnknownAccount {
                    channel: *channel,
                    account: account.clone(),
                });
            }
            Some(k) if !k.enabled => {
                return Err(BindError::Disabled {
                    channel: *channel,
                    account: account.clone(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Binds an app's new payments on `channel` to `account` (`None`: back to the channel's
/// default). Attempts already made keep their account. Every instance sees the change within
/// its app cache's life (5 s).
pub async fn bind(
    store: &dyn Store,
    app: &AppId,
    channel: ChannelName,
    account: Option<&str>,
) -> Result<(), BindError> {
    if let Some(a) = account {
        check_bindings(store, &[(channel, a.to_owned())]).await?;
    }
    if store.bind_app_account(app, channel, account).await? {
        Ok(())
    } else {
        Err(BindError::NoSuchApp)
    }
}

/// Parses `wechatpay=shop-a` (the command line's `--account`).
pub fn parse_binding(text: &str) -> Result<(ChannelName, String), String> {
    let (channel, account) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected CHANNEL=ACCOUNT, e.g. wechatpay=shop-a"))?;
    let channel = ChannelName::parse(channel.trim()).map_err(|_| {
        format!("{channel:?} is not a channel (sandbox, wechatpay, alipay, unionpay)")
    })?;
    let account = account.trim();
    if !payonce_channels::config::valid_account_name(account) {
        return Err(format!(
            "{account:?}: account names are 1-32 of a-z, 0-9, '-' and '_'"
        ));
    }
    Ok((channel, account.to_owned()))
}
