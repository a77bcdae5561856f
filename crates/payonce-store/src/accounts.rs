//! Channel accounts (merchant numbers) the deployment knows, and which one each app uses: the
//! `ChannelAccounts` trait of the store and its implementation for `SqlStore`. Only public
//! facts are kept here (names, merchant numbers, fingerprints); keys stay with the connectors.

use crate::db::{from_row, q};
use crate::sql::corrupt;
use crate::*;
use payonce_core::{AppId, ChannelName, Timestamp};
use std::collections::BTreeMap;

/// One channel account as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAccountRecord {
    pub channel: ChannelName,
    pub name: String,
    /// `file`: from `channels.toml`, recorded by `serve` at start.
    pub source: String,
    /// WeChat `mchid`, Alipay `app_id`, UnionPay `merId`.
    pub merchant_id: String,
    pub is_default: bool,
    /// A file account no longer in the file is kept (attempts name it) but disabled.
    pub enabled: bool,
    /// `(what, SHA-256 hex)` of public keys and certificates.
    pub fingerprints: Vec<(String, String)>,
    /// The last self-check: when, whether it passed, what it said.
    pub last_check: Option<(Timestamp, bool, String)>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An `api` account's key material as kept: sealed under its own data key, the data key
/// wrapped by the master key `master_key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecrets {
    pub sealed: String,
    pub data_key_enc: String,
    pub master_key_id: String,
}

/// What adding or rotating an `api` account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveAccount {
    Saved,
    /// `channels.toml` has an account of that name: the file owns it.
    FileAccount,
}

