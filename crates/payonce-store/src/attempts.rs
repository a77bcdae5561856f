//! Attempts (one channel order each): the prepay path and applying what channels say: the
//! `Attempts` trait of the store and its implementation for `SqlStore`.

use crate::db::{Tx, q, q_fmt};
use crate::sql::ATTEMPT_COLS;
use crate::*;
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, PayMethod, Timestamp};

#[async_trait::async_trait]
pub trait Attempts: Send + Sync {
    async fn attempts_of(&self, order: &OrderId) -> Result<Vec<Attempt>>;
    async fn attempt(&self, id: &AttemptId) -> Result<Option<Attempt>>;
    /// What a duplicate prepay is answered with, in one indexed read: the order's pending
    /// attempt on `channel` by `method` whose credential is still live at `now`, provided the
    /// order is the app's, open and unexpired. `None` sends the prepay down the slow path.
    async fn live_credential(
        &self,
        app: &AppId,
        order: &OrderId,
        channel: ChannelName,
        method: PayMethod,
        now: Timestamp,
    ) -> Result<Option<Attempt>>;
    async fn attempt_by_out_trade_no(
        &self,
        channel: ChannelName,
        out_trade_no: &str,
    ) -> Result<Option<Attempt>>;
    /// Attempts whose payment the channel numbered `trade_no` (one, unless something is wrong).
    async fn attempts_with_channel_trade_no(
        &self,
        channel: ChannelName,
        trade_no: &str,
    ) -> Result<Vec<Attempt>>;
    /// Writes the intent (attempt `created`) before any channel call, if the order is open and
    /// has no active attempt. The partial unique index makes the race impossible to lose twice.
    async fn begin_attempt(&self, attempt: &Attempt, now: Timestamp) -> Result<BeginAttempt>;
    /// Records what the prepay call returned.
    async fn record_prepay(
        &self,
        attempt: &AttemptId,
        result: &PrepayResult,
        now: Timestamp,
    ) -> Result<Attempt>;
    /// Stores a re-issued credential of a PENDING attempt (same channel order). `None`: the
    /// attempt is no longer pending (paid, closed…), nothing written.
    async fn refresh_credential(
        &self,
        attempt: &AttemptId,
        credential: &str,
        credential_expires_at: Timestamp,
        payable_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Attempt>>;
    /// Marks a `created` attempt whose caller never came back (crashed, or stuck past the call
    /// timeout) as `unknown`, so a query settles it.
    async fn mark_stale_created(
        &self,
        attempt: &AttemptId,
        created_before: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Attempt>>;
    /// The one function that applies a channel outcome — from a notification, a query, a close
    /// answer or reconciliation — to an attempt and its order.
    async fn apply_outcome(
        &self,
        outcome: &ChannelOutcome,
        now: Timestamp,
    ) -> Result<OutcomeApplied>;
}

impl SqlStore {
    pub(crate) async fn tx_attempt_by_no(
        tx: &mut Tx,
        channel: &str,
        out_trade_no: &str,
    ) -> Result<Option<Attempt>> {
        q_fmt(format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND out_trade_no = $2"
        ))
        .bind(channel)
        .bind(out_trade_no)
        .load_optional::<Attempt>(&mut *tx)
        .await
    }

    pub(crate) async fn tx_attempt(tx: &mut Tx, id: &str) -> Result<Option<Attempt>> {
        q_fmt(format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"))
            .bind(id)
            .load_optional::<Attempt>(&mut *tx)
            .await
    }

    pub(crate) async fn tx_active_attempt(tx: &mut Tx, order_id: &str) -> Result<Option<Attempt>> {
        q_fmt(format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE order_id = $1 AND status IN ('created','pending','unknown')"))
        .bind(order_id)
        .load_optional::<Attempt>(&mut *tx)
            .await
    }
}

#[async_trait::async_trait]
impl Attempts for SqlStore {
    async fn attempts_of(&self, order: &OrderId) -> Result<Vec<Attempt>> {
        q_fmt(format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE order_id = $1 ORDER BY id"
        ))
        .bind(order.as_str())
        .load_all::<Attempt>(&self.reader())
        .await
    }

    async fn attempt(&self, id: &AttemptId) -> Result<Option<Attempt>> {
        q_fmt(format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"))
            .bind(id.as_str())
            .load_optional::<Attempt>(&self.reader())
            .await
    }

    async fn live_credential(
        &self,
        app: &AppId,
        order: &OrderId,
        channel: ChannelName,
        method: PayMethod,
        now: Timestamp,
    ) -> Result<Option<Attempt>> {
        // The active-attempt index finds the one row; the order's own row says it is open.
        q_fmt(format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE order_id = $1 AND status = 'pending' \
             AND channel = $2 AND method = $3 AND credential IS NOT NULL \
             AND credential_expires_at > $4 AND EXISTS (SELECT 1 FROM orders o \
             WHERE o.id = attempts.order_id AND o.app_id = $5 \
             AND o.status IN ('unpaid', 'paying') AND o.expires_at > $4)"
        ))
        .bind(order.as_str())
        .bind(channel.as_str())
        .bind(method.as_str())
        .bind(now.0)
        .bind(app.as_str())
        .load_optional::<Attempt>(&self.reader())
        .await
    }

    async fn attempt_by_out_trade_no(
        &self,
        channel: ChannelName,
        no: &str,
    ) -> Result<Option<Attempt>> {
        q_fmt(format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND out_trade_no = $2"
        ))
        .bind(channel.as_str())
        .bind(no)
        .load_optional::<Attempt>(&self.reader())
        .await
    }

    async fn attempts_with_channel_trade_no(
        &self,
        channel: ChannelName,
        trade_no: &str,
    ) -> Result<Vec<Attempt>> {
        q_fmt(format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND channel_trade_no = $2"
        ))
        .bind(channel.as_str())
        .bind(trade_no)
        .load_all::<Attempt>(&self.reader())
        .await
    }

