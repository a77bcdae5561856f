//! The sandbox channel's daily statement: a JSON array of `{kind, out_trade_no, trade_no,
//! out_refund_no?, amount, fee?, at?}` (amounts and fees in fen). payonce's own format, with
//! no discounts: the settled amount is the amount.

use crate::bill::BillError;
use crate::{Statement, StatementKind, StatementLine};

pub fn parse(bytes: &[u8]) -> Result<Statement, BillError> {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| BillError::Unreadable(format!("not a sandbox statement: {e}")))?;
    let mut out = Statement::default();
    for r in rows {
        let text = |k: &str| r[k].as_str().map(str::to_owned);
        let kind = match r["kind"].as_str() {
            Some("payment") => StatementKind::Payment,
            Some("refund") => StatementKind::Refund,
            other => {
                out.unrecognised.push(format!("kind {other:?}: {r}"));
                continue;
            }
        };
        let amount = r["amount"]
            .as_i64()
            .filter(|a| *a > 0)
            .ok_or_else(|| BillError::Row(format!("bad amount in {r}")))?;
        let out_refund_no = text("out_refund_no");
        if kind == StatementKind::Refund && out_refund_no.is_none() {
            return Err(BillError::Row(format!(
                "refund row without out_refund_no: {r}"
            )));
        }
        out.lines.push(StatementLine {
            kind,
            out_trade_no: text("out_trade_no")
                .ok_or_else(|| BillError::Row(format!("no out_trade_no in {r}")))?,
            channel_trade_no: text("trade_no"),
            out_refund_no,
            amount,
            settled_amount: amount,
            fee_millifen: r["fee"].as_i64().unwrap_or(0).saturating_mul(1000),
            at: r["at"].as_i64().map(payonce_core::Timestamp),
        });
    }
    Ok(out)
}
