//! The webhook client never goes through a proxy, whatever `HTTP_PROXY` / `HTTPS_PROXY` /
//! `ALL_PROXY` say: through a proxy, the proxy resolves and connects, and the SSRF guard (the
//! resolver that refuses internal addresses) never sees where the request goes.
//!
//! A test binary of its own, with one test: proxy variables are process-wide, and set here,
//! before any other thread reads them, they cannot leak into (or race with) any other test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake proxy: counts the connections it gets and answers each request `200 OK`, as a
/// forwarding proxy that delivered it would.
async fn fake_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let contacted = Arc::new(AtomicUsize::new(0));
    let c = contacted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, contacted)
}

#[test]
fn webhook_client_never_uses_a_proxy_from_the_environment() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (proxy, contacted) = fake_proxy().await;
        // An "internal" endpoint the guard must keep webhooks from (it answers like a proxy
        // would, and counts who reached it directly).
        let (internal, reached) = fake_proxy().await;
        let internal_port = internal.rsplit(':').next().unwrap().to_owned();
        // SAFETY: this binary's only test sets them, on its only thread that reads the
        // environment, before any client is built.
        unsafe {
            for k in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
                std::env::set_var(k, &proxy);
            }
            for k in ["NO_PROXY", "no_proxy", "REQUEST_METHOD"] {
                std::env::remove_var(k);
            }
        }

        // The control: a default client does go to the fake proxy, so the variables are in
        // force and a zero below means something.
        let default = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let r = default.post("http://hooks.payonce-test.invalid/x").body("{}").send().await;
        assert!(r.is_ok_and(|r| r.status() == 200), "the fake proxy answered the default client");
        let baseline = contacted.load(Ordering::SeqCst);
        assert!(baseline >= 1, "the proxy variables are in force");

        for allow_private in [false, true] {
            let http = payonce_server::engine::webhooks::webhook_client(Duration::from_secs(5), allow_private);
            for url in [
                format!("http://localhost:{internal_port}/internal-admin"),
                "http://hooks.payonce-test.invalid/x".to_owned(),
                "https://hooks.payonce-test.invalid/x".to_owned(),
            ] {
                let r = http.post(&url).body("{}").send().await;
                assert_eq!(contacted.load(Ordering::SeqCst), baseline, "the webhook client (allow_private={allow_private}) went through the proxy for {url}: {r:?}");
                if url.contains(".invalid") {
                    assert!(r.is_err(), "a name that does not resolve is not delivered: {url}");
                } else if !allow_private {
                    assert!(r.is_err(), "localhost refused by the guard: {url}");
                    assert_eq!(reached.load(Ordering::SeqCst), 0, "nothing reached the internal endpoint");
                } else {
                    // Private webhooks allowed by the operator: straight there, not via the proxy.
                    assert!(r.is_ok_and(|r| r.status() == 200), "{url}");
                    assert_eq!(reached.load(Ordering::SeqCst), 1, "reached directly");
                }
            }
        }
    });
}