    async fn begin_attempt(&self, a: &Attempt, now: Timestamp) -> Result<BeginAttempt> {
        let mut tx = self.begin_write().await?;
        let Some(order) = Self::lock_order(&mut tx, a.order_id.as_str()).await? else {
            return Ok(BeginAttempt::NoSuchOrder);
        };
        if !order.status.is_open() || order.expires_at <= now {
            return Ok(BeginAttempt::OrderNotOpen(order));
        }
        // No read for an active attempt first: the partial unique index refuses a second one,
        // and that refusal (rare: the caller looked a moment ago) reads it.
        let inserted = q(
            "INSERT INTO attempts (id, order_id, channel, method, out_trade_no, amount, currency, status, \
             version, created_at, updated_at, prepay_request, next_query_at, account) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'created', 1, $8, $8, $9, $10, $11)",
        )
        .bind(a.id.as_str())
        .bind(a.order_id.as_str())
        .bind(a.channel.as_str())
        .bind(a.method.as_str())
        .bind(a.out_trade_no.as_str())
        .bind(a.amount.minor)
        .bind(a.amount.currency.as_str())
        .bind(now.0)
        .bind(&a.prepay_request)
        // Claimable from the moment it is written: if its caller dies before recording
        // the channel's answer, the active-query worker still finds it.
        .bind(a.next_query_at.map(|t| t.0))
        .bind(&a.account)
        .execute(&mut tx)
        .await;
        match inserted {
            Ok(_) => {}
            // The partial unique index caught a racing prepay: it won, we did nothing.
            Err(e) if crate::sql::is_unique_violation(&e) => {
                drop(tx);
                let mut tx = self.begin_write().await?;
                return match Self::tx_active_attempt(&mut tx, a.order_id.as_str()).await? {
                    Some(active) => Ok(BeginAttempt::ActiveExists(active)),
                    None => Err(StoreError::Contended("attempt")),
                };
            }
            Err(e) => return Err(e.into()),
        }
        let next = order
            .status
            .next(payonce_core::OrderEvent::AttemptStarted)
            .expect("open order can start an attempt");
        Self::tx_set_order_status(&mut tx, &order, next, now).await?;
        tx.commit().await?;
        let mut started = a.clone();
        started.status = payonce_core::AttemptStatus::Created;
        started.version = 1;
        started.created_at = now;
        started.updated_at = now;
        Ok(BeginAttempt::Started(started))
    }

