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
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
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
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        })
    }
}

impl crate::db::Model for ChannelAccountRecord {
    type Row = ChannelAccountRow;
}

const COLS: &str =
    "channel, name, source, merchant_id, is_default, enabled, fingerprints, created_at, updated_at";

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
