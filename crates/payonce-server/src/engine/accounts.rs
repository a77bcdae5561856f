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
            last_check: None,
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

/// Rebuilds this instance's connectors of the database's (`api`) accounts when they changed
/// since the last look (or `force`). An account whose keys do not open here (a master key this
/// instance lacks, mid-rotation) keeps the connector it had: an instance never drops a working
/// account because of a rotation it has not caught up with. `true`: something was rebuilt.
pub async fn reload(state: &crate::state::AppState, force: bool) -> Result<bool, StoreError> {
    let stamp = state.store.api_accounts_stamp().await?;
    {
        let last = state
            .channels
            .stamp
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !force && *last == Some(stamp) {
            return Ok(false);
        }
    }
    let current = state.channels.snapshot();
    let http = match payonce_channels::config::http_client(state.config.channel_timeout) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the channels' HTTP client");
            return Ok(false);
        }
    };
    let mut database = payonce_channels::ChannelRegistry::default();
    for (record, secrets) in state.store.sealed_accounts().await? {
        if !record.enabled
            || state
                .channels
                .file()
                .account(record.channel, &record.name)
                .is_some()
        {
            continue;
        }
        let opened = open(state, &record, &secrets).and_then(|inline| {
            inline
                .build(
                    &record.name,
                    record.is_default,
                    http.clone(),
                    state.clock.clone(),
                    &|channel, provider| provider_keys(state, channel, provider),
                )
                .map_err(|e| e.to_string())
        });
        match opened {
            Ok(account) => database.insert_account(account),
            Err(e) => {
                tracing::error!(channel = %record.channel, account = %record.name, error = %e, "a channel account from the database cannot be used here");
                if let Some(old) = current.account(record.channel, &record.name) {
                    database.insert_account((**old).clone());
                    continue;
                }
            }
        }
    }
    // Connectors already metered (kept ones) are not wrapped twice: only new ones are built
    // unwrapped, so wrap all fresh builds and keep the kept ones as they were.
    let database = crate::metered::metered_new(database, &current);
    state.channels.install(&database);
    *state
        .channels
        .stamp
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(stamp);
    Ok(true)
}

/// The keys of the service provider account `provider` (of `channels.toml`: providers are
/// configured in the file, their sub-merchants may be added at runtime).
fn provider_keys(
    state: &crate::state::AppState,
    channel: ChannelName,
    provider: &str,
) -> Option<payonce_channels::ProviderKeys> {
    state
        .channels
        .file()
        .account(channel, provider)
        .and_then(|a| a.provider_keys.clone())
}

/// An `api` account's key material, opened with this instance's master key.
fn open(
    state: &crate::state::AppState,
    record: &ChannelAccountRecord,
    secrets: &payonce_store::SealedSecrets,
) -> Result<payonce_channels::inline::InlineAccount, String> {
    let sealed = crate::crypto::SealedAccount {
        sealed: secrets.sealed.clone(),
        data_key_enc: secrets.data_key_enc.clone(),
        master_key_id: secrets.master_key_id.clone(),
    };
    let mut keys: Vec<&crate::crypto::MasterKey> = vec![&state.master_key];
    if let Some(previous) = &state.previous_master_key {
        keys.push(previous);
    }
    let json = crate::crypto::open_account(&keys, record.channel.as_str(), &record.name, &sealed)
        .map_err(|_| {
        format!(
            "sealed under master key {} and this instance does not hold it",
            secrets.master_key_id
        )
    })?;
    serde_json::from_str(&json).map_err(|e| format!("sealed account does not read: {e}"))
}