    async fn record_prepay(
        &self,
        id: &AttemptId,
        result: &PrepayResult,
        now: Timestamp,
    ) -> Result<Attempt> {
        use payonce_core::{AttemptEvent, AttemptStatus};
        let mut tx = self.begin_write().await?;
        // The order's lock first, found through the attempt; then the attempt as it is under it.
        let order = Self::lock_order_of_attempt(&mut tx, id.as_str())
            .await?
            .ok_or(StoreError::Contended("attempt vanished"))?;
        let a = Self::tx_attempt(&mut tx, id.as_str())
            .await?
            .expect("attempt exists under the order lock");
        let event = match (result, a.status) {
            // The attempt was marked unknown while we waited: the channel's answer settles it.
            // (Or a query found it unpaid but the credential was lost with the answer.)
            (PrepayResult::Accepted { .. }, AttemptStatus::Unknown | AttemptStatus::Pending) => {
                AttemptEvent::ReportedUnpaid
            }
            (PrepayResult::Accepted { .. }, _) => AttemptEvent::Accepted,
            (PrepayResult::Refused { .. }, _) => AttemptEvent::Refused,
            (PrepayResult::Ambiguous { .. }, _) => AttemptEvent::Ambiguous,
        };
        let next = match a.status.next(event) {
            Ok(next) => next,
            // A notification or query got there first (e.g. already succeeded): keep it.
            Err(_) => return Ok(a),
        };
        let (credential, cred_exp, payable_until, next_query, channel_data) = match result {
            PrepayResult::Accepted {
                credential,
                credential_expires_at,
                payable_until,
                next_query_at,
                channel_data,
            } => (
                Some(credential.clone()),
                Some(credential_expires_at.0),
                Some(payable_until.0),
                Some(next_query_at.0),
                channel_data.clone(),
            ),
            PrepayResult::Refused { .. } => (None, None, None, None, None),
            PrepayResult::Ambiguous { next_query_at } => {
                (None, None, None, Some(next_query_at.0), None)
            }
        };
        if next == a.status && credential.is_none() {
            return Ok(a);
        }
        let stored = q_fmt(format!(
            "UPDATE attempts SET status = $1, credential = COALESCE($2, credential), \
             credential_expires_at = COALESCE($3, credential_expires_at), next_query_at = $4, \
             version = version + 1, updated_at = $5, channel_data = COALESCE($8, channel_data), \
             payable_until = COALESCE($9, payable_until) WHERE id = $6 AND version = $7 \
             RETURNING {ATTEMPT_COLS}"
        ))
        .bind(next.as_str())
        .bind(&credential)
        .bind(cred_exp)
        .bind(next_query)
        .bind(now.0)
        .bind(a.id.as_str())
        .bind(a.version)
        .bind(&channel_data)
        .bind(payable_until)
        .load_optional::<Attempt>(&mut tx)
        .await?
        .ok_or(StoreError::Contended("attempt"))?;
        if next == AttemptStatus::Failed {
            Self::tx_settle_order_after_attempt_end(&mut tx, order, now).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn refresh_credential(
        &self,
        id: &AttemptId,
        credential: &str,
        credential_expires_at: Timestamp,
        payable_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Attempt>> {
        use payonce_core::{AttemptEvent, AttemptStatus};
        let mut tx = self.begin_write().await?;
        let Some(current) = Self::tx_attempt(&mut tx, id.as_str()).await? else {
            return Ok(None);
        };
        // Under the order's lock (as every transition of its attempts), then read again: a
        // payment applied meanwhile is seen, not lost to a version check.
        if Self::lock_order(&mut tx, current.order_id.as_str())
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let Some(a) = Self::tx_attempt(&mut tx, id.as_str()).await? else {
            return Ok(None);
        };
        if a.status != AttemptStatus::Pending
            || a.status.next(AttemptEvent::CredentialRefreshed).is_err()
        {
            return Ok(None);
        }
        let done = q(
            "UPDATE attempts SET credential = $1, credential_expires_at = $2, \
             payable_until = CASE WHEN payable_until IS NULL OR payable_until < $3 THEN $3 ELSE payable_until END, \
             version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6 AND status = 'pending'",
        )
        .bind(credential)
        .bind(credential_expires_at.0)
        .bind(payable_until.0)
        .bind(now.0)
        .bind(id.as_str())
        .bind(a.version)
        .execute(&mut tx)
        .await?;
        if done != 1 {
            return Err(StoreError::Contended("attempt"));
        }
        let stored = Self::tx_attempt(&mut tx, id.as_str()).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn mark_stale_created(
        &self,
        id: &AttemptId,
        created_before: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Attempt>> {
        let mut tx = self.begin_write().await?;
        // Under the order's lock, like every other transition of its attempts: the prepay
        // recording its answer right now reads the attempt under that lock and must not find
        // its version moved between its read and its write (a 500 under load, before).
        let Some(current) = Self::tx_attempt(&mut tx, id.as_str()).await? else {
            return Ok(None);
        };
        if Self::lock_order(&mut tx, current.order_id.as_str())
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let done = q(
            "UPDATE attempts SET status = 'unknown', next_query_at = $1, version = version + 1, updated_at = $1 \
             WHERE id = $2 AND status = 'created' AND created_at < $3",
        )
        .bind(now.0)
        .bind(id.as_str())
        .bind(created_before.0)
        .execute(&mut tx)
        .await?;
        let changed = done == 1;
        let a = if changed {
            Self::tx_attempt(&mut tx, id.as_str()).await?
        } else {
            None
        };
        tx.commit().await?;
        Ok(a)
    }

    async fn apply_outcome(
        &self,
        outcome: &ChannelOutcome,
        now: Timestamp,
    ) -> Result<OutcomeApplied> {
        use crate::{OutcomeApplied, OutcomeEffect, OutcomeSource};
        let channel = outcome.channel.as_str();
        let mut tx = self.begin_write().await?;
        let Some(found) = Self::tx_attempt_by_no(&mut tx, channel, &outcome.out_trade_no).await?
        else {
            return Ok(OutcomeApplied::UnknownTradeNo);
        };
        if let Some(account) = &outcome.account
            && *account != found.account
        {
            return Ok(OutcomeApplied::AccountMismatch { attempt: found });
        }
        if let OutcomeSource::Notification { event_id } = &outcome.source {
            let done = q(
                "INSERT INTO channel_events (channel, event_id, out_trade_no, received_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (channel, event_id) DO NOTHING",
            )
            .bind(channel)
            .bind(event_id)
            .bind(&outcome.out_trade_no)
            .bind(now.0)
            .execute(&mut tx)
            .await?;
            if done == 0 {
                return Ok(OutcomeApplied::Replay);
            }
        }
        let order = Self::lock_order(&mut tx, found.order_id.as_str())
            .await?
            .ok_or(StoreError::Contended("order vanished"))?;
        // Re-read under the order lock: this is the state we decide on (with one writer, what
        // was found is that state already).
        let a = if tx.dialect().one_writer() {
            found
        } else {
            Self::tx_attempt(&mut tx, found.id.as_str())
                .await?
                .expect("attempt exists under the order lock")
        };
        let other_active_attempt = Self::tx_active_attempt(&mut tx, order.id.as_str())
            .await?
            .is_some_and(|o| o.id != a.id);
        let plan = payonce_core::decide(
            payonce_core::decide::OrderState {
                status: order.status,
                closed_by: order.closed_by,
            },
            payonce_core::decide::AttemptState {
                status: a.status,
                out_trade_no: &a.out_trade_no,
                amount: a.amount.minor,
                next_query_at: a.next_query_at,
            },
            &outcome.observed,
            payonce_core::decide::Circumstances {
                late_payment: outcome.late_payment,
                creates_order_at_prepay: outcome.channel.creates_order_at_prepay(),
                reschedule: outcome.reschedule,
                other_active_attempt,
            },
        );
        // From here on the store only writes what was decided: the fact's line in the order
        // timeline with its verdict, in the fact's own transaction…
        if let Some(m) =
            crate::console::outcome_message(outcome, plan.verdict(), plan.changes(), now)
        {
            Self::tx_record_channel_message(&mut tx, &m).await?;
        }
        let (change, order_change, event, refund_duplicate, effect) = match plan {
            payonce_core::Plan::Nothing => {
                tx.commit().await?;
                return Ok(OutcomeApplied::Applied {
                    order,
                    attempt: a,
                    effect: OutcomeEffect::Nothing,
                });
            }
            payonce_core::Plan::AmountMismatch { reported, .. } => {
                let detail = plan.detail().unwrap_or_default();
                Self::tx_insert_abnormal(&mut tx, "amount_mismatch", a.id.as_str(), &detail, now)
                    .await?;
                tx.commit().await?;
                return Ok(OutcomeApplied::AmountMismatch {
                    attempt: a,
                    reported,
                });
            }
            payonce_core::Plan::Apply {
                attempt,
                order,
                event,
                refund_duplicate,
                effect,
            } => (attempt, order, event, refund_duplicate, effect),
        };
        let attempt = q_fmt(format!(
            "UPDATE attempts SET status = $1, is_duplicate = $2, paid_at = COALESCE($3, paid_at), \
             channel_trade_no = COALESCE($4, channel_trade_no), next_query_at = $5, version = version + 1, \
             updated_at = $6 WHERE id = $7 AND version = $8 RETURNING {ATTEMPT_COLS}"
        ))
        .bind(change.status.as_str())
        .bind(change.is_duplicate)
        .bind(change.paid_at.map(|t| t.0))
        .bind(&change.channel_trade_no)
        .bind(change.next_query_at.map(|t| t.0))
        .bind(now.0)
        .bind(a.id.as_str())
        .bind(a.version)
        .load_optional::<Attempt>(&mut tx)
        .await?
        .ok_or(StoreError::Contended("attempt"))?;
        let mut order = order;
        match order_change {
            Some(payonce_core::decide::OrderChange::Paid { status, paid_at }) => {
                let done = q(
                    "UPDATE orders SET status = $1, paid_attempt_id = $2, paid_at = $3, version = version + 1, \
                     updated_at = $4 WHERE id = $5 AND version = $6",
                )
                .bind(status.as_str())
                .bind(attempt.id.as_str())
                .bind(paid_at.0)
                .bind(now.0)
                .bind(order.id.as_str())
                .bind(order.version)
                .execute(&mut tx)
                .await?;
                if done != 1 {
                    return Err(StoreError::Contended("order"));
                }
                order.status = status;
                order.paid_attempt_id = Some(attempt.id.clone());
                order.paid_at = Some(paid_at);
                order.version += 1;
                order.updated_at = now;
                // Paid: the coupon is redeemed in this same transaction, once.
                Self::tx_redeem_coupon(&mut tx, &order, now).await?;
            }
            Some(payonce_core::decide::OrderChange::Status(status)) => {
                order = Self::tx_set_order_status(&mut tx, &order, status, now).await?
            }
            None => {}
        }
        if let Some(event) = event {
            Self::tx_insert_event(&mut tx, event.as_str(), &order, Some(&attempt), now).await?;
        }
        if let Some(d) = refund_duplicate {
            // The money goes back, automatically; the refund worker makes the call.
            let refund = Refund::of_duplicate(&order, &attempt, &d, now);
            Self::tx_insert_refund(&mut tx, &refund).await?;
        }
        tx.commit().await?;
        Ok(OutcomeApplied::Applied {
            order,
            attempt,
            effect,
        })
    }
}
