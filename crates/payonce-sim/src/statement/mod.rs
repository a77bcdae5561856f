//! Daily statements in each channel's own bill format, built from the ledger and written by the
//! simulator itself from the layouts the channels publish (not by the connectors' parsers'
//! understanding): WeChat's backtick CSV with its totals block, CRLF and a BOM as real
//! downloads have them; Alipay's zip of two GBK CSVs with GBK entry names and no UTF-8 flag.
//! A day is a calendar day in Beijing time, as the channels book it.
//!
//! This module books the day's movements and the bad days (`BillAdjustment`); each channel's
//! format is written by its own submodule.

mod alipay;
mod unionpay;
mod wechat;

pub use alipay::alipay_bill_zip;
pub use unionpay::unionpay_file;
pub use wechat::wechat_bill;

use crate::Sim;
use crate::wire::beijing_date;
use payonce_core::ChannelName;
use std::io::Write;

/// One booked movement: (time, out_trade_no, trade_no, order amount, refund, subject), where
/// refund is (refund_id, out_refund_no, amount).
struct Entry {
    at: i64,
    out_trade_no: String,
    trade_no: String,
    amount: i64,
    refund: Option<(String, String, i64)>,
    subject: String,
}

/// What a bad day puts on (or leaves off) a bill, beyond what really moved (`POST /sim/bill`):
/// reconciliation's test cases. The ledger — the simulator's truth — is untouched.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BillAdjustment {
    /// A charge on an order the merchant never created (another system on the same account).
    ForeignCharge {
        channel: ChannelName,
        out_trade_no: String,
        amount: i64,
    },
    /// A refund the merchant never asked for.
    ForeignRefund {
        channel: ChannelName,
        out_trade_no: String,
        out_refund_no: String,
        amount: i64,
    },
    /// The bill states another amount for this charge.
    Amount {
        channel: ChannelName,
        out_trade_no: String,
        amount: i64,
    },
    /// The bill lacks this charge.
    Omit {
        channel: ChannelName,
        out_trade_no: String,
    },
    /// The bill's bytes are damaged in transit (WeChat: its hash no longer matches; UnionPay:
    /// its RD report's count no longer adds up).
    Corrupt { channel: ChannelName },
    /// `rows` more payments on the bill of `date`, for benchmarks: out_trade_no
    /// `{prefix}{i:09}`, channel trade number `42{i:026}`, `amount` fen each, spread over the day.
    Synthetic {
        channel: ChannelName,
        date: String,
        rows: u64,
        prefix: String,
        amount: i64,
    },
}

/// The bill day a movement at `at` belongs to: the Beijing calendar day, except UnionPay's
/// clearing day, which runs from 23:00 the day before to 23:00 (UnionPay's FAQ: "一般前一日23点
/// 至当天23点为一个清算日").
pub fn bill_day(channel: ChannelName, at: i64) -> String {
    match channel {
        ChannelName::Unionpay => beijing_date(at + 3_600_000),
        _ => beijing_date(at),
    }
}

/// The channel's fee on a movement, in fen: 0.6 % rounded to the fen (WeChat and Alipay round
/// each transaction's fee), given back pro rata on a refund.
pub fn fee_of(amount: i64) -> i64 {
    (amount * 6 + 500) / 1000
}

/// Whether `channel`'s bills are damaged in transit now.
pub fn corrupted(sim: &Sim, channel: ChannelName) -> bool {
    sim.bill_adjustments
        .lock()
        .unwrap()
        .iter()
        .any(|a| matches!(a, BillAdjustment::Corrupt { channel: c } if *c == channel))
}

