//! UnionPay's bill file for one clearing day: the zip of the ZM records and the RD summary
//! report, zlib-deflated, as `fileContent` carries it.

use super::{corrupted, entries, fee_of, zip_gbk};
use crate::Sim;
use crate::wire::yuan;
use payonce_core::ChannelName;
use std::io::Write;

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
pub fn unionpay_file(sim: &Sim, merchant: usize, date: &str) -> (String, Vec<u8>) {
    let mer_id = sim.keys.unionpay[merchant].mer_id.clone();
    let rows = entries(sim, ChannelName::Unionpay, merchant, date);
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
            mer_id.clone(),
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
        "{:>73}中国银联全渠道商户交易汇总表\r\n\r\n商户代码:{mer_id}\r\n清算日期:{day}\r\n\r\n交易类型            交易笔数               交易金额                         费用                              资金清算差额\r\n{}\r\n{}",
        "",
        "_".repeat(136),
        total("总计      ")
    );
    let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
    let zip = zip_gbk(&[
        (format!("INN{yymmdd}88ZM_{mer_id}").into_bytes(), gbk(&zm)),
        (format!("RD2010{yymmdd}01_{mer_id}").into_bytes(), gbk(&rd)),
    ]);
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&zip).expect("in-memory zlib");
    (
        format!("{mer_id}_{day}.zip"),
        enc.finish().expect("in-memory zlib"),
    )
}
