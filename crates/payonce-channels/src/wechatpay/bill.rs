//! The WeChat Pay trade bill (`GET /v3/bill/tradebill`, `bill_type=ALL`), as WeChat serves it
//! (layout: tests/vectors/wechatpay/BILL_LAYOUT.md): a header line, rows whose every cell starts
//! with a backtick, then a totals block checked against the rows. WeChat quotes nothing: a value
//! (商品名称 is the order's subject, 商户数据包 the merchant's attach) may hold commas, so a row is
//! cut where a comma is followed by the next cell's backtick, never at a bare comma. Real
//! downloads may start with a UTF-8 BOM and use CRLF; both are accepted. A row with a trade state WeChat does not
//! document is reported, not a reason to throw the whole day away.

use crate::bill::{BillEntry, BillError};
use crate::money::{yuan_to_fen, yuan_to_millifen};
use crate::{Statement, StatementKind, StatementLine};
use std::io::BufRead;

pub const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
pub const TOTALS_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// Parses a whole trade bill held as text, checking its totals block against its rows.
pub fn parse(text: &str) -> Result<Statement, BillError> {
    let mut out = Statement::default();
    for entry in Rows::new(text.as_bytes()) {
        match entry? {
            BillEntry::Line(l) => out.lines.push(l),
            BillEntry::Unrecognised(u) => out.unrecognised.push(u),
        }
    }
    Ok(out)
}

/// The bill's rows, read one line at a time from any reader (a gzip stream of a million rows
/// never sits in memory). The totals block is checked when it is reached; a bill that ends
/// without one, or whose totals disagree with its rows, ends with an error.
pub struct Rows<R> {
    reader: R,
    started: bool,
    done: bool,
    rows: usize,
    paid: i64,
    refunded: i64,
    fees: i64,
}

impl<R: BufRead> Rows<R> {
    pub fn new(reader: R) -> Self {
        Rows {
            reader,
            started: false,
            done: false,
            rows: 0,
            paid: 0,
            refunded: 0,
            fees: 0,
        }
    }

    /// The next line, at most `MAX_LINE` bytes (a row is a few hundred; a gzip bomb of one
    /// endless line must not fill memory). `None` at the end.
    fn next_line(&mut self) -> Option<Result<String, BillError>> {
        use std::io::Read as _;
        let mut buf = Vec::new();
        match (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => None,
            Err(e) => Some(Err(BillError::Unreadable(format!("reading the bill: {e}")))),
            Ok(_) if buf.len() > MAX_LINE => Some(Err(BillError::Unreadable(format!(
                "a line longer than {MAX_LINE} bytes"
            )))),
            Ok(_) => {
                if buf.ends_with(b"\n") {
                    buf.pop();
                }
                Some(
                    String::from_utf8(buf)
                        .map_err(|_| BillError::Encoding("the bill is not UTF-8")),
                )
            }
        }
    }

    fn fail(&mut self, e: BillError) -> Option<Result<BillEntry, BillError>> {
        self.done = true;
        Some(Err(e))
    }

