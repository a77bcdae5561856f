//! Channel statements: WeChat's trade bill text, Alipay's bill zip and its GBK CSVs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = payonce_channels::wechatpay::bill::parse(&String::from_utf8_lossy(data));
    let _ = payonce_channels::alipay::bill::parse_zip(data);
    let _ = payonce_channels::alipay::bill::parse_detail(data);
    let _ = payonce_channels::alipay::bill::parse_summary_total(data);
});
