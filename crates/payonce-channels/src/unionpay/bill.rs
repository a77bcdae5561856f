//! UnionPay's reconciliation file (`fileTransfer`, txnType=76): `fileContent` is base64 of a
//! zlib stream (RFC 1950, with its header: the acp SDKs unpack it with `Inflater(false)` /
//! PHP `gzuncompress`) of a zip named `{merId}_{yyyyMMdd}.zip`, holding
//!
//! - `INN{yyMMdd}88ZM_{merId}`: the day's transactions (全渠道商户一般交易明细), GBK, one
//!   fixed-width record per CRLF line, no header and no trailer; and
//! - `RD{…}_{merId}`: the day's summary report (中国银联全渠道商户交易汇总表), GBK text whose
//!   `总计` line carries count, amount, fees and net, each as debit and credit columns.
//!
//! Layout source: UnionPay's own Java demo (ACPSample_B2C, `DemoBase.parseZMFile`, widths
//! `{3,11,11,6,10,19,12,4,2,21,2,32,2,6,10,13,13,4,15,2,2,6,2,4,32,1,21,15,1,15,32,13,13,8,32,13,13,12,2,1,32,98}`)
//! and the sample file shipped with it (`对账文件样例/802310048993424_20150905.zip`): fields
//! are byte-wide (GBK), separated by one space, left-aligned and space-padded; amounts are
//! fen, 交易金额 unsigned (12 digits), the others `C`/`D` + 12 digits (a space for zero), and
//! the sample's records add up exactly to its RD report's 总计. Which rows are payments and which
//! refunds is read from 交易类型 (the ACP txnType: 01 consume; 04 refund, 31 consume cancel),
//! not from 交易代码, for which no published table exists. The last 98 bytes (reserved, split
//! differently by different SDKs) are not read.

use crate::bill::BillError;
use crate::money::yuan_to_fen;
use crate::{Statement, StatementKind, StatementLine};
use std::io::Read;

/// Byte widths of the ZM record's fields, in order (see the module doc for the source).
pub const ZM_WIDTHS: [usize; 42] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21,
    15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98,
];

/// Indexes (0-based) of the fields payonce reads.
mod field {
    pub const TRANSMITTED_AT: usize = 4; // 交易传输时间 MMDDhhmmss
    pub const AMOUNT: usize = 6; // 交易金额
    pub const QUERY_ID: usize = 9; // 查询流水号
    pub const ORDER_ID: usize = 11; // 商户订单号
    pub const FEE: usize = 15; // 商户手续费
    pub const SETTLED: usize = 16; // 结算金额
    pub const TXN_TYPE: usize = 19; // 交易类型
    pub const MER_ID: usize = 27; // 商户代码
    pub const ORIG_ORDER_ID: usize = 40; // 原始交易订单号
}

/// The byte offset of each field (one space between fields).
fn offsets() -> [usize; 42] {
    let mut out = [0; 42];
    let mut at = 0;
    for (i, w) in ZM_WIDTHS.iter().enumerate() {
        out[i] = at;
        at += w + 1;
    }
    out
}

/// Reads `fileContent` as stored (base64-decoded): unzlib, unzip, then the ZM records checked
/// against the RD report's 总计. The records' times carry no year: it comes from the ZM file's
/// name (`INN{yyMMdd}…`).
pub fn parse_file_content(zlib: &[u8]) -> Result<Statement, BillError> {
    let mut zip = Vec::new();
    // A day's archive is bounded; more is not a bill.
    flate2::read::ZlibDecoder::new(zlib)
        .take(1 << 30)
        .read_to_end(&mut zip)
        .map_err(|e| BillError::Unreadable(format!("fileContent does not inflate: {e}")))?;
    parse_zip(&zip)
}

