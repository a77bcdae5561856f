//! The Alipay trade bill as Alipay serves it: a zip of the detail and summary CSVs, GBK
//! throughout, with GBK entry names and no UTF-8 flag.

use super::{entries, fee_of, zip_gbk};
use crate::Sim;
use crate::wire::{alipay_time, yuan};
use payonce_core::ChannelName;

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
pub fn alipay_bill_zip(sim: &Sim, merchant: usize, date: &str) -> Vec<u8> {
    let rows = entries(sim, ChannelName::Alipay, merchant, date);
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
