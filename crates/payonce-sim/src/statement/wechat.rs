//! The WeChat trade bill (`bill_type=ALL`) as WeChat serves it: a backtick CSV with a BOM, CRLF
//! line ends and a totals block.

use super::{entries, fee_of};
use crate::Sim;
use crate::wire::{alipay_time, yuan};
use payonce_core::ChannelName;

const WECHAT_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const WECHAT_TOTALS: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// The WeChat trade bill (`bill_type=ALL`), with a BOM and CRLF line ends.
pub fn wechat_bill(sim: &Sim, merchant: usize, date: &str) -> String {
    let m = &sim.keys.wechat[merchant];
    // A sub-merchant's bill names its provider's appid and number, and itself as 特约商户号.
    let (appid, mchid, sub_mchid) = match m.role {
        crate::keys::MerchantRole::SubMerchant { provider } => {
            let sp = &sim.keys.wechat[provider];
            (sp.appid.as_str(), sp.mchid.as_str(), m.mchid.as_str())
        }
        _ => (m.appid.as_str(), m.mchid.as_str(), "0"),
    };
    let mut out = format!("\u{feff}{WECHAT_HEADER}\r\n");
    let (mut paid, mut refunded, mut fees) = (0i64, 0i64, 0i64);
    let rows = entries(sim, ChannelName::Wechatpay, merchant, date);
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
            appid,
            mchid,
            sub_mchid,
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