    /// The totals line after `总交易单数…`: count, settled payments, refunds, …, fees.
    fn check_totals(&mut self) -> Result<(), BillError> {
        let bad = |what: &str| BillError::Totals(what.to_owned());
        let line = self.next_line().ok_or_else(|| bad("missing totals"))??;
        let totals = cells(line.trim_end_matches('\r'));
        let count: usize = totals
            .first()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("bad total count"))?;
        let sum_paid = totals
            .get(1)
            .and_then(|v| yuan_to_fen(v))
            .ok_or_else(|| bad("bad paid total"))?;
        let sum_refund = totals
            .get(2)
            .and_then(|v| yuan_to_fen(v))
            .ok_or_else(|| bad("bad refund total"))?;
        let sum_fees = totals
            .get(4)
            .and_then(|v| yuan_to_millifen(v))
            .ok_or_else(|| bad("bad fee total"))?;
        if (count, sum_paid, sum_refund, sum_fees)
            != (self.rows, self.paid, self.refunded, self.fees)
        {
            return Err(BillError::Totals(format!(
                "totals block ({count} rows, {sum_paid} paid, {sum_refund} refunded, {sum_fees} fees) disagrees with the rows ({}, {}, {}, {})",
                self.rows, self.paid, self.refunded, self.fees
            )));
        }
        Ok(())
    }

    fn row(&mut self, line: &str) -> Result<BillEntry, BillError> {
        let f = cells(line);
        if f.len() < 27 {
            return Err(BillError::Row(format!(
                "short row ({} cells) at row {}",
                f.len(),
                self.rows + 1
            )));
        }
        self.rows += 1;
        let fen = |i: usize| {
            yuan_to_fen(f[i]).ok_or_else(|| {
                BillError::Row(format!("bad amount {:?} in row {}", f[i], self.rows))
            })
        };
        let fee = yuan_to_millifen(f[22])
            .ok_or_else(|| BillError::Row(format!("bad fee {:?} in row {}", f[22], self.rows)))?;
        self.fees += fee;
        let at = crate::bill::beijing_time(f[0]);
        let channel_trade_no = Some(f[5].to_owned());
        match f[9] {
            "SUCCESS" => {
                let settled = fen(12)?;
                self.paid += settled;
                Ok(BillEntry::Line(StatementLine {
                    kind: StatementKind::Payment,
                    out_trade_no: f[6].to_owned(),
                    channel_trade_no,
                    out_refund_no: None,
                    amount: fen(24)?,
                    settled_amount: settled,
                    fee_millifen: fee,
                    at,
                }))
            }
            "REFUND" => {
                let refunded = fen(16)?;
                self.refunded += refunded;
                // 申请退款金额 is what was asked (payonce's refund amount); 退款金额 what left
                // the account after coupon refunds.
                let asked = if f[25].is_empty() { refunded } else { fen(25)? };
                Ok(BillEntry::Line(StatementLine {
                    kind: StatementKind::Refund,
                    out_trade_no: f[6].to_owned(),
                    channel_trade_no,
                    out_refund_no: Some(f[15].to_owned()),
                    amount: asked,
                    settled_amount: refunded,
                    fee_millifen: fee,
                    at,
                }))
            }
            other => {
                // Still counted in the totals as WeChat counts it; its money is not guessed.
                self.paid += yuan_to_fen(f[12]).unwrap_or(0);
                self.refunded += yuan_to_fen(f[16]).unwrap_or(0);
                Ok(BillEntry::Unrecognised(format!(
                    "trade state {other}: out_trade_no {} (row {})",
                    f[6], self.rows
                )))
            }
        }
    }
}

/// The longest line a trade bill may have.
const MAX_LINE: usize = 64 * 1024;

/// The cells of a row, without their leading backticks (WeChat marks every cell as text that
/// way). Every cell starts with a backtick, so cells are separated by a comma followed by a
/// backtick; a comma inside a value is not followed by one.
fn cells(line: &str) -> Vec<&str> {
    let line = line.trim();
    line.strip_prefix('`')
        .unwrap_or(line)
        .split(",`")
        .map(str::trim)
        .collect()
}

impl<R: BufRead> Iterator for Rows<R> {
    type Item = Result<BillEntry, BillError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let line = match self.next_line() {
                None => {
                    return self.fail(BillError::Layout(
                        "missing totals block (a truncated bill?)".into(),
                    ));
                }
                Some(Err(e)) => return self.fail(e),
                Some(Ok(l)) => l,
            };
            let line = line.trim_end_matches('\r');
            if !self.started {
                // A real download may start with a UTF-8 BOM.
                if line.strip_prefix('\u{feff}').unwrap_or(line).trim() != HEADER {
                    return self.fail(BillError::Layout(
                        "not a WeChat Pay trade bill (header)".into(),
                    ));
                }
                self.started = true;
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with("总交易单数") {
                self.done = true;
                return self.check_totals().err().map(Err);
            }
            let row = self.row(line);
            if row.is_err() {
                self.done = true;
            }
            return Some(row);
        }
    }
}

/// A downloaded bill, plain or gzip, checked against WeChat's `hash_value` (the SHA-1 of the
/// unpacked bill) and returned gzip-compressed for storage.
pub(super) fn checked_bill(content: Vec<u8>, hash_value: &str) -> Result<Vec<u8>, BillError> {
    let gzipped = content.starts_with(&[0x1f, 0x8b]);
    let sha1 = if gzipped {
        sha1_of_gunzipped(&content)?
    } else {
        sha1_hex(&content)
    };
    if !hash_value.eq_ignore_ascii_case(&sha1) {
        return Err(BillError::HashMismatch);
    }
    Ok(if gzipped {
        content
    } else {
        crate::bill::gzip(&content)
    })
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref(),
    )
}

