//! Applying a bill's rows: each payment and refund row compared with what payonce holds, a
//! repair made through the same door as a notification (`payments::apply`, source `statement`),
//! every difference recorded as an item.

use super::*;

/// Writes items (and counts them), or only counts them in a dry run.
pub(super) struct Recorder<'a> {
    pub(super) state: &'a AppState,
    pub(super) run: Option<String>,
    pub(super) report: &'a mut Report,
    pub(super) dry_run: bool,
}

impl Recorder<'_> {
    pub(super) async fn item(
        &mut self,
        class: &str,
        reference: &str,
        owner: Option<(String, String)>,
        local: Option<i64>,
        on_bill: Option<i64>,
        detail: &str,
    ) -> Result<(), ReconcileError> {
        *self.report.classes.entry(class.to_owned()).or_default() += 1;
        metrics::counter!("payonce_reconciliation_items_total", "channel" => self.report.channel.clone(), "account" => self.report.account.clone(), "class" => class.to_owned()).increment(1);
        let Some(run) = self.run.clone().filter(|_| !self.dry_run) else {
            return Ok(());
        };
        let (app_id, order_id) = owner.unzip();
        let item = ReconciliationItem {
            id: payonce_core::EventId::new()
                .as_str()
                .replacen("evt_", "rci_", 1),
            reconciliation_id: run,
            class: class.to_owned(),
            reference: reference.to_owned(),
            app_id,
            order_id,
            local_amount: local,
            channel_amount: on_bill,
            detail: detail.to_owned(),
            created_at: self.state.clock.now().0,
        };
        self.state.store.add_reconciliation_item(&item).await?;
        Ok(())
    }
}

/// One batch of bill rows: their attempts and refunds looked up at once, each row classified,
/// and the settled amounts and fees the bill states kept on what it names.
pub(super) async fn apply_batch(
    r: &mut Recorder<'_>,
    scope: &super::Scope<'_>,
    bill_date: &str,
    day_start: Timestamp,
    lines: &[StatementLine],
) -> Result<(), ReconcileError> {
    if lines.is_empty() {
        return Ok(());
    }
    r.report.rows += lines.len();
    let (name, account) = (scope.name, scope.account);
    let store = &r.state.store;
    let pay_nos: Vec<String> = lines
        .iter()
        .filter(|l| l.kind == StatementKind::Payment)
        .map(|l| l.out_trade_no.clone())
        .collect();
    let refund_nos: Vec<String> = lines
        .iter()
        .filter(|l| l.kind == StatementKind::Refund)
        .filter_map(|l| l.out_refund_no.clone())
        .collect();
    // Only this account's attempts and refunds: another merchant's number on this merchant's
    // bill is a payment (or refund) this merchant never issued.
    let attempts: HashMap<String, Attempt> = store
        .attempts_by_out_trade_nos(name, &pay_nos)
        .await?
        .into_iter()
        .filter(|a| a.account == account)
        .map(|a| (a.out_trade_no.to_string(), a))
        .collect();
    let refunds: Vec<Refund> = store.refunds_by_out_refund_nos(name, &refund_nos).await?;
    let refunded_nos: Vec<String> = refunds.iter().map(|f| f.out_trade_no.to_string()).collect();
    let ours: std::collections::HashSet<String> = store
        .attempts_by_out_trade_nos(name, &refunded_nos)
        .await?
        .into_iter()
        .filter(|a| a.account == account)
        .map(|a| a.id.to_string())
        .collect();
    let refunds: HashMap<String, Refund> = refunds
        .into_iter()
        .filter(|f| ours.contains(f.attempt_id.as_str()))
        .map(|f| (f.out_refund_no.to_string(), f))
        .collect();
    let (mut billed_attempts, mut billed_refunds): (Vec<Billed>, Vec<Billed>) =
        (Vec::new(), Vec::new());
    for line in lines {
        match line.kind {
            StatementKind::Payment => {
                let attempt = attempts.get(&line.out_trade_no);
                if let Some(a) = attempt {
                    billed_attempts.push((
                        a.id.to_string(),
                        line.settled_amount,
                        line.fee_millifen,
                    ));
                }
                payment_row(r, scope, bill_date, day_start, line, attempt).await?;
            }
            StatementKind::Refund => {
                let refund = line.out_refund_no.as_ref().and_then(|no| refunds.get(no));
                if let Some(f) = refund {
                    billed_refunds.push((f.id.to_string(), line.settled_amount, line.fee_millifen));
                }
                refund_row(r, scope, bill_date, line, refund).await?;
            }
        }
    }
    if !r.dry_run {
        store
            .record_billed(&billed_attempts, &billed_refunds)
            .await?;
    }
    Ok(())
}

