//! The Alipay trade bill (`alipay.data.dataservice.bill.downloadurl.query`, `bill_type=trade`),
//! as Alipay serves it (layout: tests/vectors/alipay-answers/BILL_LAYOUT.md): a zip holding two
//! GBK CSVs, `{PID}0156_{yyyyMMdd}_业务明细.csv` (the rows) and `…_业务明细(汇总).csv` (the
//! totals), whose entry names are GBK without the zip's UTF-8 flag. Rows sit between `#` header
//! and footer lines; text cells carry a trailing TAB (for Excel); refunds are negative. The files
//! are CSV as RFC 4180 writes it: a cell holding a comma, a quote or a line break (商品名称 and 备注
//! carry the order's subject) is quoted with `"`, a quote inside doubled — read with the `csv`
//! crate, never by splitting lines at commas.

use crate::bill::BillError;
use crate::money::yuan_to_fen;
use crate::{Statement, StatementKind, StatementLine};
use std::io::Read;

pub const HEADER_START: &str = "支付宝交易号,商户订单号,业务类型";

/// Reads the downloaded zip: the detail file's rows, cross-checked with the summary file's
/// `合计` (total) row — trade and refund counts, order amount and service fees must equal the
/// rows' sums, or nothing of the bill is used.
pub fn parse_zip(bytes: &[u8]) -> Result<Statement, BillError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| BillError::Unreadable(format!("not a zip: {e}")))?;
    let (mut detail, mut summary) = (None, None);
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| BillError::Unreadable(e.to_string()))?;
        // Alipay writes GBK names without the UTF-8 flag (the zip crate would read them as
        // CP437): decode the raw bytes ourselves. GBK Chinese is never valid UTF-8 by chance.
        let raw = entry.name_raw().to_vec();
        let name = match std::str::from_utf8(&raw) {
            Ok(n) => n.to_owned(),
            Err(_) => encoding_rs::GBK.decode(&raw).0.into_owned(),
        };
        let mut content = Vec::new();
        // A day's detail file is bounded (a zip bomb is not a bill).
        entry
            .take(1 << 30)
            .read_to_end(&mut content)
            .map_err(|e| BillError::Unreadable(format!("{name}: {e}")))?;
        if name.ends_with("_业务明细.csv") {
            detail = Some(content);
        } else if name.ends_with("_业务明细(汇总).csv") {
            summary = Some(content);
        }
    }
    let detail = detail.ok_or_else(|| BillError::Layout("the zip has no _业务明细.csv".into()))?;
    let (statement, sums) = parse_detail_with_sums(&detail)?;
    let summary =
        summary.ok_or_else(|| BillError::Layout("the zip has no _业务明细(汇总).csv".into()))?;
    let total = parse_summary_total(&summary)?;
    if total != sums {
        return Err(BillError::Totals(format!(
            "the summary's 合计 {total:?} disagrees with the detail rows {sums:?}"
        )));
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
pub fn parse_detail(bytes: &[u8]) -> Result<Statement, BillError> {
    parse_detail_with_sums(bytes).map(|(s, _)| s)
}

fn parse_detail_with_sums(bytes: &[u8]) -> Result<(Statement, Totals), BillError> {
    let (text, _, malformed) = encoding_rs::GBK.decode(bytes);
    if malformed {
        return Err(BillError::Encoding("the detail file is not GBK"));
    }
    let mut out = Statement::default();
    let mut sums = Totals::default();
    let mut in_rows = false;
    for record in csv_records(&text) {
        let record = record
            .map_err(|e| BillError::Unreadable(format!("the detail file is not CSV: {e}")))?;
        let f: Vec<&str> = record
            .iter()
            .map(|c| c.trim_end_matches('\t').trim())
            .collect();
        if !in_rows {
            in_rows = f.join(",").starts_with(HEADER_START);
            continue;
        }
        if f.first().is_some_and(|c| c.starts_with('#')) {
            break;
        }
        if f.iter().all(|c| c.is_empty()) {
            continue;
        }
        if f.len() < 25 {
            return Err(BillError::Row(format!(
                "short row ({} cells) at line {}",
                f.len(),
                record.position().map_or(0, |p| p.line())
            )));
        }
        let signed = |i: usize| -> Result<i64, BillError> {
            let v = f[i];
            let fen = yuan_to_fen(v.trim_start_matches('-'))
                .ok_or_else(|| BillError::Row(format!("bad amount {v:?}")))?;
            Ok(if v.starts_with('-') { -fen } else { fen })
        };
        let (order_amount, settled) = (signed(11)?, signed(12)?);
        let fee = if f[22].is_empty() {
            0
        } else {
            crate::money::yuan_to_millifen(f[22])
                .ok_or_else(|| BillError::Row(format!("bad service fee {:?}", f[22])))?
        };
        let kind = match f[2] {
            "交易" => StatementKind::Payment,
            "退款" => StatementKind::Refund,
            other => {
                out.unrecognised
                    .push(format!("business type {other}: out_trade_no {}", f[1]));
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
        return Err(BillError::Layout(
            "not an Alipay trade bill (no detail header)".into(),
        ));
    }
    Ok((out, sums))
}

/// The summary CSV's `合计` row: [2] trades, [3] refunds, [4] order amount, [9] service fee.
pub fn parse_summary_total(bytes: &[u8]) -> Result<Totals, BillError> {
    let (text, _, _) = encoding_rs::GBK.decode(bytes);
    let row = csv_records(&text)
        .filter_map(Result::ok)
        .find(|r| {
            r.get(0)
                .is_some_and(|c| c.trim_end_matches('\t').trim() == "合计")
        })
        .ok_or_else(|| BillError::Layout("the summary file has no 合计 row".into()))?;
    let f: Vec<&str> = row
        .iter()
        .map(|c| c.trim_end_matches('\t').trim())
        .collect();
    let count = |i: usize| {
        f.get(i)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| BillError::Totals(format!("bad count in 合计 cell {i}")))
    };
    let amount = f
        .get(4)
        .and_then(|a| {
            yuan_to_fen(a.trim_start_matches('-')).map(|v| if a.starts_with('-') { -v } else { v })
        })
        .ok_or_else(|| BillError::Totals("bad amount in 合计".into()))?;
    let fees = f
        .get(9)
        .and_then(|a| crate::money::yuan_to_millifen(a))
        .ok_or_else(|| BillError::Totals("bad service fee in 合计".into()))?;
    Ok(Totals {
        trades: count(2)?,
        refunds: count(3)?,
        order_amount: amount,
        fees_millifen: fees,
    })
}

/// The records of a bill file: RFC 4180 CSV, rows of any length (the `#` header and footer
/// lines are one-cell records).
fn csv_records(text: &str) -> csv::StringRecordsIntoIter<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .into_records()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";

    /// A detail file in BILL_LAYOUT.md's layout whose subjects (商品名称, 备注) hold commas,
    /// doubled quotes and a line break, quoted as RFC 4180 quotes them.
    fn detail() -> String {
        let row = |trade: &str,
                   no: &str,
                   kind: &str,
                   subject: &str,
                   amount: &str,
                   refund_no: &str| {
            format!(
                "{trade}\t,{no}\t,{kind}\t,{subject},2019-09-16 10:55:16,2019-09-16 10:55:23,alipay_store\t,alipay_store\t,alipay\t,\t,*津水(602***@qq.com)\t,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{refund_no}\t,0.00,0.00,{subject}\r\n"
            )
        };
        let mut s = format!(
            "#支付宝业务明细查询\r\n#账号：[20880211096256330156]\r\n#{}业务明细列表{}\r\n{HEADER}\r\n",
            "-".repeat(41),
            "-".repeat(40)
        );
        s.push_str(&row(
            "2019091622001458860515315453",
            "A1",
            "交易",
            "\"Tea, green, \"\"2 cups\"\"\r\nsecond line\"",
            "0.01",
            "",
        ));
        s.push_str(&row(
            "2019091622001458860515315454",
            "A2",
            "交易",
            "\"a,b\"",
            "0.02",
            "",
        ));
        s.push_str(&row(
            "2019091622001458860515315453",
            "A1",
            "退款",
            "\"Tea, green, \"\"2 cups\"\"\r\nsecond line\"",
            "-0.01",
            "R1",
        ));
        s.push_str(&format!(
            "#{}业务明细列表结束{}\r\n#交易合计：2笔\r\n",
            "-".repeat(41),
            "-".repeat(36)
        ));
        s
    }

    #[test]
    fn quoted_subjects_with_commas_quotes_and_line_breaks_stay_in_their_cells() {
        let text = detail();
        let (s, sums) = parse_detail_with_sums(&encoding_rs::GBK.encode(&text).0).unwrap();
        assert!(s.unrecognised.is_empty(), "{:?}", s.unrecognised);
        let got: Vec<(String, StatementKind, i64, Option<String>)> = s
            .lines
            .iter()
            .map(|l| {
                (
                    l.out_trade_no.clone(),
                    l.kind,
                    l.amount,
                    l.out_refund_no.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("A1".into(), StatementKind::Payment, 1, None),
                ("A2".into(), StatementKind::Payment, 2, None),
                ("A1".into(), StatementKind::Refund, 1, Some("R1".into()))
            ]
        );
        assert_eq!((sums.trades, sums.refunds, sums.order_amount), (2, 1, 2));
        python_csv_agrees(&text, &s);
    }

    /// Python's `csv` module, an independent reader, cuts the same file into the same cells.
    fn python_csv_agrees(text: &str, s: &Statement) {
        let script = r##"
import csv, io, json, sys
rows, inside = [], False
for r in csv.reader(io.StringIO(sys.stdin.read(), newline="")):
    if not inside:
        inside = bool(r) and r[0] == "支付宝交易号"
        continue
    if r and r[0].startswith("#"):
        break
    rows.append([c.rstrip("\t").strip() for c in r])
print(json.dumps(rows))
"##;
        let Ok(mut child) = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("!!! SKIPPING the Python csv cross-check: no python3");
            return;
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), s.lines.len());
        for (row, line) in rows.iter().zip(&s.lines) {
            assert_eq!(row.len(), 25, "{row:?}");
            assert_eq!(
                (row[0].as_str(), row[1].as_str(), row[21].as_str()),
                (
                    line.channel_trade_no.as_deref().unwrap(),
                    line.out_trade_no.as_str(),
                    line.out_refund_no.as_deref().unwrap_or("")
                )
            );
            assert_eq!(row[3], row[24], "商品名称 and 备注 read alike");
        }
        assert_eq!(rows[0][3], "Tea, green, \"2 cups\"\r\nsecond line");
    }
}