/// The unpacked archive: its ZM file and its RD report.
pub fn parse_zip(bytes: &[u8]) -> Result<Statement, BillError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| BillError::Unreadable(format!("not a zip: {e}")))?;
    let (mut zm, mut rd, mut zip_day) = (None, None, None);
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| BillError::Unreadable(e.to_string()))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let base = name.rsplit('/').next().unwrap_or(&name).to_owned();
        let mut content = Vec::new();
        entry
            .take(1 << 30)
            .read_to_end(&mut content)
            .map_err(|e| BillError::Unreadable(format!("{name}: {e}")))?;
        if base.starts_with("INN") && base.contains("ZM_") {
            // INN + yyMMdd + 88 + ZM_ + merId: the records' year comes from here.
            zip_day = base.get(3..9).map(str::to_owned);
            zm = Some(content);
        } else if base.starts_with("RD") {
            rd = Some(content);
        }
    }
    let zm = zm.ok_or_else(|| BillError::Layout("the archive has no INN…ZM_ file".into()))?;
    let year = zip_day
        .as_deref()
        .and_then(|d| d.get(..2))
        .and_then(|y| y.parse::<i32>().ok())
        .map(|y| 2000 + y);
    let month = zip_day
        .as_deref()
        .and_then(|d| d.get(2..4))
        .and_then(|m| m.parse::<u8>().ok());
    let (statement, sums) = parse_zm(&zm, year.zip(month))?;
    let totals = parse_rd_total(
        &rd.ok_or_else(|| BillError::Layout("the archive has no RD summary report".into()))?,
    )?;
    if totals != sums {
        return Err(BillError::Totals(format!(
            "the RD report's 总计 {totals:?} disagrees with the ZM records {sums:?}"
        )));
    }
    Ok(statement)
}

/// What the RD report's 总计 line states, or what the records add up to; amounts are credit
/// minus debit in fen (fees: debit minus credit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub count: usize,
    pub amount: i64,
    pub fees: i64,
    pub net: i64,
}

/// `C000000473939` → 473939; `D000000002861` → -2861; ` 000000000000` → 0.
fn signed_fen(cell: &[u8]) -> Option<i64> {
    let (sign, digits) = cell.split_first()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    match sign {
        b'C' => Some(v),
        b'D' => Some(-v),
        b' ' if v == 0 => Some(0),
        _ => None,
    }
}

/// The ZM file's records. `year_month`: the clearing day's year and month, to date the records
/// (a record of 12-31 in the bill of 01-01 is of the year before).
pub fn parse_zm(
    bytes: &[u8],
    year_month: Option<(i32, u8)>,
) -> Result<(Statement, Totals), BillError> {
    let offsets = offsets();
    let mut out = Statement::default();
    let mut sums = Totals::default();
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(|b| *b == b' ') {
            continue;
        }
        // Trailing spaces may have been trimmed by whoever copied the file: pad them back.
        let needed = offsets[field::ORIG_ORDER_ID] + ZM_WIDTHS[field::ORIG_ORDER_ID];
        let mut padded;
        let line = if line.len() < needed {
            padded = line.to_vec();
            padded.resize(needed, b' ');
            &padded[..]
        } else {
            line
        };
        let get = |f: usize| &line[offsets[f]..offsets[f] + ZM_WIDTHS[f]];
        let text = |f: usize| String::from_utf8_lossy(get(f)).trim().to_owned();
        let row = n + 1;
        let amount_cell = get(field::AMOUNT);
        if !amount_cell.iter().all(u8::is_ascii_digit) {
            return Err(BillError::Row(format!(
                "record {row}: 交易金额 is not 12 digits"
            )));
        }
        let amount: i64 = std::str::from_utf8(amount_cell)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BillError::Row(format!("record {row}: bad 交易金额")))?;
        let fee = signed_fen(get(field::FEE))
            .ok_or_else(|| BillError::Row(format!("record {row}: bad 商户手续费")))?;
        let settled = signed_fen(get(field::SETTLED))
            .ok_or_else(|| BillError::Row(format!("record {row}: bad 结算金额")))?;
        sums.count += 1;
        // A fee the merchant pays is a debit (D); a fee given back with a refund, a credit.
        sums.fees -= fee;
        sums.net += settled;
        let at = year_month.and_then(|(y, m)| record_time(get(field::TRANSMITTED_AT), y, m));
        let kind = match text(field::TXN_TYPE).as_str() {
            "01" => StatementKind::Payment,
            "04" | "31" => StatementKind::Refund,
            other => {
                // A debit-or-credit kind payonce never makes (pre-authorisations…): counted as
                // the report counts it, shown to a person.
                sums.amount += if settled < 0 { -amount } else { amount };
                out.unrecognised.push(format!(
                    "txnType {other}: orderId {} (record {row})",
                    text(field::ORDER_ID)
                ));
                continue;
            }
        };
        let line = match kind {
            StatementKind::Payment => {
                sums.amount += amount;
                StatementLine {
                    kind,
                    out_trade_no: text(field::ORDER_ID),
                    channel_trade_no: Some(text(field::QUERY_ID)).filter(|s| !s.is_empty()),
                    out_refund_no: None,
                    amount,
                    settled_amount: settled.abs(),
                    fee_millifen: -fee * 1000,
                    at,
                }
            }
            StatementKind::Refund => {
                sums.amount -= amount;
                StatementLine {
                    kind,
                    // The refund's own orderId is payonce's refund number.
                    out_trade_no: text(field::ORIG_ORDER_ID),
                    channel_trade_no: Some(text(field::QUERY_ID)).filter(|s| !s.is_empty()),
                    out_refund_no: Some(text(field::ORDER_ID)),
                    amount,
                    settled_amount: settled.abs(),
                    fee_millifen: -fee * 1000,
                    at,
                }
            }
        };
        if text(field::MER_ID).is_empty() {
            return Err(BillError::Row(format!("record {row}: no 商户代码")));
        }
        out.lines.push(line);
    }
    Ok((out, sums))
}

