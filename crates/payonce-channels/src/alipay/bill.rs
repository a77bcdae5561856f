//! The Alipay trade bill (`alipay.data.dataservice.bill.downloadurl.query`, `bill_type=trade`),
//! as Alipay serves it (layout: tests/vectors/alipay-answers/BILL_LAYOUT.md): a zip holding two
//! GBK CSVs, `{PID}0156_{yyyyMMdd}_业务明细.csv` (the rows) and `…_业务明细(汇总).csv` (the
//! totals), whose entry names are GBK without the zip's UTF-8 flag. Rows sit between `#` header
//! and footer lines; text cells carry a trailing TAB (for Excel); refunds are negative.

use crate::money::yuan_to_fen;
use crate::{Statement, StatementKind, StatementLine};
use std::io::Read;

pub const HEADER_START: &str = "支付宝交易号,商户订单号,业务类型";

/// Reads the downloaded zip: the detail file's rows, cross-checked with the summary file's
/// `合计` (total) row — trade and refund counts, order amount and service fees must equal the
/// rows' sums, or nothing of the bill is used.
pub fn parse_zip(bytes: &[u8]) -> Result<Statement, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a zip: {e}"))?;
    let (mut detail, mut summary) = (None, None);
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| e.to_string())?;
        // Alipay writes GBK names without the UTF-8 flag (the zip crate would read them as
        // CP437): decode the raw bytes ourselves. GBK Chinese is never valid UTF-8 by chance.
        let raw = entry.name_raw().to_vec();
        let name = match std::str::from_utf8(&raw) {
            Ok(n) => n.to_owned(),
            Err(_) => encoding_rs::GBK.decode(&raw).0.into_owned(),
        };
        let mut content = Vec::new();
        // A day's detail file is bounded (a zip bomb is not a bill).
        entry.take(1 << 30).read_to_end(&mut content).map_err(|e| format!("{name}: {e}"))?;
        if name.ends_with("_业务明细.csv") {
            detail = Some(content);
        } else if name.ends_with("_业务明细(汇总).csv") {
            summary = Some(content);
        }
    }
    let detail = detail.ok_or("the zip has no _业务明细.csv")?;
    let (statement, sums) = parse_detail_with_sums(&detail)?;
    let summary = summary.ok_or("the zip has no _业务明细(汇总).csv")?;
    let total = parse_summary_total(&summary)?;
    if total != sums {
        return Err(format!("the summary's 合计 {total:?} disagrees with the detail rows {sums:?}"));
    }
    Ok(statement)
}

/// What the summary's `合计` row states, and what the detail rows add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub trades: usize,
    pub refunds: usize,
    /// 订单金额 in fen, refunds negative.
    pub order_amount: i64,
    /// 服务费 in thousandths of a fen.
    pub fees_millifen: i64,
}

/// The detail CSV (GBK): every row between the header line and the `#` footer.
pub fn parse_detail(bytes: &[u8]) -> Result<Statement, String> {
    parse_detail_with_sums(bytes).map(|(s, _)| s)
}

fn parse_detail_with_sums(bytes: &[u8]) -> Result<(Statement, Totals), String> {
    let (text, _, malformed) = encoding_rs::GBK.decode(bytes);
    if malformed {
        return Err("the detail file is not GBK".into());
    }
    let mut out = Statement::default();
    let mut sums = Totals::default();
    let mut in_rows = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with(HEADER_START) {
            in_rows = true;
            continue;
        }
        if line.starts_with('#') {
            if in_rows {
                break;
            }
            continue;
        }
        if !in_rows || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(|c| c.trim_end_matches('\t').trim()).collect();
        if f.len() < 25 {
            return Err(format!("short row ({} cells): {line}", f.len()));
        }
        let signed = |i: usize| -> Result<i64, String> {
            let v = f[i];
            let fen = yuan_to_fen(v.trim_start_matches('-')).ok_or_else(|| format!("bad amount {v:?}"))?;
            Ok(if v.starts_with('-') { -fen } else { fen })
        };
        let (order_amount, settled) = (signed(11)?, signed(12)?);
        let fee = if f[22].is_empty() { 0 } else { crate::money::yuan_to_millifen(f[22]).ok_or_else(|| format!("bad service fee {:?}", f[22]))? };
        let kind = match f[2] {
            "交易" => StatementKind::Payment,
            "退款" => StatementKind::Refund,
            other => {
                out.unrecognised.push(format!("business type {other}: out_trade_no {}", f[1]));
                continue;
            }
        };
        match kind {
            StatementKind::Payment => sums.trades += 1,
            StatementKind::Refund => sums.refunds += 1,
        }
        sums.order_amount += order_amount;
        sums.fees_millifen += fee;
        out.lines.push(StatementLine {
            kind,
            out_trade_no: f[1].to_owned(),
            channel_trade_no: Some(f[0].to_owned()),
            out_refund_no: (kind == StatementKind::Refund).then(|| f[21].to_owned()),
            amount: order_amount.abs(),
            settled_amount: settled.abs(),
            fee_millifen: fee,
            // 完成时间: when the payment or refund completed.
            at: crate::bill::beijing_time(f[5]),
        });
    }
    if !in_rows {
        return Err("not an Alipay trade bill (no detail header)".into());
    }
    Ok((out, sums))
}

/// The summary CSV's `合计` row: [2] trades, [3] refunds, [4] order amount, [9] service fee.
pub fn parse_summary_total(bytes: &[u8]) -> Result<Totals, String> {
    let (text, _, _) = encoding_rs::GBK.decode(bytes);
    let row = text.lines().find(|l| l.starts_with("合计")).ok_or("the summary file has no 合计 row")?;
    let f: Vec<&str> = row.split(',').map(|c| c.trim_end_matches('\t').trim()).collect();
    let count = |i: usize| f.get(i).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad count in 合计 cell {i}"));
    let amount = f.get(4).and_then(|a| yuan_to_fen(a.trim_start_matches('-')).map(|v| if a.starts_with('-') { -v } else { v })).ok_or("bad amount in 合计")?;
    let fees = f.get(9).and_then(|a| crate::money::yuan_to_millifen(a)).ok_or("bad service fee in 合计")?;
    Ok(Totals { trades: count(2)?, refunds: count(3)?, order_amount: amount, fees_millifen: fees })
}
