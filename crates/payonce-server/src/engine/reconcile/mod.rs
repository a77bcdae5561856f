//! Reconciliation (对账): the last net under every other defence. The channel's bill of one day
//! is compared with payonce's records, every difference classified, what can be repaired is
//! repaired through the same decision path as a notification or query (source `statement`), and
//! the rest goes to the abnormal queue for a person:
//!
//! | class | meaning | action |
//! |---|---|---|
//! | `repaired_paid` | the channel charged; payonce had the attempt not succeeded | applied: paid, or a duplicate refunded |
//! | `repaired_refund` | the channel refunded a refund payonce still had open | settled |
//! | `missing_at_channel` | payonce has a success the bill lacks, and a query does not confirm it | abnormal |
//! | `amount_mismatch` | the bill's amount differs from the attempt's (or the refund's) | abnormal, never applied |
//! | `unknown_trade` | a payment payonce never issued | abnormal |
//! | `unknown_refund` | a refund payonce never requested (or recorded failed) | abnormal |
//!
//! A run is idempotent: items are recorded once per (run, class, reference), and a repair that
//! was made is, on a re-run, simply a match. A run reads ONE channel account's bill (one bill per
//! merchant number) and compares it with that account's attempts only: a row naming another
//! account's order is a payment this merchant never issued.

use crate::engine::payments::{self, order_ref};
use crate::state::AppState;
use payonce_channels::bill::{self, BillEntry, BillFormat};
use payonce_channels::{StatementKind, StatementLine, TradeState};
use payonce_core::{Attempt, Refund, RefundResult};
use payonce_core::{ChannelName, Timestamp};
use payonce_store::{
    Billed, OutcomeApplied, OutcomeSource, ReconciliationItem, RefundNoticeApplied, StoredBill,
};
use std::collections::{BTreeMap, HashMap, HashSet};

mod calendar;
mod rows;

pub use calendar::{beijing_date, beijing_day, beijing_yesterday, bill_window};
pub use payonce_core::reconciliation::CLASSES;
use rows::*;

/// What one run found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub id: Option<String>,
    pub channel: String,
    pub account: String,
    pub bill_date: String,
    /// `completed`, `failed`, or `dry_run`.
    pub status: String,
    pub reason: Option<String>,
    /// Bill rows read.
    pub rows: usize,
    /// Rows that agreed with payonce as they were.
    pub matched: usize,
    /// Items by class (every class listed, zero or not).
    pub classes: BTreeMap<String, usize>,
    /// The bill's own sums: what it says moved that day.
    pub totals: BillTotals,
    /// Where the bill came from: `downloaded`, or `stored` (a re-run reads the kept copy), or
    /// `no_bill` (the channel said, in its own signed answer, it has no bill for the day).
    pub bill_source: String,
}

/// Sums of a bill's rows (fees are per run, not one item per row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BillTotals {
    pub payments: usize,
    /// Fen: the payments' order amounts.
    pub paid: i64,
    /// Fen: settled after channel-side discounts.
    pub settled: i64,
    pub refunds: usize,
    pub refunded: i64,
    /// Thousandths of a fen: fees charged minus fees given back.
    pub fees_millifen: i64,
    /// Rows payonce could not classify (shown, not applied).
    pub unrecognised: usize,
}

impl Report {
    /// Differences a person has to look at.
    pub fn needs_a_person(&self) -> usize {
        self.classes
            .iter()
            .filter(|(c, _)| ReconciliationItem::needs_a_person(c))
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("no such channel configured: {0}")]
    NoChannel(String),
    #[error("no such {0} account configured: {1}")]
    NoAccount(String, String),
    #[error(
        "the {0} account {1} is a service provider: it has no bill of its own; reconcile each of its sub-merchants"
    )]
    Provider(String, String),
    #[error("not a date (YYYY-MM-DD): {0}")]
    BadDate(String),
    #[error("another instance is reconciling {0} {1} right now")]
    Busy(String, String),
    #[error(transparent)]
    Store(#[from] payonce_store::StoreError),
}