/// `MMDDhhmmss` (Beijing) in a bill of `year`/`month`: the year before when the record's month
/// is December and the bill's January.
fn record_time(cell: &[u8], year: i32, bill_month: u8) -> Option<payonce_core::Timestamp> {
    let s = std::str::from_utf8(cell).ok()?;
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<u8>().ok());
    let month = n(0..2)?;
    let year = if month == 12 && bill_month == 1 {
        year - 1
    } else {
        year
    };
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, n(2..4)?).ok()?;
    let t = date
        .with_hms(n(4..6)?, n(6..8)?, n(8..10)?)
        .ok()?
        .assume_offset(time::macros::offset!(+8));
    Some(payonce_core::Timestamp(t.unix_timestamp() * 1000))
}

/// The RD report's first `总计` line: count, then amount, fees and net, each as debit and
/// credit (yuan with two decimals).
pub fn parse_rd_total(bytes: &[u8]) -> Result<Totals, BillError> {
    let (text, _, _) = encoding_rs::GBK.decode(bytes);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("总计"))
        .ok_or_else(|| BillError::Layout("the RD report has no 总计 line".into()))?;
    let cells: Vec<&str> = line.split_whitespace().collect();
    if cells.len() < 8 {
        return Err(BillError::Totals(format!(
            "the RD report's 总计 line has {} cells, not 8",
            cells.len()
        )));
    }
    let fen = |i: usize| {
        yuan_to_fen(cells[i])
            .ok_or_else(|| BillError::Totals(format!("bad amount {:?} in 总计", cells[i])))
    };
    Ok(Totals {
        count: cells[1]
            .parse()
            .map_err(|_| BillError::Totals(format!("bad count {:?} in 总计", cells[1])))?,
        amount: fen(3)? - fen(2)?,
        fees: fen(4)? - fen(5)?,
        net: fen(7)? - fen(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record in the layout above, as UnionPay's sample writes its first one (values
    /// re-typed here field by field, not copied bytes).
    pub fn record(
        txn_type: &str,
        order_id: &str,
        query_id: &str,
        amount: i64,
        fee: &str,
        settled: &str,
        orig_order: &str,
    ) -> String {
        let values: Vec<String> = vec![
            "S56".into(),
            "88022900".into(),
            "00049993".into(),
            "190624".into(),
            "0906112203".into(),
            "622609******0048".into(),
            format!("{amount:012}"),
            "4899".into(),
            "07".into(),
            query_id.into(),
            "01".into(),
            order_id.into(),
            "01".into(),
            "".into(),
            "".into(),
            fee.into(),
            settled.into(),
            "0001".into(),
            "".into(),
            txn_type.into(),
            "".into(),
            "000201".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "802310048993424".into(),
            "".into(),
            "000000000000000".into(),
            "".into(),
            " 000000000000".into(),
            settled.into(),
            "01080209".into(),
            "".into(),
            " 000000000000".into(),
            " 000000000000".into(),
            " 00000000000".into(),
            "".into(),
            "7".into(),
            orig_order.into(),
            "".into(),
        ];
        values
            .iter()
            .zip(ZM_WIDTHS)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    const RD_TOTAL: &str = "总计                       8            0.00        13227.00           79.36            0.00            0.00        13147.64";

    #[test]
    fn a_record_is_607_bytes_and_reads_back() {
        let r = record(
            "01",
            "10078087",
            "201509061122031906248",
            476800,
            "D000000002861",
            "C000000473939",
            "",
        );
        assert_eq!(r.len(), 607);
        let (s, sums) = parse_zm(format!("{r}\r\n").as_bytes(), Some((2015, 9))).unwrap();
        let l = &s.lines[0];
        assert_eq!(
            (
                l.kind,
                l.out_trade_no.as_str(),
                l.amount,
                l.settled_amount,
                l.fee_millifen
            ),
            (
                StatementKind::Payment,
                "10078087",
                476800,
                473939,
                2_861_000
            )
        );
        assert_eq!(l.channel_trade_no.as_deref(), Some("201509061122031906248"));
        assert_eq!(l.at.unwrap().to_rfc3339(), "2015-09-06T03:22:03.000Z");
        assert_eq!(
            sums,
            Totals {
                count: 1,
                amount: 476800,
                fees: 2861,
                net: 473939
            }
        );
        // Trailing spaces trimmed away: still read.
        assert_eq!(
            parse_zm(r.trim_end().as_bytes(), None)
                .unwrap()
                .0
                .lines
                .len(),
            1
        );
    }

    #[test]
    fn the_rd_total_line_reads_as_the_sample_states_it() {
        let rd = encoding_rs::GBK
            .encode(&format!("中国银联全渠道商户交易汇总表\r\n{RD_TOTAL}\r\n"))
            .0
            .into_owned();
        assert_eq!(
            parse_rd_total(&rd).unwrap(),
            Totals {
                count: 8,
                amount: 1_322_700,
                fees: 7936,
                net: 1_314_764
            }
        );
    }

    #[test]
    fn a_refund_names_payonces_refund_number_and_a_bad_sign_is_refused() {
        let r = record(
            "04",
            "R1",
            "201509061122031906249",
            100,
            "C000000000001",
            "D000000000099",
            "P1",
        );
        let (s, sums) = parse_zm(r.as_bytes(), Some((2015, 9))).unwrap();
        let l = &s.lines[0];
        assert_eq!(
            (
                l.kind,
                l.out_refund_no.as_deref(),
                l.out_trade_no.as_str(),
                l.fee_millifen
            ),
            (StatementKind::Refund, Some("R1"), "P1", -1000)
        );
        assert_eq!(
            sums,
            Totals {
                count: 1,
                amount: -100,
                fees: -1,
                net: -99
            }
        );
        let bad = record("01", "P2", "q", 100, "X000000000001", "C000000000099", "");
        assert!(parse_zm(bad.as_bytes(), None).is_err());
    }

    /// The whole path: zlib of a zip holding a ZM file and its RD report, as fileTransfer's
    /// `fileContent` carries it; totals that disagree refuse the archive.
    #[test]
    fn a_file_content_archive_reads_and_its_report_must_add_up() {
        fn archive(zm: &str, rd_total: &str) -> Vec<u8> {
            use std::io::Write;
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file("INN15090588ZM_802310048993424", opts)
                .unwrap();
            zip.write_all(zm.as_bytes()).unwrap();
            zip.start_file("RD201015090501_802310048993424", opts)
                .unwrap();
            zip.write_all(
                &encoding_rs::GBK
                    .encode(&format!("中国银联全渠道商户交易汇总表\r\n{rd_total}\r\n"))
                    .0,
            )
            .unwrap();
            let bytes = zip.finish().unwrap().into_inner();
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&bytes).unwrap();
            z.finish().unwrap()
        }
        let zm = format!(
            "{}\r\n",
            record(
                "01",
                "10078087",
                "201509061122031906248",
                476800,
                "D000000002861",
                "C000000473939",
                ""
            )
        );
        let good = "总计                       1            0.00         4768.00           28.61            0.00            0.00         4739.39";
        let s = parse_file_content(&archive(&zm, good)).unwrap();
        assert_eq!(s.lines.len(), 1);
        // The record's year comes from the file name (INN15…): 2015-09-06 11:22:03 Beijing.
        assert_eq!(
            s.lines[0].at.unwrap().to_rfc3339(),
            "2015-09-06T03:22:03.000Z"
        );
        let off_by_a_fen = good.replace("28.61", "28.62");
        assert!(matches!(
            parse_file_content(&archive(&zm, &off_by_a_fen)).unwrap_err(),
            BillError::Totals(m) if m.contains("总计")
        ));
        let packed = archive(&zm, good);
        assert!(
            parse_file_content(&packed[..packed.len() / 2]).is_err(),
            "a truncated archive"
        );
    }

    #[test]
    fn december_records_in_a_january_bill_are_of_the_year_before() {
        let t = record_time(b"1231235959", 2027, 1).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-31T15:59:59.000Z");
    }
}
