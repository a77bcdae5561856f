//! Daily statements in each channel's own bill format, built from the ledger and written by the
//! simulator itself from the layouts the channels publish (not by the connectors' parsers'
//! understanding): WeChat's backtick CSV with its totals block, CRLF and a BOM as real
//! downloads have them; Alipay's zip of two GBK CSVs with GBK entry names and no UTF-8 flag.
//! A day is a calendar day in Beijing time, as the channels book it.

use crate::Sim;
use crate::wire::{alipay_time, beijing_date, yuan};
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

fn entries(sim: &Sim, channel: ChannelName, date: &str) -> Vec<Entry> {
    let mut out = booked(sim, channel, date);
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
pub fn has_bill(sim: &Sim, channel: ChannelName, date: &str) -> bool {
    !entries(sim, channel, date).is_empty()
}

/// What really moved on `channel` that day, from the ledger.
fn booked(sim: &Sim, channel: ChannelName, date: &str) -> Vec<Entry> {
    let ledger = sim.ledger.lock().unwrap();
    let order = |no: &str| ledger.orders.get(&(channel, no.to_owned()));
    let mut out: Vec<Entry> = ledger
        .charges
        .iter()
        .filter(|c| c.channel == channel && bill_day(channel, c.at) == date)
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
            .filter(|r| r.channel == channel && bill_day(channel, r.settle_at) == date)
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

const WECHAT_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const WECHAT_TOTALS: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// The WeChat trade bill (`bill_type=ALL`), with a BOM and CRLF line ends.
pub fn wechat_bill(sim: &Sim, date: &str) -> String {
    let mut out = format!("\u{feff}{WECHAT_HEADER}\r\n");
    let (mut paid, mut refunded, mut fees) = (0i64, 0i64, 0i64);
    let rows = entries(sim, ChannelName::Wechatpay, date);
    for e in &rows {
        let fee = match &e.refund {
            Some((_, _, amt)) => -fee_of(*amt),
            None => fee_of(e.amount),
        };
        fees += fee;
        // WeChat quotes nothing: the subject goes in as it is, commas and quotes included (every
        // cell starts with a backtick, which is what tells the cells apart).
        let subject = e.subject.as_str();
        let (state, refund_id, out_refund_no, refund_amt, refund_status, settle) = match &e.refund {
            Some((id, no, amt)) => {
                refunded += amt;
                (
                    "REFUND",
                    id.as_str(),
                    no.as_str(),
                    yuan(*amt),
                    "SUCCESS",
                    yuan(0),
                )
            }
            None => {
                paid += e.amount;
                ("SUCCESS", "0", "0", "0.00".to_owned(), "", yuan(e.amount))
            }
        };
        let refund_kind = if e.refund.is_some() { "ORIGINAL" } else { "" };
        let cells: [&str; 27] = [
            &alipay_time(e.at),
            crate::keys::WECHAT_APPID,
            crate::keys::WECHAT_MCHID,
            "0",
            "",
            &e.trade_no,
            &e.out_trade_no,
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "NATIVE",
            state,
            "OTHERS",
            "CNY",
            &settle,
            "0.00",
            refund_id,
            out_refund_no,
            &refund_amt,
            "0.00",
            refund_kind,
            refund_status,
            subject,
            "",
            &yuan5(fee),
            "0.60%",
            &yuan(e.amount),
            &refund_amt,
            "",
        ];
        out.push_str(
            &cells
                .iter()
                .map(|c| format!("`{c}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    out.push_str(WECHAT_TOTALS);
    out.push_str("\r\n");
    let totals = [
        rows.len().to_string(),
        yuan(paid),
        yuan(refunded),
        "0.00".into(),
        yuan5(fees),
        yuan(paid),
        yuan(refunded),
    ];
    out.push_str(
        &totals
            .iter()
            .map(|c| format!("`{c}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("\r\n");
    out
}

/// Fen as WeChat writes fees: yuan to five decimals (`0.06000`, `-0.01000`).
fn yuan5(fen: i64) -> String {
    format!("{}000", yuan(fen))
}

const ALIPAY_PID: &str = "20880000000000000156";

/// A cell as Alipay's CSV writes it (RFC 4180): quoted when it holds a comma, a quote or a line
/// break, a quote inside doubled.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The Alipay trade bill as served: a zip of the detail and summary CSVs, GBK throughout.
pub fn alipay_bill_zip(sim: &Sim, date: &str) -> Vec<u8> {
    let rows = entries(sim, ChannelName::Alipay, date);
    let day = date.replace('-', "");
    let start = format!(
        "{}年{}月{}日 00:00:00",
        date.get(..4).unwrap_or(""),
        date.get(5..7).unwrap_or(""),
        date.get(8..10).unwrap_or("")
    );
    let mut detail = format!(
        "#支付宝业务明细查询\r\n#账号：[{ALIPAY_PID}]\r\n#起始日期：[{start}]   终止日期：[{start}]\r\n#{}业务明细列表{}\r\n\
         支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\r\n",
        "-".repeat(41),
        "-".repeat(40)
    );
    let (mut n_pay, mut sum_pay, mut n_ref, mut sum_ref, mut fees) =
        (0usize, 0i64, 0usize, 0i64, 0i64);
    for e in &rows {
        let subject = csv_cell(&e.subject);
        let fee = match &e.refund {
            Some((_, _, amt)) => -fee_of(*amt),
            None => fee_of(e.amount),
        };
        fees += fee;
        let (kind, amount, refund_no) = match &e.refund {
            Some((_, no, amt)) => {
                n_ref += 1;
                sum_ref += amt;
                ("退款", yuan(-amt), no.as_str())
            }
            None => {
                n_pay += 1;
                sum_pay += e.amount;
                ("交易", yuan(e.amount), "")
            }
        };
        let t = alipay_time(e.at);
        // Text cells end with a TAB, so spreadsheet programs keep them as text.
        detail.push_str(&format!(
            "{}\t,{}\t,{kind}\t,{subject},{t},{t},\t,\t,\t,\t,abc***@example.com\t,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{refund_no}\t,{},0.00,{subject}\r\n",
            e.trade_no, e.out_trade_no, yuan(fee)
        ));
    }
    detail.push_str(&format!(
        "#{}业务明细列表结束{}\r\n#交易合计：{n_pay}笔，商家实收共{}元，商家优惠共0.00元\r\n#退款合计：{n_ref}笔，商家实收退款共{}元，商家优惠退款共0.00元\r\n#导出时间：[{start}]\r\n",
        "-".repeat(41),
        "-".repeat(36),
        yuan(sum_pay),
        yuan(-sum_ref)
    ));
    let summary = format!(
        "#支付宝业务汇总查询\r\n#账号：[{ALIPAY_PID}]\r\n#起始日期：[{start}]   终止日期：[{start}]\r\n#{}业务汇总列表{}\r\n\
         门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）\r\n\
         合计,,{n_pay},{n_ref},{},{},0.00,0.00,0.00,{},0.00,{}\r\n#{}业务汇总列表结束{}\r\n#导出时间：[{start}]\r\n",
        "-".repeat(41),
        "-".repeat(40),
        yuan(sum_pay - sum_ref),
        yuan(sum_pay - sum_ref),
        yuan(fees),
        yuan(sum_pay - sum_ref - fees),
        "-".repeat(40),
        "-".repeat(37)
    );
    let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
    zip_gbk(&[
        (
            gbk(&format!("{ALIPAY_PID}_{day}_业务明细.csv")),
            gbk(&detail),
        ),
        (
            gbk(&format!("{ALIPAY_PID}_{day}_业务明细(汇总).csv")),
            gbk(&summary),
        ),
    ])
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
    entries(sim, ChannelName::Sandbox, date)
        .iter()
        .map(|e| match &e.refund {
            Some((_, no, amt)) => serde_json::json!({"kind": "refund", "out_trade_no": e.out_trade_no, "trade_no": e.trade_no, "out_refund_no": no, "amount": amt, "fee": -fee_of(*amt), "at": e.at}),
            None => serde_json::json!({"kind": "payment", "out_trade_no": e.out_trade_no, "trade_no": e.trade_no, "amount": e.amount, "fee": fee_of(e.amount), "at": e.at}),
        })
        .collect()
}

/// Byte widths of a UnionPay ZM record's 42 fields, as UnionPay's own demo lays them out
/// (ACPSample_B2C `DemoBase.parseZMFile`), each left-aligned, space-padded, one space apart.
const ZM_WIDTHS: [usize; 42] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21,
    15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98,
];

/// `C`/`D` and 12 digits of fen; a space instead of the letter for zero.
fn credit_debit(fen: i64) -> String {
    let sign = match fen.signum() {
        1 => 'C',
        -1 => 'D',
        _ => ' ',
    };
    format!("{sign}{:012}", fen.abs())
}

/// Fen as the RD report prints them: yuan, two decimals, right-aligned.
fn rd_amount(fen: i64) -> String {
    format!("{:>16}", yuan(fen))
}

/// UnionPay's `fileContent` for one clearing day (`date`, YYYY-MM-DD): the zip of the
/// `INN{yyMMdd}88ZM_{merId}` records and the `RD…` summary report, zlib-deflated (with its
/// header, as the acp SDKs inflate it). Returns (fileName, zlib bytes).
pub fn unionpay_file(sim: &Sim, date: &str) -> (String, Vec<u8>) {
    use crate::keys::UNIONPAY_MER_ID;
    let rows = entries(sim, ChannelName::Unionpay, date);
    let day = date.replace('-', "");
    let yymmdd = day.get(2..).unwrap_or_default().to_owned();
    let (mut amount, mut fees, mut net) = ((0i64, 0i64), (0i64, 0i64), (0i64, 0i64));
    let mut zm = String::new();
    for e in &rows {
        let transmitted = crate::wire::beijing(e.at, "[month][day][hour][minute][second]");
        let (txn_type, order_id, orig_order, query_id, txn_amt, fee, settled) = match &e.refund {
            // A refund: money back to the payer (debit), the fee given back (credit).
            Some((refund_id, out_refund_no, amt)) => (
                "04",
                out_refund_no.as_str(),
                e.out_trade_no.as_str(),
                refund_id.as_str(),
                *amt,
                fee_of(*amt),
                -(amt - fee_of(*amt)),
            ),
            None => (
                "01",
                e.out_trade_no.as_str(),
                "",
                e.trade_no.as_str(),
                e.amount,
                -fee_of(e.amount),
                e.amount - fee_of(e.amount),
            ),
        };
        if e.refund.is_some() {
            amount.0 += txn_amt;
            fees.1 += fee;
            net.0 += -settled;
        } else {
            amount.1 += txn_amt;
            fees.0 += -fee;
            net.1 += settled;
        }
        let values: [String; 42] = [
            "S56".into(),
            "88022900".into(),
            "00049993".into(),
            "190624".into(),
            transmitted,
            "622609******0048".into(),
            format!("{txn_amt:012}"),
            "4899".into(),
            "07".into(),
            query_id.chars().take(21).collect(),
            "01".into(),
            order_id.into(),
            "01".into(),
            String::new(),
            String::new(),
            credit_debit(fee),
            credit_debit(settled),
            "0001".into(),
            String::new(),
            txn_type.into(),
            "00".into(),
            "000201".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            UNIONPAY_MER_ID.into(),
            String::new(),
            String::new(),
            String::new(),
            credit_debit(0),
            credit_debit(settled),
            "01080209".into(),
            String::new(),
            credit_debit(0),
            credit_debit(0),
            format!(" {:011}", 0),
            String::new(),
            "7".into(),
            orig_order.into(),
            String::new(),
        ];
        let record: Vec<String> = values
            .iter()
            .zip(ZM_WIDTHS)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        zm.push_str(&record.join(" "));
        zm.push_str("\r\n");
    }
    let count = if corrupted(sim, ChannelName::Unionpay) {
        rows.len() + 1
    } else {
        rows.len()
    };
    let total = |label: &str| {
        format!(
            "{label}{:>19}{}{}{}{}{}{}\r\n",
            count,
            rd_amount(amount.0),
            rd_amount(amount.1),
            rd_amount(fees.0),
            rd_amount(fees.1),
            rd_amount(net.0),
            rd_amount(net.1)
        )
    };
    let rd = format!(
        "{:>73}中国银联全渠道商户交易汇总表\r\n\r\n商户代码:{UNIONPAY_MER_ID}\r\n清算日期:{day}\r\n\r\n交易类型            交易笔数               交易金额                         费用                              资金清算差额\r\n{}\r\n{}",
        "",
        "_".repeat(136),
        total("总计      ")
    );
    let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
    let zip = zip_gbk(&[
        (
            format!("INN{yymmdd}88ZM_{UNIONPAY_MER_ID}").into_bytes(),
            gbk(&zm),
        ),
        (
            format!("RD2010{yymmdd}01_{UNIONPAY_MER_ID}").into_bytes(),
            gbk(&rd),
        ),
    ]);
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&zip).expect("in-memory zlib");
    (
        format!("{UNIONPAY_MER_ID}_{day}.zip"),
        enc.finish().expect("in-memory zlib"),
    )
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
            wechat_bill(&sim, &date).contains(&format!(",`{SUBJECT},`")),
            "{}",
            wechat_bill(&sim, &date)
        );
        let detail = alipay_detail(&alipay_bill_zip(&sim, &date));
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
