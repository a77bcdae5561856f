//! The simulated WeChat trade bill: `GET /v3/bill/tradebill` (where, and the SHA-1) and the
//! download itself.

use super::{acting_for, authentic, error, signed};
use crate::Sim;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use payonce_core::ChannelName;
use serde_json::json;
use std::sync::Arc;

/// `GET /v3/bill/tradebill`: where to download the day's bill, and its SHA-1.
pub(super) async fn tradebill(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(signer) = authentic(&sim, &method, &uri, &headers, b"") else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let field = |k: &str| {
        uri.query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix(k))
            .map(str::to_owned)
    };
    let query = |k: &str| field(k).unwrap_or_default();
    // A provider's bill is one sub-merchant's (`sub_mchid`); a merchant's, its own.
    let merchant = match acting_for(&sim, signer, field("sub_mchid=").as_deref()) {
        Ok(m) => m,
        Err(refused) => return *refused,
    };
    let date = query("bill_date=");
    if !crate::statement::has_bill(&sim, ChannelName::Wechatpay, merchant, &date) {
        return error(
            &sim,
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "账单文件不存在",
        );
    }
    let bill = crate::statement::wechat_bill(&sim, merchant, &date);
    // The hash of the ORIGINAL bill, also when it is downloaded gzip-compressed.
    let sha1 = hex::encode(
        aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            bill.as_bytes(),
        )
        .as_ref(),
    );
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let tar = if query("tar_type=") == "GZIP" {
        "&tar_type=GZIP"
    } else {
        ""
    };
    // The download token names the day and the merchant the bill is of.
    let body = json!({"hash_type": "SHA1", "hash_value": sha1, "download_url": format!("http://{host}/v3/billdownload/file?token={date}.{merchant}{tar}")});
    signed(&sim, StatusCode::OK, body.to_string().into_bytes())
}

/// The bill itself: a signed request, an unsigned answer (its hash was in the signed one).
pub(super) async fn bill_download(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(signer) = authentic(&sim, &method, &uri, &headers, b"") else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let query = uri.query().unwrap_or_default();
    let token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_default();
    // `DATE.MERCHANT`: the bill of the merchant the signer asked for — itself, or one of its
    // sub-merchants; any other is refused.
    let (date, merchant) = token.split_once('.').unwrap_or((token, ""));
    let merchant = merchant.parse::<usize>().unwrap_or(signer);
    let own = merchant == signer
        || sim.keys.wechat.get(merchant).is_some_and(|m| {
            m.role == (crate::keys::MerchantRole::SubMerchant { provider: signer })
        });
    if !own {
        return error(&sim, StatusCode::FORBIDDEN, "NO_AUTH", "无权下载该账单");
    }
    let mut bill = crate::statement::wechat_bill(&sim, merchant, date);
    if crate::statement::corrupted(&sim, ChannelName::Wechatpay) {
        // One payment's amount changed on the way: the file no longer has the hash announced.
        bill = bill.replacen(".00", ".01", 1);
    }
    if query.split('&').any(|kv| kv == "tar_type=GZIP") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bill.as_bytes()).expect("in-memory gzip");
        return (
            [("content-type", "application/octet-stream")],
            gz.finish().expect("in-memory gzip"),
        )
            .into_response();
    }
    ([("content-type", "text/plain; charset=utf-8")], bill).into_response()
}