/// What adding, rotating or enabling an account through the admin API ended with.
#[derive(Debug)]
pub enum SaveOutcome {
    /// Self-check passed: enabled, every instance uses it within seconds.
    Enabled(ChannelAccountRecord),
    /// Self-check failed: kept disabled, with what is wrong.
    Disabled(ChannelAccountRecord, String),
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("account names are 1-32 of a-z, 0-9, '-' and '_'")]
    BadName,
    #[error("the {0} account {1:?} comes from channels.toml: change it there")]
    FileAccount(ChannelName, String),
    #[error("no {0} account named {1:?}")]
    NoSuchAccount(ChannelName, String),
    #[error("the account's keys cannot be opened here: {0}")]
    Sealed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds an account (or rotates its keys): checks it — offline (keys parse, the merchant key is
/// its certificate's, UnionPay's chain holds), then one harmless signed call — seals its key
/// material, and saves it, enabled only if every check passed.
pub async fn save(
    state: &crate::state::AppState,
    name: &str,
    is_default: bool,
    inline: &payonce_channels::inline::InlineAccount,
) -> Result<SaveOutcome, SaveError> {
    if !payonce_channels::config::valid_account_name(name) {
        return Err(SaveError::BadName);
    }
    let channel = inline.channel();
    if state.channels.file().account(channel, name).is_some() {
        return Err(SaveError::FileAccount(channel, name.to_owned()));
    }
    let now = state.clock.now();
    let (verdict, fingerprints) = check(state, name, is_default, inline).await;
    let record = ChannelAccountRecord {
        channel,
        name: name.to_owned(),
        source: "api".into(),
        merchant_id: inline.merchant_id().to_owned(),
        is_default,
        enabled: verdict.is_ok(),
        fingerprints,
        last_check: Some((
            now,
            verdict.is_ok(),
            match &verdict {
                Ok(m) | Err(m) => m.clone(),
            },
        )),
        created_at: now,
        updated_at: now,
    };
    let json = serde_json::to_string(inline).expect("serialisable");
    let sealed = crate::crypto::seal_account(&state.master_key, channel.as_str(), name, &json);
    let secrets = payonce_store::SealedSecrets {
        sealed: sealed.sealed,
        data_key_enc: sealed.data_key_enc,
        master_key_id: sealed.master_key_id,
    };
    match state.store.save_api_account(&record, &secrets, now).await? {
        payonce_store::SaveAccount::Saved => {}
        payonce_store::SaveAccount::FileAccount => {
            return Err(SaveError::FileAccount(channel, name.to_owned()));
        }
    }
    reload(state, true).await?;
    Ok(match verdict {
        Ok(_) => SaveOutcome::Enabled(record),
        Err(m) => SaveOutcome::Disabled(record, m),
    })
}

/// Every check of an account, in order; the fingerprints of what parsed.
async fn check(
    state: &crate::state::AppState,
    name: &str,
    is_default: bool,
    inline: &payonce_channels::inline::InlineAccount,
) -> (Result<String, String>, Vec<(String, String)>) {
    let http = match payonce_channels::config::http_client(state.config.channel_timeout) {
        Ok(h) => h,
        Err(e) => return (Err(e.to_string()), Vec::new()),
    };
    match inline.build(
        name,
        is_default,
        http,
        state.clock.clone(),
        &|channel, provider| provider_keys(state, channel, provider),
    ) {
        Err(problem) => (Err(problem.to_string()), Vec::new()),
        Ok(account) => {
            let verdict = payonce_channels::inline::signed_call_check(&account)
                .await
                .map_err(|p| p.to_string());
            (verdict, account.fingerprints)
        }
    }
}

/// Disables an account (its attempts keep naming it; new payments of apps bound to it are
/// refused until it is enabled again) or enables one after a passing self-check.
pub async fn set_enabled(
    state: &crate::state::AppState,
    channel: ChannelName,
    name: &str,
    enabled: bool,
) -> Result<SaveOutcome, SaveError> {
    let known = state.store.channel_accounts().await?;
    let Some(record) = known
        .into_iter()
        .find(|a| a.channel == channel && a.name == name)
    else {
        return Err(SaveError::NoSuchAccount(channel, name.to_owned()));
    };
    if record.source == "file" {
        return Err(SaveError::FileAccount(channel, name.to_owned()));
    }
    let now = state.clock.now();
    if !enabled {
        state
            .store
            .set_account_enabled(channel, name, false, now)
            .await?;
        reload(state, true).await?;
        let mut r = record;
        r.enabled = false;
        return Ok(SaveOutcome::Disabled(r, "disabled by the operator".into()));
    }
    let (_, secrets) = state
        .store
        .sealed_accounts()
        .await?
        .into_iter()
        .find(|(r, _)| r.channel == channel && r.name == name)
        .ok_or_else(|| SaveError::NoSuchAccount(channel, name.to_owned()))?;
    let inline = open(state, &record, &secrets).map_err(SaveError::Sealed)?;
    let (verdict, _) = check(state, name, record.is_default, &inline).await;
    let message = match &verdict {
        Ok(m) | Err(m) => m.clone(),
    };
    state
        .store
        .record_account_check(channel, name, verdict.is_ok(), &message, now)
        .await?;
    let mut r = record;
    if verdict.is_ok() {
        state
            .store
            .set_account_enabled(channel, name, true, now)
            .await?;
        r.enabled = true;
    }
    reload(state, true).await?;
    Ok(match verdict {
        Ok(_) => SaveOutcome::Enabled(r),
        Err(m) => SaveOutcome::Disabled(r, m),
    })
}
