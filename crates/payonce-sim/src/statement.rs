//! Daily statements in each channel's bill format, built from the ledger. A day is a calendar
//! day in Beijing time, as the channels book it.

use crate::Sim;
use payonce_channels::alipay::bill as ali;
use payonce_channels::wechatpay::bill as wx;
use payonce_core::ChannelName;

fn beijing_date(ms: i64) -> String {
    payonce_channels::alipay::protocol::beijing_time(ms)[..10].to_owned()
}

/// (time, out_trade_no, trade_no, amount, refund: Option<(refund_id, out_refund_no, amount)>, subject)
type Entry = (i64, String, String, i64, Option<(String, String, i64)>, String);

fn entries(sim: &Sim, channel: ChannelName, date: &str) -> Vec<Entry> {
    let ledger = sim.ledger.lock().unwrap();
    let subject = |no: &str| ledger.orders.get(&(channel, no.to_owned())).map(|o| o.subject.clone()).unwrap_or_default();
    let trade_no = |no: &str| ledger.orders.get(&(channel, no.to_owned())).and_then(|o| o.trade_no.clone()).unwrap_or_default();
    let mut out: Vec<Entry> = ledger
        .charges
        .iter()
        .filter(|c| c.channel == channel && beijing_date(c.at) == date)
        .map(|c| (c.at, c.out_trade_no.clone(), c.trade_no.clone(), c.amount, None, subject(&c.out_trade_no)))
        .collect();
    out.extend(ledger.refunds.iter().filter(|r| r.channel == channel && beijing_date(r.at) == date).map(|r| {
        let order_amount = ledger.orders.get(&(channel, r.out_trade_no.clone())).map(|o| o.amount).unwrap_or(r.amount);
        (r.at, r.out_trade_no.clone(), trade_no(&r.out_trade_no), order_amount, Some((r.refund_id.clone(), r.out_refund_no.clone(), r.amount)), subject(&r.out_trade_no))
    }));
    out.sort_by_key(|e| e.0);
    out
}

pub fn wechat_bill(sim: &Sim, date: &str) -> String {
    let e = entries(sim, ChannelName::Wechatpay, date);
    let times: Vec<String> = e.iter().map(|x| payonce_channels::alipay::protocol::beijing_time(x.0)).collect();
    let rows: Vec<wx::Row> = e
        .iter()
        .zip(&times)
        .map(|(x, t)| wx::Row {
            time: t,
            appid: crate::keys::WECHAT_APPID,
            mchid: crate::keys::WECHAT_MCHID,
            transaction_id: &x.2,
            out_trade_no: &x.1,
            refund: x.4.as_ref().map(|(id, no, amt)| (id.as_str(), no.as_str(), *amt)),
            amount: x.3,
            subject: &x.5,
        })
        .collect();
    wx::render(&rows)
}

pub fn alipay_bill(sim: &Sim, date: &str) -> Vec<u8> {
    let e = entries(sim, ChannelName::Alipay, date);
    let times: Vec<String> = e.iter().map(|x| payonce_channels::alipay::protocol::beijing_time(x.0)).collect();
    let rows: Vec<ali::Row> = e
        .iter()
        .zip(&times)
        .map(|(x, t)| ali::Row {
            trade_no: &x.2,
            out_trade_no: &x.1,
            subject: &x.5,
            created: t,
            finished: t,
            amount: x.4.as_ref().map(|r| r.2).unwrap_or(x.3),
            refund_no: x.4.as_ref().map(|r| r.1.as_str()),
        })
        .collect();
    ali::render(date, &rows)
}

pub fn sandbox_bill(sim: &Sim, date: &str) -> serde_json::Value {
    entries(sim, ChannelName::Sandbox, date)
        .iter()
        .map(|x| match &x.4 {
            Some((_, no, amt)) => serde_json::json!({"kind": "refund", "out_trade_no": x.1, "trade_no": x.2, "out_refund_no": no, "amount": amt}),
            None => serde_json::json!({"kind": "payment", "out_trade_no": x.1, "trade_no": x.2, "amount": x.3}),
        })
        .collect()
}
