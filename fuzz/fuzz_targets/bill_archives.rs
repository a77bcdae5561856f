//! Bills as stored: gzip (WeChat, sandbox), zip (Alipay), zlib-deflated zip (UnionPay), read
//! through `bill::entries`; and UnionPay's fixed-width ZM records and RD summary report.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::bill::{BillFormat, entries};

fuzz_target!(|data: &[u8]| {
    for format in [BillFormat::WechatGzip, BillFormat::AlipayZip, BillFormat::UnionpayZlibZip, BillFormat::SandboxGzip] {
        if let Ok(rows) = entries(format, data) {
            for row in rows.take(100_000) {
                let _ = row;
            }
        }
    }
    let _ = payonce_channels::unionpay::bill::parse_zip(data);
    let _ = payonce_channels::unionpay::bill::parse_zm(data, Some((2026, 1)));
    let _ = payonce_channels::unionpay::bill::parse_rd_total(data);
});
