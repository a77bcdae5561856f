//! The Alipay trade bill (`alipay.data.dataservice.bill.downloadurl.query`, `bill_type=trade`):
//! a GBK-encoded CSV of business details between `#` comment lines. (Alipay serves it inside
//! a zip; the simulator serves the CSV itself, and `parse_bytes` accepts either form's CSV.)

use crate::money::{fen_to_yuan, yuan_to_fen};
use crate::{StatementKind, StatementLine};

pub const HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";

pub struct Row<'a> {
    pub trade_no: &'a str,
    pub out_trade_no: &'a str,
    pub subject: &'a str,
    pub created: &'a str,
    pub finished: &'a str,
    /// Fen; a refund's row carries its out_request_no.
    pub amount: i64,
    pub refund_no: Option<&'a str>,
}

/// The bill as GBK bytes.
pub fn render(date: &str, rows: &[Row]) -> Vec<u8> {
    let mut s = format!("#支付宝交易明细查询\n#账号：[20880000000000000156]\n#起始日期：[{date} 00:00:00]   终止日期：[{date} 23:59:59]\n#-----------------------------------------业务明细列表----------------------------------------\n{HEADER}\n");
    let (mut n_pay, mut sum_pay, mut n_ref, mut sum_ref) = (0, 0i64, 0, 0i64);
    for r in rows {
        let subject = r.subject.replace(',', "，");
        let (kind, amount, refund_no) = match r.refund_no {
            Some(no) => {
                n_ref += 1;
                sum_ref += r.amount;
                ("退款", format!("-{}", fen_to_yuan(r.amount)), no)
            }
            None => {
                n_pay += 1;
                sum_pay += r.amount;
                ("交易", fen_to_yuan(r.amount), "")
            }
        };
        s.push_str(&format!(
            "{},{},{kind},{subject},{},{},,,,,abc***@example.com,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00,0.00,{refund_no},0.00,0.00,\n",
            r.trade_no, r.out_trade_no, r.created, r.finished
        ));
    }
    s.push_str(&format!(
        "#-----------------------------------------业务明细列表结束------------------------------------\n#交易合计：{n_pay}笔，商家实收共计：{}元\n#退款合计：{n_ref}笔，商家实收共计：-{}元\n#导出时间：[{date} 23:59:59]\n",
        fen_to_yuan(sum_pay),
        fen_to_yuan(sum_ref)
    ));
    let (bytes, _, _) = encoding_rs::GBK.encode(&s);
    bytes.into_owned()
}

pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<StatementLine>, String> {
    let (text, _, malformed) = encoding_rs::GBK.decode(bytes);
    if malformed {
        return Err("not GBK".into());
    }
    let mut out = Vec::new();
    let mut seen_header = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("支付宝交易号") {
            seen_header = true;
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 22 {
            return Err(format!("short row: {line}"));
        }
        let amount = yuan_to_fen(f[11].trim_start_matches('-')).ok_or_else(|| format!("bad amount {}", f[11]))?;
        let kind = match f[2] {
            "交易" => StatementKind::Payment,
            "退款" => StatementKind::Refund,
            other => return Err(format!("unknown business type {other}")),
        };
        out.push(StatementLine {
            kind,
            out_trade_no: f[1].to_owned(),
            channel_trade_no: Some(f[0].to_owned()),
            out_refund_no: (kind == StatementKind::Refund).then(|| f[21].to_owned()),
            amount,
        });
    }
    if !seen_header {
        return Err("not an Alipay trade bill".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_round_trip() {
        let rows = [
            Row { trade_no: "2026001", out_trade_no: "A", subject: "绿茶", created: "2026-11-23 10:00:00", finished: "2026-11-23 10:00:05", amount: 123, refund_no: None },
            Row { trade_no: "2026001", out_trade_no: "A", subject: "绿茶", created: "2026-11-23 10:00:00", finished: "2026-11-23 11:00:00", amount: 23, refund_no: Some("R1") },
        ];
        let bytes = render("2026-11-23", &rows);
        assert!(std::str::from_utf8(&bytes).is_err(), "GBK, not UTF-8");
        let lines = parse_bytes(&bytes).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1].kind, lines[1].amount, lines[1].out_refund_no.as_deref()), (StatementKind::Refund, 23, Some("R1")));
    }
}