/// The bill of `merchant` (index into the channel's merchants) for `date`. A bad day's
/// adjustments (`POST /sim/bill`) are the first merchant's: they name no merchant.
fn entries(sim: &Sim, channel: ChannelName, merchant: usize, date: &str) -> Vec<Entry> {
    let mut out = booked(sim, channel, merchant, date);
    if merchant != 0 {
        out.sort_by_key(|e| e.at);
        return out;
    }
    let today = |at: i64| bill_day(channel, at) == date;
    for adj in sim.bill_adjustments.lock().unwrap().iter() {
        match adj {
            BillAdjustment::ForeignCharge {
                channel: c,
                out_trade_no,
                amount,
            } if *c == channel && today(sim.now_ms()) => out.push(Entry {
                at: sim.now_ms(),
                out_trade_no: out_trade_no.clone(),
                trade_no: format!("9{}", sim.nonce(20)),
                amount: *amount,
                refund: None,
                subject: "not ours".into(),
            }),
            BillAdjustment::ForeignRefund {
                channel: c,
                out_trade_no,
                out_refund_no,
                amount,
            } if *c == channel && today(sim.now_ms()) => out.push(Entry {
                at: sim.now_ms(),
                out_trade_no: out_trade_no.clone(),
                trade_no: format!("9{}", sim.nonce(20)),
                amount: *amount,
                refund: Some((
                    format!("5{}", sim.nonce(20)),
                    out_refund_no.clone(),
                    *amount,
                )),
                subject: "not ours".into(),
            }),
            BillAdjustment::Amount {
                channel: c,
                out_trade_no,
                amount,
            } if *c == channel => {
                for e in out
                    .iter_mut()
                    .filter(|e| e.refund.is_none() && &e.out_trade_no == out_trade_no)
                {
                    e.amount = *amount;
                }
            }
            BillAdjustment::Omit {
                channel: c,
                out_trade_no,
            } if *c == channel => {
                out.retain(|e| e.refund.is_some() || &e.out_trade_no != out_trade_no)
            }
            BillAdjustment::Synthetic {
                channel: c,
                date: d,
                rows,
                prefix,
                amount,
            } if *c == channel && d == date => {
                let start =
                    crate::wire::parse_alipay_time(&format!("{date} 00:00:00")).unwrap_or(0);
                let step = 86_000_000 / (*rows).max(1) as i64;
                out.extend((0..*rows).map(|i| Entry {
                    at: start + i as i64 * step,
                    out_trade_no: format!("{prefix}{i:09}"),
                    trade_no: format!("42{i:026}"),
                    amount: *amount,
                    refund: None,
                    subject: "bench".into(),
                }));
            }
            _ => {}
        }
    }
    out.sort_by_key(|e| e.at);
    out
}

/// Whether `channel` has a bill for `date`: the channels write none for a day on which nothing
/// moved, and answer "no bill" in their own way (WeChat 400 `NO_STATEMENT_EXIST`, Alipay 40004
/// `isp.bill_not_exist`, UnionPay `respCode=98`).
pub fn has_bill(sim: &Sim, channel: ChannelName, merchant: usize, date: &str) -> bool {
    !entries(sim, channel, merchant, date).is_empty()
}

/// What really moved at `merchant` of `channel` that day, from the ledger.
fn booked(sim: &Sim, channel: ChannelName, merchant: usize, date: &str) -> Vec<Entry> {
    let name = sim.merchant_name(channel, merchant);
    let ledger = sim.ledger.lock().unwrap();
    let order = |no: &str| ledger.orders.get(&(channel, no.to_owned()));
    let mut out: Vec<Entry> = ledger
        .charges
        .iter()
        .filter(|c| c.channel == channel && c.merchant == name && bill_day(channel, c.at) == date)
        .map(|c| Entry {
            at: c.at,
            out_trade_no: c.out_trade_no.clone(),
            trade_no: c.trade_no.clone(),
            amount: c.amount,
            refund: None,
            subject: order(&c.out_trade_no)
                .map(|o| o.subject.clone())
                .unwrap_or_default(),
        })
        .collect();
    out.extend(
        ledger
            .refunds
            .iter()
            .filter(|r| {
                r.channel == channel && r.merchant == name && bill_day(channel, r.settle_at) == date
            })
            .map(|r| Entry {
                at: r.settle_at,
                out_trade_no: r.out_trade_no.clone(),
                trade_no: order(&r.out_trade_no)
                    .and_then(|o| o.trade_no.clone())
                    .unwrap_or_default(),
                amount: order(&r.out_trade_no).map(|o| o.amount).unwrap_or(r.amount),
                refund: Some((r.refund_id.clone(), r.out_refund_no.clone(), r.amount)),
                subject: order(&r.out_trade_no)
                    .map(|o| o.subject.clone())
                    .unwrap_or_default(),
            }),
    );
    out.sort_by_key(|e| e.at);
    out
}