/// Why the day's bill cannot be used: the run fails with this as its `reason`.
#[derive(Debug, thiserror::Error)]
enum BillFailure {
    /// Reading or keeping the bill in the store failed.
    #[error("{0}")]
    Store(#[from] payonce_store::StoreError),
    /// The channel did not deliver it.
    #[error("download: {0}")]
    Download(payonce_channels::ChannelError),
    /// It does not read, or does not add up.
    #[error("{0}")]
    Bill(#[from] bill::BillError),
}

/// How far a run has got, for a progress display: (phase, rows done). Phases: `download`,
/// `verify`, `apply`, `missing`.
pub type Progress<'a> = &'a (dyn Fn(&str, usize) + Send + Sync);

/// One run of (channel, bill date): the bill (the kept copy, or a download), proven whole,
/// then every difference classified, what can be repaired repaired (not with `dry_run`, which
/// writes nothing at all), the rest recorded.
///
/// `account`: the channel account whose bill is read; `None`: the channel's default account.
pub async fn reconcile(
    state: &AppState,
    owner: &str,
    channel_name: &str,
    account: Option<&str>,
    bill_date: &str,
    dry_run: bool,
) -> Result<Report, ReconcileError> {
    reconcile_with(
        state,
        owner,
        channel_name,
        account,
        bill_date,
        RunOptions {
            dry_run,
            refetch: false,
        },
        &|_, _| {},
    )
    .await
}

/// How a run goes beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Classify only: repair nothing, record nothing, keep no bill.
    pub dry_run: bool,
    /// Download the bill again even though one is kept (the channel corrected its bill); the
    /// new copy replaces the old once it verifies.
    pub refetch: bool,
}

#[allow(clippy::too_many_arguments)]
pub async fn reconcile_with(
    state: &AppState,
    owner: &str,
    channel_name: &str,
    account: Option<&str>,
    bill_date: &str,
    options: RunOptions,
    progress: Progress<'_>,
) -> Result<Report, ReconcileError> {
    let dry_run = options.dry_run;
    let name = ChannelName::parse(channel_name)
        .map_err(|_| ReconcileError::NoChannel(channel_name.to_owned()))?;
    if state.channels.accounts(name).is_empty() {
        return Err(ReconcileError::NoChannel(channel_name.to_owned()));
    }
    let found = match account {
        Some(a) => state.channels.account(name, a),
        None => state.channels.default_account(name),
    };
    let Some(found) = found else {
        return Err(ReconcileError::NoAccount(
            channel_name.to_owned(),
            account.unwrap_or("(none is the default)").to_owned(),
        ));
    };
    if !found.takes_payments() {
        return Err(ReconcileError::Provider(
            channel_name.to_owned(),
            found.name.clone(),
        ));
    }
    let (channel, account_name) = (found.connector.clone(), found.name.clone());
    let account = account_name;
    let scope = Scope {
        name,
        account: &account,
        merchant_id: &found.merchant_id,
    };
    let (from, to) = bill_window(name, bill_date)
        .ok_or_else(|| ReconcileError::BadDate(bill_date.to_owned()))?;
    let now = state.clock.now();
    let run = if dry_run {
        None
    } else {
        // Long enough to read a large bill; a runner that dies lets another take over after it.
        let lease_ms = 10 * 60 * 1000;
        Some(
            state
                .store
                .begin_reconciliation(name, &account, bill_date, owner, lease_ms, now)
                .await?
                .ok_or_else(|| {
                    ReconcileError::Busy(channel_name.to_owned(), bill_date.to_owned())
                })?,
        )
    };
    let mut report = Report {
        id: run.as_ref().map(|r| r.id.clone()),
        channel: name.as_str().to_owned(),
        account: account.to_string(),
        bill_date: bill_date.to_owned(),
        status: if dry_run {
            "dry_run".into()
        } else {
            "completed".into()
        },
        classes: CLASSES.iter().map(|c| (c.to_string(), 0)).collect(),
        ..Report::default()
    };
    // A bill that cannot be had, does not verify or does not add up applies nothing; it is not
    // kept, so the next run downloads it again.
    progress("download", 0);
    let (format, content) = match obtain_bill(
        state,
        &scope,
        &*channel,
        bill_date,
        options,
        &mut report,
        progress,
    )
    .await
    {
        Ok(Obtained::Bill(format, content)) => (format, content),
        Ok(Obtained::NoBill(code)) => {
            no_bill(
                state,
                &scope,
                from,
                to,
                &code,
                run.as_ref().map(|r| r.id.clone()),
                &mut report,
                dry_run,
                progress,
            )
            .await?;
            finish(state, owner, &mut report).await?;
            return Ok(report);
        }
        Err(reason) => {
            report.status = "failed".into();
            report.reason = Some(reason.to_string());
            finish(state, owner, &mut report).await?;
            return Ok(report);
        }
    };
    // Apply, a batch of rows at a time: one look-up of their attempts and refunds, one write of
    // what the bill says of them.
    let mut on_bill = dry_run.then(HashSet::new);
    let mut recorder = Recorder {
        state,
        run: run.as_ref().map(|r| r.id.clone()),
        report: &mut report,
        dry_run,
    };
    let mut batch: Vec<StatementLine> = Vec::with_capacity(payonce_store::BATCH);
    let mut done = 0usize;
    let rows = bill::entries(format, &content)
        .map_err(|e| ReconcileError::Store(payonce_store::StoreError::Corrupt(e.to_string())))?;
    for entry in rows {
        // The bill was proven whole before: an error now would be the store's bytes changing.
        let Ok(BillEntry::Line(line)) = entry else {
            continue;
        };
        if let Some(set) = on_bill
            .as_mut()
            .filter(|_| line.kind == StatementKind::Payment)
        {
            set.insert(line.out_trade_no.clone());
        }
        batch.push(line);
        if batch.len() == payonce_store::BATCH {
            apply_batch(&mut recorder, &scope, bill_date, from, &batch).await?;
            done += batch.len();
            progress("apply", done);
            batch.clear();
        }
    }
    apply_batch(&mut recorder, &scope, bill_date, from, &batch).await?;
    progress("apply", done + batch.len());
    drop(content);
    // Successes payonce has that the bill lacks. A payment just before midnight (UnionPay: just
    // before the 23:00 cut-off) can land in the next day's bill, which marks it when it is
    // reconciled; until then the channel is asked before anyone is bothered.
    let unbilled = match &on_bill {
        None => {
            state
                .store
                .attempts_paid_between(name, &account, from, to, true)
                .await?
        }
        Some(set) => state
            .store
            .attempts_paid_between(name, &account, from, to, false)
            .await?
            .into_iter()
            .filter(|a| !set.contains(a.out_trade_no.as_str()))
            .collect(),
    };
    for (i, a) in unbilled.iter().enumerate() {
        progress("missing", i + 1);
        if let Ok(TradeState::Paid { .. }) = channel.query(&order_ref(a)).await {
            continue;
        }
        let order = state.store.order_by_id(&a.order_id).await?;
        recorder
            .item(
                "missing_at_channel",
                a.out_trade_no.as_str(),
                order
                    .as_ref()
                    .map(|o| (o.app_id.to_string(), o.id.to_string())),
                Some(a.amount.minor),
                None,
                "payonce recorded this payment; the bill and a query do not show it",
            )
            .await?;
    }
    finish(state, owner, &mut report).await?;
    Ok(report)
}

/// The channel has no bill for the day (its own signed "no bill" answer): it booked nothing. A
/// day on which payonce recorded no payment either is an empty, completed reconciliation. A
/// payment payonce recorded that day (and no other day's bill has shown) contradicts the
/// channel: each is `missing_at_channel`, for a person — never a silent success. No query
/// excuses it, as it would on a day with a bill: the channel's own statement of the day says
/// the payment is not there.
#[allow(clippy::too_many_arguments)]
async fn no_bill(
    state: &AppState,
    scope: &Scope<'_>,
    from: Timestamp,
    to: Timestamp,
    code: &str,
    run: Option<String>,
    report: &mut Report,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<(), ReconcileError> {
    let paid = state
        .store
        .attempts_paid_between(scope.name, scope.account, from, to, true)
        .await?;
    let mut recorder = Recorder {
        state,
        run,
        report,
        dry_run,
    };
    for (i, a) in paid.iter().enumerate() {
        progress("missing", i + 1);
        let order = state.store.order_by_id(&a.order_id).await?;
        let detail = format!(
            "payonce recorded this payment; the channel says it has no bill for the day ({code})"
        );
        recorder
            .item(
                "missing_at_channel",
                a.out_trade_no.as_str(),
                order
                    .as_ref()
                    .map(|o| (o.app_id.to_string(), o.id.to_string())),
                Some(a.amount.minor),
                None,
                &detail,
            )
            .await?;
    }
    Ok(())
}

/// The day's bill, proven whole: the kept copy when this day's bill was kept (a re-run reads
/// what the first run read), else a download, which is kept once it verified (not in a dry
/// run), or the channel's word that it has none. `Err` is the reason the run fails.
async fn obtain_bill(
    state: &AppState,
    scope: &Scope<'_>,
    channel: &dyn payonce_channels::Channel,
    bill_date: &str,
    options: RunOptions,
    report: &mut Report,
    progress: Progress<'_>,
) -> Result<Obtained, BillFailure> {
    let kept = if options.refetch {
        None
    } else {
        state
            .store
            .stored_bill(scope.name, scope.merchant_id, bill_date)
            .await?
    };
    let name = scope.name;
    if let Some((kept, content)) = kept {
        match BillFormat::parse(&kept.format) {
            Some(format) if sha256_hex(&content) == kept.sha256 => {
                report.totals = verify(format, &content, progress)?;
                report.bill_source = "stored".into();
                return Ok(Obtained::Bill(format, content));
            }
            // Damaged at rest (or a format this binary does not know): fetch it again.
            _ => tracing::warn!(
                channel = name.as_str(),
                bill_date,
                "the kept bill does not match its hash; downloading it again"
            ),
        }
    }
    let downloaded = match channel
        .download_bill(bill_date)
        .await
        .map_err(BillFailure::Download)?
    {
        payonce_channels::bill::BillDownload::Bill(b) => b,
        payonce_channels::bill::BillDownload::NoBill { code } => {
            report.bill_source = "no_bill".into();
            return Ok(Obtained::NoBill(code));
        }
    };
    report.totals = verify(downloaded.format, &downloaded.content, progress)?;
    report.bill_source = "downloaded".into();
    if !options.dry_run {
        let kept = StoredBill {
            id: payonce_core::EventId::new()
                .as_str()
                .replacen("evt_", "bil_", 1),
            channel: name.as_str().to_owned(),
            merchant_account: downloaded.merchant_account.clone(),
            bill_date: bill_date.to_owned(),
            bill_type: downloaded.bill_type.clone(),
            format: downloaded.format.as_str().to_owned(),
            sha256: sha256_hex(&downloaded.content),
            size: downloaded.content.len() as i64,
            fetched_at: state.clock.now().0,
        };
        state.store.save_bill(&kept, &downloaded.content).await?;
    }
    Ok(Obtained::Bill(downloaded.format, downloaded.content))
}

/// The account one run reconciles: its channel, its name (attempts record it) and its merchant
/// number (kept bills record it).
pub(super) struct Scope<'a> {
    pub name: ChannelName,
    pub account: &'a str,
    pub merchant_id: &'a str,
}

/// What `obtain_bill` got: the day's bill (its format and packed bytes), or the channel's code
/// for "no bill for that day".
enum Obtained {
    Bill(BillFormat, Vec<u8>),
    NoBill(String),
}

/// Reads every row once, adding up what the bill says; any unreadable row, truncation or
/// totals that disagree with the rows → the reason the bill is refused.
fn verify(
    format: BillFormat,
    content: &[u8],
    progress: Progress<'_>,
) -> Result<BillTotals, bill::BillError> {
    let mut t = BillTotals::default();
    for (i, entry) in bill::entries(format, content)?.enumerate() {
        match entry? {
            BillEntry::Line(l) if l.kind == StatementKind::Payment => {
                t.payments += 1;
                t.paid += l.amount;
                t.settled += l.settled_amount;
                t.fees_millifen += l.fee_millifen;
            }
            BillEntry::Line(l) => {
                t.refunds += 1;
                t.refunded += l.amount;
                t.fees_millifen += l.fee_millifen;
            }
            BillEntry::Unrecognised(_) => t.unrecognised += 1,
        }
        if i % 10_000 == 0 {
            progress("verify", i);
        }
    }
    Ok(t)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Ends the run: its counts — of every item the run of this channel and day holds, so a re-run
/// that finds what an earlier one found (and repairs nothing twice) reports the same — the
/// metrics, and one `reconciliation.completed` event to each app with differences, that app's
/// own counts only (a channel account serves many apps).
async fn finish(state: &AppState, owner: &str, report: &mut Report) -> Result<(), ReconcileError> {
    let Some(id) = report.id.clone() else {
        return Ok(());
    };
    let now = state.clock.now();
    let mut per_app: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    // A failed run still reports what earlier runs of the day found (their items stay).
    {
        let mut classes: BTreeMap<String, usize> =
            CLASSES.iter().map(|c| (c.to_string(), 0)).collect();
        let mut after = None;
        loop {
            let items = state
                .store
                .reconciliation_items(&id, None, after.as_deref(), 500)
                .await?;
            let Some(last) = items.last() else { break };
            after = Some(last.id.clone());
            for item in &items {
                *classes.entry(item.class.clone()).or_default() += 1;
                if let Some(app) = &item.app_id {
                    *per_app
                        .entry(app.clone())
                        .or_default()
                        .entry(item.class.clone())
                        .or_default() += 1;
                }
            }
        }
        report.classes = classes;
    }
    let summary = serde_json::json!({"rows": report.rows, "matched": report.matched, "classes": report.classes, "totals": report.totals, "bill_source": report.bill_source}).to_string();
    state
        .store
        .finish_reconciliation(
            &id,
            owner,
            &report.status,
            &summary,
            report.reason.as_deref(),
            now,
        )
        .await?;
    if report.status == "completed" {
        metrics::gauge!("payonce_reconciliation_last_success_seconds", "channel" => report.channel.clone(), "account" => report.account.clone()).set(now.0 as f64 / 1000.0);
        for (app, classes) in per_app {
            let data = serde_json::json!({"reconciliation_id": id, "channel": report.channel, "bill_date": report.bill_date, "classes": classes});
            // One announcement per (run, app): a re-run does not announce again.
            let event_id = format!(
                "evt_{}_{}",
                id.trim_start_matches("rec_"),
                app.trim_start_matches("app_")
            );
            state
                .store
                .insert_app_event(
                    &payonce_core::AppId::from_trusted(app),
                    &event_id,
                    "reconciliation.completed",
                    data,
                    now,
                )
                .await?;
        }
    }
    Ok(())
}