/// The SHA-1 of what a gzip stream unpacks to, read in blocks (a large bill is never unpacked
/// whole in memory).
fn sha1_of_gunzipped(packed: &[u8]) -> Result<String, BillError> {
    use std::io::Read;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    let mut decoder = flate2::read::GzDecoder::new(packed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return Ok(hex::encode(ctx.finish().as_ref())),
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) => {
                return Err(BillError::Unreadable(format!(
                    "the gzip bill does not unpack: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in the layout of BILL_LAYOUT.md (written by hand here, not by any renderer).
    fn bill(rows: &[&str], totals: &str) -> String {
        let mut s = format!("{HEADER}\n");
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str(&format!("{TOTALS_HEADER}\n{totals}\n"));
        s
    }

    const PAY: &str = "`2021-01-28 17:07:11,`wx81be3101902f7cb2,`1601959334,`0,`,`4200000925202101284997714292,`S20210128170702357723,`ofyak5qR_1wYsC99CsWA6R9MJazA,`NATIVE,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`for testing,`cipher code,`0.00000,`1.00%,`0.01,`0.00,`";

    #[test]
    fn the_documented_layout_parses() {
        let b = bill(&[PAY], "`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00");
        let s = parse(&b).unwrap();
        assert_eq!(s.lines.len(), 1);
        assert_eq!(
            (
                s.lines[0].kind,
                s.lines[0].amount,
                s.lines[0].out_trade_no.as_str()
            ),
            (StatementKind::Payment, 1, "S20210128170702357723")
        );
        assert_eq!((s.lines[0].settled_amount, s.lines[0].fee_millifen), (1, 0));
        assert_eq!(
            s.lines[0].at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2021-01-28T09:07:11.000Z")
        );
        // A BOM and CRLF line ends, as real downloads have them.
        let crlf = format!("\u{feff}{}", b.replace('\n', "\r\n"));
        assert_eq!(parse(&crlf).unwrap(), s);
        // Totals that disagree with the rows: refused.
        assert!(parse(&bill(&[PAY], "`1,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00")).is_err());
        // Fees must add up too, to the bill's five decimals.
        assert!(parse(&bill(&[PAY], "`1,`0.01,`0.00,`0.00,`0.00001,`0.01,`0.00")).is_err());
        // Cut anywhere before the totals: refused, never half a day.
        let cut = &b[..b.find("总交易单数").unwrap()];
        assert!(matches!(
            parse(cut).unwrap_err(),
            BillError::Layout(m) if m.contains("missing totals")
        ));
    }

    /// The subject reaches the bill as 商品名称 and the attach as 商户数据包, unquoted: commas and
    /// quotes in them are part of the value, not cell breaks.
    #[test]
    fn commas_and_quotes_in_a_subject_stay_in_their_cell() {
        let row = PAY.replace(
            "`for testing,`cipher code",
            "`Tea, green, \"2 cups\",`a,b=c",
        );
        let s = parse(&bill(
            &[&row, PAY],
            "`2,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00",
        ))
        .unwrap();
        assert!(s.unrecognised.is_empty(), "{:?}", s.unrecognised);
        assert_eq!(s.lines.len(), 2);
        assert_eq!(
            (
                s.lines[0].out_trade_no.as_str(),
                s.lines[0].amount,
                s.lines[0].fee_millifen
            ),
            ("S20210128170702357723", 1, 0)
        );
        assert_eq!(s.lines[0], s.lines[1]);
    }

    #[test]
    fn an_undocumented_trade_state_is_reported_not_fatal() {
        let odd = PAY.replace("`SUCCESS", "`SOMETHING_NEW");
        let s = parse(&bill(
            &[PAY, &odd],
            "`2,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00",
        ))
        .unwrap();
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.unrecognised.len(), 1);
        assert!(s.unrecognised[0].contains("SOMETHING_NEW"));
    }
}

#[cfg(test)]
mod bill_download_tests {
    use super::*;

    #[test]
    fn plain_and_gzip_downloads_are_checked_against_the_unpacked_bill() {
        let bill = b"\xef\xbb\xbf\xe4\xba\xa4\xe6\x98\x93\xe6\x97\xb6\xe9\x97\xb4\r\n".to_vec();
        let hash = sha1_hex(&bill);
        let plain = checked_bill(bill.clone(), &hash).unwrap();
        assert_eq!(
            crate::bill::gunzip(&plain, 1 << 20).unwrap(),
            bill,
            "a plain download is stored gzip-compressed"
        );
        let packed = crate::bill::gzip(&bill);
        assert_eq!(
            checked_bill(packed.clone(), &hash.to_uppercase()).unwrap(),
            packed,
            "a gzip download is kept as it came"
        );
        assert!(
            checked_bill(packed.clone(), &sha1_hex(&packed)).is_err(),
            "the hash is of the unpacked bill, not of the gzip"
        );
        assert!(
            checked_bill(packed[..packed.len() - 4].to_vec(), &hash).is_err(),
            "a truncated gzip"
        );
    }
}
