//! How much of a request body the gateway reads: at most the limit, and past it only enough
//! (bounded in bytes and time) that the client receives the 413 instead of a reset.

use axum::body::Bytes;

/// The body was over the limit (the rest of it, up to a bound, was read and thrown away).
#[derive(Debug)]
pub struct TooLarge;

/// How much of an oversized body is still read (and discarded) before answering 413, so the
/// client receives the answer instead of a connection reset — nginx's "lingering close".
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a body of at most `limit` bytes. Past the limit, keeps reading and discarding up to
/// `DRAIN_BYTES` (or `DRAIN_TIME`) before giving up, so the 413 reaches the client.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, TooLarge> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(TooLarge);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let mut drained = buf.len() + data.len();
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while drained < DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(f)) => drained += f.into_data().map(|d| d.len()).unwrap_or(0),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(TooLarge);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}