pub(super) async fn payment_row(
    r: &mut Recorder<'_>,
    scope: &super::Scope<'_>,
    bill_date: &str,
    day_start: Timestamp,
    line: &StatementLine,
    attempt: Option<&Attempt>,
) -> Result<(), ReconcileError> {
    let state = r.state;
    let name = scope.name;
    let Some(a) = attempt else {
        return r
            .item(
                "unknown_trade",
                &line.out_trade_no,
                None,
                None,
                Some(line.amount),
                "a payment on the bill that payonce never issued",
            )
            .await;
    };
    let owner = || async {
        state
            .store
            .order_by_id(&a.order_id)
            .await
            .map(|o| o.map(|o| (o.app_id.to_string(), o.id.to_string())))
    };
    if line.amount != a.amount.minor {
        // Never applied: which side is right is for a person to find out.
        return r
            .item(
                "amount_mismatch",
                &line.out_trade_no,
                owner().await?,
                Some(a.amount.minor),
                Some(line.amount),
                "the bill's order amount differs from the attempt's",
            )
            .await;
    }
    if a.status == payonce_core::AttemptStatus::Succeeded {
        r.report.matched += 1;
        return Ok(());
    }
    if r.dry_run {
        return r
            .item(
                "repaired_paid",
                &line.out_trade_no,
                owner().await?,
                Some(a.amount.minor),
                Some(line.amount),
                "would be applied",
            )
            .await;
    }
    let paid = TradeState::Paid {
        amount: line.amount,
        channel_trade_no: line.channel_trade_no.clone(),
        paid_at: line.at.unwrap_or(day_start),
    };
    match payments::apply(
        state,
        name,
        // The bill is this account's: a row about another account's attempt changes nothing.
        Some(scope.account),
        &line.out_trade_no,
        paid,
        OutcomeSource::Statement {
            bill_date: bill_date.to_owned(),
        },
        None,
        None,
    )
    .await?
    {
        OutcomeApplied::Applied { .. } | OutcomeApplied::Replay => {
            r.item(
                "repaired_paid",
                &line.out_trade_no,
                owner().await?,
                Some(a.amount.minor),
                Some(line.amount),
                "the charge on the bill was applied (paid, or refunded as a duplicate)",
            )
            .await
        }
        OutcomeApplied::AmountMismatch { reported, .. } => {
            r.item(
                "amount_mismatch",
                &line.out_trade_no,
                owner().await?,
                Some(a.amount.minor),
                Some(reported),
                "the bill's amount differs",
            )
            .await
        }
        // On this account's bill, but no attempt of this account has the number.
        OutcomeApplied::UnknownTradeNo | OutcomeApplied::AccountMismatch { .. } => {
            r.item(
                "unknown_trade",
                &line.out_trade_no,
                None,
                None,
                Some(line.amount),
                "a payment on the bill that payonce never issued",
            )
            .await
        }
    }
}

pub(super) async fn refund_row(
    r: &mut Recorder<'_>,
    scope: &super::Scope<'_>,
    bill_date: &str,
    line: &StatementLine,
    refund: Option<&Refund>,
) -> Result<(), ReconcileError> {
    let state = r.state;
    let name = scope.name;
    let no = line.out_refund_no.clone().unwrap_or_default();
    let Some(refund) = refund else {
        return r
            .item(
                "unknown_refund",
                &no,
                None,
                None,
                Some(line.amount),
                "a refund on the bill that payonce never requested",
            )
            .await;
    };
    let owner = Some((refund.app_id.to_string(), refund.order_id.to_string()));
    if line.amount != refund.amount.minor {
        return r
            .item(
                "amount_mismatch",
                &no,
                owner,
                Some(refund.amount.minor),
                Some(line.amount),
                "the bill's refund amount differs from the refund's",
            )
            .await;
    }
    match refund.status {
        payonce_core::RefundStatus::Succeeded => {
            r.report.matched += 1;
            Ok(())
        }
        payonce_core::RefundStatus::Failed => {
            r.item(
                "unknown_refund",
                &no,
                owner,
                Some(refund.amount.minor),
                Some(line.amount),
                "the channel refunded what payonce recorded as failed",
            )
            .await
        }
        _ if r.dry_run => {
            r.item(
                "repaired_refund",
                &no,
                owner,
                Some(refund.amount.minor),
                Some(line.amount),
                "would be settled",
            )
            .await
        }
        _ => {
            let event = format!("statement:{bill_date}:{no}");
            match state
                .store
                .apply_refund_notice(
                    name,
                    Some(scope.account),
                    &event,
                    &no,
                    &RefundResult::Succeeded,
                    state.clock.now(),
                )
                .await?
            {
                RefundNoticeApplied::Applied(_) | RefundNoticeApplied::Replay => {
                    r.item(
                        "repaired_refund",
                        &no,
                        owner,
                        Some(refund.amount.minor),
                        Some(line.amount),
                        "the refund on the bill was settled",
                    )
                    .await
                }
                RefundNoticeApplied::UnknownRefund
                | RefundNoticeApplied::AccountMismatch { .. } => {
                    r.item(
                        "unknown_refund",
                        &no,
                        None,
                        None,
                        Some(line.amount),
                        "a refund on the bill that payonce never requested",
                    )
                    .await
                }
            }
        }
    }
}