/// A zip archive with deflated entries whose names are raw (GBK) bytes and whose general-purpose
/// flag does NOT mark them UTF-8 — what Alipay's bill zips look like (PKWARE APPNOTE 4.3.7/4.3.12).
fn zip_gbk(files: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("in-memory deflate");
        let packed = enc.finish().expect("in-memory deflate");
        let offset = out.len() as u32;
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0u16.to_le_bytes()); // flags: no UTF-8 bit (11)
        out.extend_from_slice(&8u16.to_le_bytes()); // deflate
        out.extend_from_slice(&0u16.to_le_bytes()); // time
        out.extend_from_slice(&0x5821u16.to_le_bytes()); // date (2024-01-01)
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&packed);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&8u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x5821u16.to_le_bytes());
        central.extend_from_slice(&crc.sum().to_le_bytes());
        central.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
        central.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

pub fn sandbox_bill(sim: &Sim, date: &str) -> serde_json::Value {
    entries(sim, ChannelName::Sandbox, 0, date)
        .iter()
        .map(|e| match &e.refund {
            Some((_, no, amt)) => serde_json::json!({"kind": "refund", "out_trade_no": e.out_trade_no, "trade_no": e.trade_no, "out_refund_no": no, "amount": amt, "fee": -fee_of(*amt), "at": e.at}),
            None => serde_json::json!({"kind": "payment", "out_trade_no": e.out_trade_no, "trade_no": e.trade_no, "amount": e.amount, "fee": fee_of(e.amount), "at": e.at}),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{self, NewOrder};
    use crate::{SimOptions, SimStatus};

    /// An order subject as a merchant may write it.
    const SUBJECT: &str = "Tea, green, \"2 cups\"";

    fn paid(sim: &std::sync::Arc<Sim>, channel: ChannelName, no: &str, subject: &str) {
        let now = sim.now_ms();
        let order = NewOrder {
            channel,
            merchant: 0,
            out_trade_no: no.into(),
            amount: 100,
            subject: subject.into(),
            notify_url: "http://127.0.0.1:1/notify".into(),
            time_expire: now + 600_000,
            credential_valid_until: None,
            credential: "c".into(),
            fingerprint: no.into(),
            initial: SimStatus::Unpaid,
        };
        ops::create(sim, order).map_err(|_| "create").unwrap();
        ops::pay(sim, channel, no, false)
            .map_err(|_| "pay")
            .unwrap();
    }

    /// The detail CSV of the bill zip (its first entry), as UTF-8.
    fn alipay_detail(zip: &[u8]) -> String {
        let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
        let size = u32::from_le_bytes([zip[18], zip[19], zip[20], zip[21]]) as usize;
        let start = 30 + u16_at(26) + u16_at(28);
        let mut gbk = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::DeflateDecoder::new(&zip[start..start + size]),
            &mut gbk,
        )
        .unwrap();
        encoding_rs::GBK.decode(&gbk).0.into_owned()
    }

    /// WeChat writes the subject as it is after its backtick; Alipay quotes it as RFC 4180 does,
    /// which Python's `csv` module (an independent reader) reads back whole, line break included.
    #[tokio::test]
    async fn subjects_reach_the_bills_as_the_channels_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let (sim, _) =
            Sim::prepare(dir.path(), "http://127.0.0.1:1", SimOptions::default()).unwrap();
        paid(&sim, ChannelName::Wechatpay, "WX0000000001", SUBJECT);
        let multiline = format!("{SUBJECT}\r\nsecond line");
        paid(&sim, ChannelName::Alipay, "ALI000000001", &multiline);
        let date = beijing_date(sim.now_ms());
        assert!(
            wechat_bill(&sim, 0, &date).contains(&format!(",`{SUBJECT},`")),
            "{}",
            wechat_bill(&sim, 0, &date)
        );
        let detail = alipay_detail(&alipay_bill_zip(&sim, 0, &date));
        assert!(
            detail.contains("\"Tea, green, \"\"2 cups\"\"\r\nsecond line\""),
            "{detail}"
        );
        let script = r##"
import csv, io, json, sys
rows = [r for r in csv.reader(io.StringIO(sys.stdin.read(), newline="")) if r and not r[0].startswith("#")]
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
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), detail.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), 2, "the header and one row: {rows:?}");
        assert_eq!(rows[1].len(), 25, "{:?}", rows[1]);
        assert_eq!(
            (rows[1][3].as_str(), rows[1][24].as_str()),
            (multiline.as_str(), multiline.as_str())
        );
    }
}