#[async_trait::async_trait]
pub trait ChannelAccounts: Send + Sync {
    /// Records the accounts of `channels.toml` as they are now: new ones added, known ones
    /// updated and enabled, file accounts the file no longer names disabled (never deleted:
    /// attempts name them).
    async fn record_file_accounts(
        &self,
        accounts: &[ChannelAccountRecord],
        now: Timestamp,
    ) -> Result<()>;
    /// Every account, by channel then name.
    async fn channel_accounts(&self) -> Result<Vec<ChannelAccountRecord>>;
    /// Adds an account through the admin API, or replaces its keys (a rotation): enabled only
    /// if `record.enabled` (its self-check passed).
    async fn save_api_account(
        &self,
        record: &ChannelAccountRecord,
        secrets: &SealedSecrets,
        now: Timestamp,
    ) -> Result<SaveAccount>;
    /// Enables or disables an account (`false`: no such account).
    async fn set_account_enabled(
        &self,
        channel: ChannelName,
        name: &str,
        enabled: bool,
        now: Timestamp,
    ) -> Result<bool>;
    /// Records a self-check's verdict on an account.
    async fn record_account_check(
        &self,
        channel: ChannelName,
        name: &str,
        ok: bool,
        message: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Every `api` account with its sealed key material (enabled or not).
    async fn sealed_accounts(&self) -> Result<Vec<(ChannelAccountRecord, SealedSecrets)>>;
    /// The newest change to the `api` accounts and how many there are: an instance rebuilds
    /// its connectors when this moves.
    async fn api_accounts_stamp(&self) -> Result<(i64, i64)>;
    /// A master key rotation, in one transaction: every account's data key re-wrapped, every
    /// app's webhook secrets (current, previous) re-encrypted.
    async fn rewrap_secrets(
        &self,
        accounts: &[(ChannelName, String, SealedSecrets)],
        apps: &[(AppId, String, Option<String>)],
    ) -> Result<()>;
    /// Binds an app to an account of a channel (`None`: back to the channel's default).
    /// `false`: no such app.
    async fn bind_app_account(
        &self,
        app: &AppId,
        channel: ChannelName,
        account: Option<&str>,
    ) -> Result<bool>;
}

pub(crate) struct ChannelAccountRow {
    channel: String,
    name: String,
    source: String,
    merchant_id: String,
    is_default: bool,
    enabled: bool,
    fingerprints: String,
    last_check_at: Option<i64>,
    last_check_ok: Option<bool>,
    last_check: Option<String>,
    created_at: i64,
    updated_at: i64,
}
from_row!(ChannelAccountRow {
    channel,
    name,
    source,
    merchant_id,
    is_default,
    enabled,
    fingerprints,
    last_check_at,
    last_check_ok,
    last_check,
    created_at,
    updated_at,
});

impl TryFrom<ChannelAccountRow> for ChannelAccountRecord {
    type Error = StoreError;
    fn try_from(r: ChannelAccountRow) -> Result<Self, StoreError> {
        Ok(ChannelAccountRecord {
            channel: ChannelName::parse(&r.channel).map_err(|_| corrupt("channel", &r.channel))?,
            name: r.name,
            source: r.source,
            merchant_id: r.merchant_id,
            is_default: r.is_default,
            enabled: r.enabled,
            fingerprints: serde_json::from_str(&r.fingerprints)
                .map_err(|_| corrupt("fingerprints", &r.fingerprints))?,
            last_check: match (r.last_check_at, r.last_check_ok, r.last_check) {
                (Some(at), Some(ok), Some(m)) => Some((Timestamp(at), ok, m)),
                _ => None,
            },
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        })
    }
}

impl crate::db::Model for ChannelAccountRecord {
    type Row = ChannelAccountRow;
}

const COLS: &str = "channel, name, source, merchant_id, is_default, enabled, fingerprints, \
     last_check_at, last_check_ok, last_check, created_at, updated_at";

#[async_trait::async_trait]
impl ChannelAccounts for SqlStore {
    async fn record_file_accounts(
        &self,
        accounts: &[ChannelAccountRecord],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Every file account off first, then the file's own on: one transaction, so no reader
        // sees a deployment without its accounts.
        q("UPDATE channel_accounts SET enabled = $1, is_default = $1, updated_at = $2 WHERE source = 'file' AND enabled = $3")
            .bind(false)
            .bind(now.0)
            .bind(true)
            .execute(&mut tx)
            .await?;
        for a in accounts {
            let fingerprints = serde_json::to_string(&a.fingerprints).expect("serialisable");
            q(
                "INSERT INTO channel_accounts (channel, name, source, merchant_id, is_default, enabled, fingerprints, created_at, updated_at) \
                 VALUES ($1, $2, 'file', $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (channel, name) DO UPDATE SET source = 'file', merchant_id = $3, is_default = $4, enabled = $5, \
                 fingerprints = $6, updated_at = $7",
            )
            .bind(a.channel.as_str())
            .bind(&a.name)
            .bind(&a.merchant_id)
            .bind(a.is_default)
            .bind(true)
            .bind(&fingerprints)
            .bind(now.0)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn channel_accounts(&self) -> Result<Vec<ChannelAccountRecord>> {
        crate::db::q_fmt(format!(
            "SELECT {COLS} FROM channel_accounts ORDER BY channel, name"
        ))
        .load_all::<ChannelAccountRecord>(&self.reader())
        .await
    }

    async fn save_api_account(
        &self,
        r: &ChannelAccountRecord,
        secrets: &SealedSecrets,
        now: Timestamp,
    ) -> Result<SaveAccount> {
        let mut tx = self.begin_write().await?;
        let source = q("SELECT source FROM channel_accounts WHERE channel = $1 AND name = $2")
            .bind(r.channel.as_str())
            .bind(&r.name)
            .scalar_optional::<String>(&mut tx)
            .await?;
        if source.as_deref() == Some("file") {
            return Ok(SaveAccount::FileAccount);
        }
        let fingerprints = serde_json::to_string(&r.fingerprints).expect("serialisable");
        let (check_at, check_ok, check) = match &r.last_check {
            Some((at, ok, m)) => (Some(at.0), Some(*ok), Some(m.as_str())),
            None => (None, None, None),
        };
        q(
            "INSERT INTO channel_accounts (channel, name, source, merchant_id, is_default, enabled, fingerprints, created_at, updated_at, \
             sealed, data_key_enc, master_key_id, last_check_at, last_check_ok, last_check) \
             VALUES ($1, $2, 'api', $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (channel, name) DO UPDATE SET merchant_id = $3, is_default = $4, enabled = $5, fingerprints = $6, \
             updated_at = $7, sealed = $8, data_key_enc = $9, master_key_id = $10, last_check_at = $11, last_check_ok = $12, last_check = $13",
        )
        .bind(r.channel.as_str())
        .bind(&r.name)
        .bind(&r.merchant_id)
        .bind(r.is_default)
        .bind(r.enabled)
        .bind(&fingerprints)
        .bind(now.0)
        .bind(&secrets.sealed)
        .bind(&secrets.data_key_enc)
        .bind(&secrets.master_key_id)
        .bind(check_at)
        .bind(check_ok.unwrap_or(false))
        .bind(check)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(SaveAccount::Saved)
    }

    async fn set_account_enabled(
        &self,
        channel: ChannelName,
        name: &str,
        enabled: bool,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = q("UPDATE channel_accounts SET enabled = $1, updated_at = $2 WHERE channel = $3 AND name = $4")
            .bind(enabled)
            .bind(now.0)
            .bind(channel.as_str())
            .bind(name)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn record_account_check(
        &self,
        channel: ChannelName,
        name: &str,
        ok: bool,
        message: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("UPDATE channel_accounts SET last_check_at = $1, last_check_ok = $2, last_check = $3 WHERE channel = $4 AND name = $5")
            .bind(now.0)
            .bind(ok)
            .bind(message)
            .bind(channel.as_str())
            .bind(name)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn sealed_accounts(&self) -> Result<Vec<(ChannelAccountRecord, SealedSecrets)>> {
        let records = crate::db::q_fmt(format!(
            "SELECT {COLS} FROM channel_accounts WHERE source = 'api' ORDER BY channel, name"
        ))
        .load_all::<ChannelAccountRecord>(&self.reader())
        .await?;
        let secrets = q(
            "SELECT channel, name, sealed, data_key_enc, master_key_id FROM channel_accounts WHERE source = 'api' ORDER BY channel, name",
        )
        .fetch_all::<(String, String, String, String, String)>(&self.reader())
        .await?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let (_, _, sealed, data_key_enc, master_key_id) = secrets
                    .iter()
                    .find(|(c, n, ..)| c == r.channel.as_str() && *n == r.name)?
                    .clone();
                Some((
                    r,
                    SealedSecrets {
                        sealed,
                        data_key_enc,
                        master_key_id,
                    },
                ))
            })
            .collect())
    }

    async fn api_accounts_stamp(&self) -> Result<(i64, i64)> {
        let (newest, count) = q(
            "SELECT COALESCE(MAX(updated_at), 0), COUNT(*) FROM channel_accounts WHERE source = 'api'",
        )
        .fetch_one::<(i64, i64)>(&self.reader())
        .await?;
        Ok((newest, count))
    }

    async fn rewrap_secrets(
        &self,
        accounts: &[(ChannelName, String, SealedSecrets)],
        apps: &[(AppId, String, Option<String>)],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (app, enc, prev) in apps {
            q("UPDATE apps SET webhook_secret_enc = $1, webhook_secret_prev_enc = $2 WHERE id = $3")
                .bind(enc)
                .bind(prev.as_deref())
                .bind(app.as_str())
                .execute(&mut tx)
                .await?;
        }
        for (channel, name, s) in accounts {
            q("UPDATE channel_accounts SET data_key_enc = $1, master_key_id = $2 WHERE channel = $3 AND name = $4")
                .bind(&s.data_key_enc)
                .bind(&s.master_key_id)
                .bind(channel.as_str())
                .bind(name)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn bind_app_account(
        &self,
        app: &AppId,
        channel: ChannelName,
        account: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let Some(current) = crate::db::q_fmt(format!(
            "SELECT {} FROM apps WHERE id = $1",
            crate::sql::APP_COLS
        ))
        .bind(app.as_str())
        .load_optional::<App>(&mut tx)
        .await?
        else {
            return Ok(false);
        };
        let mut bindings: BTreeMap<ChannelName, String> = current.channel_accounts;
        match account {
            Some(a) => bindings.insert(channel, a.to_owned()),
            None => bindings.remove(&channel),
        };
        q("UPDATE apps SET channel_accounts = $1 WHERE id = $2")
            .bind(encode_bindings(&bindings).as_deref())
            .bind(app.as_str())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// An app's bindings as the `apps.channel_accounts` column keeps them (`None`: no binding).
pub(crate) fn encode_bindings(b: &BTreeMap<ChannelName, String>) -> Option<String> {
    (!b.is_empty()).then(|| {
        let m: BTreeMap<&str, &str> = b.iter().map(|(c, a)| (c.as_str(), a.as_str())).collect();
        serde_json::to_string(&m).expect("serialisable")
    })
}

pub(crate) fn decode_bindings(text: Option<&str>) -> Result<BTreeMap<ChannelName, String>> {
    let Some(text) = text else {
        return Ok(BTreeMap::new());
    };
    let m: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|_| corrupt("channel_accounts", text))?;
    m.into_iter()
        .map(|(c, a)| {
            Ok((
                ChannelName::parse(&c).map_err(|_| corrupt("channel", &c))?,
                a,
            ))
        })
        .collect()
}
