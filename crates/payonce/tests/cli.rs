//! The command-line contract of API.md: `migrate`, `apps create --json`, `serve` printing its
//! address first and draining on SIGTERM, `sim` writing its channels file.

use payonce_testkit::process::ServeProcess;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

fn payonce() -> Command {
    Command::new(env!("CARGO_BIN_EXE_payonce"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_create_then_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    let key_file = dir.path().join("master.key");

    let out = payonce()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The database file is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.path().join("cli.db"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    let out = payonce()
        .args([
            "apps",
            "create",
            "--database-url",
            &url,
            "--name",
            "shop",
            "--webhook-url",
            "https://shop.example/h",
            "--json",
        ])
        .arg("--master-key-file")
        .arg(&key_file)
        .env_remove("PAYONCE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = creds["secret"].as_str().unwrap();
    assert!(creds["app_id"].as_str().unwrap().starts_with("app_"));
    assert!(
        creds["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    // The master key file was created private, and the database holds no plaintext secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let db_bytes = std::fs::read(dir.path().join("cli.db")).unwrap();
    let wal = std::fs::read(dir.path().join("cli.db-wal")).unwrap_or_default();
    for needle in [secret, creds["webhook_secret"].as_str().unwrap()] {
        let hay = [db_bytes.as_slice(), wal.as_slice()].concat();
        assert!(
            !hay.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "a secret is stored in clear"
        );
    }

    let sim_dir = tempfile::tempdir().unwrap();
    let sim = payonce_sim::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        sim_dir.path(),
    )
    .await
    .unwrap();
    let key_hex = std::fs::read_to_string(&key_file).unwrap();
    // An OTLP/HTTP collector of our own: what payonce exports lands here.
    // (content type, body) of each export request.
    type Exports = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;
    let exported: Exports = Default::default();
    let e = exported.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let e = e.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    e.lock().unwrap().push((ct, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, collector).await.unwrap() });
    let mut server = ServeProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_payonce")),
        &url,
        &sim.channels_file,
        &key_hex,
        &["--no-migrate", "--otlp-endpoint", &collector_url],
    )
    .await
    .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/orders", server.base_url()))
        .bearer_auth(secret)
        .json(
            &json!({"merchant_order_no": "CLI-1", "amount": 1, "currency": "CNY", "subject": "s"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the printed secret authenticates");

    // SIGTERM: a clean stop.
    Command::new("kill")
        .args(["-TERM", &server.pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status:?}");
    // Before it exited, its spans went to the collector as OTLP protobuf: the service's name
    // and the request's span are in them.
    let exported = exported.lock().unwrap().clone();
    assert!(!exported.is_empty(), "spans exported to the collector");
    assert!(
        exported
            .iter()
            .all(|(ct, _)| ct == "application/x-protobuf"),
        "{:?}",
        exported.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let all: Vec<u8> = exported.into_iter().flat_map(|(_, b)| b).collect();
    for needle in [&b"payonce"[..], b"HTTP POST"] {
        assert!(
            all.windows(needle.len()).any(|w| w == needle),
            "{} in the exported spans",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn sim_writes_channels_file_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = payonce()
        .args(["sim", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line}");
    let toml = std::fs::read_to_string(dir.path().join("channels.toml")).unwrap();
    assert!(toml.contains("[sandbox]"));
    assert!(payonce_channels::ChannelsConfig::load(&dir.path().join("channels.toml")).is_ok());
    child.kill().unwrap();
    let _ = child.wait();
}

/// `payonce verify-message` on the channels' own messages (the vectors beside the connectors).
mod verify_message {
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    fn vectors() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../payonce-channels/tests/vectors")
    }

    /// Runs it; returns (exit code, stdout JSON or Null, stderr).
    fn run(args: &[&str]) -> (i32, Value, String) {
        let out = super::payonce()
            .arg("verify-message")
            .args(args)
            .output()
            .unwrap();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn up(file: &str, extra: &[&str]) -> (i32, Value, String) {
        let v = vectors().join("unionpay");
        let (f, root, middle) = (
            v.join("yansongda_pay").join(file),
            v.join("certs/acp_test_root.cer"),
            v.join("certs/acp_test_middle.cer"),
        );
        let mut args = vec![
            "--channel",
            "unionpay",
            "--kind",
            "answer",
            "--file",
            f.to_str().unwrap(),
        ];
        args.extend([
            "--trust",
            root.to_str().unwrap(),
            "--trust",
            middle.to_str().unwrap(),
        ]);
        args.extend(extra);
        run(&args)
    }

    #[test]
    fn unionpay_answers_as_of_their_time() {
        let (code, v, _) = up(
            "sync_query_20240105145046.txt",
            &["--at", "2024-01-05T12:00:00Z"],
        );
        assert_eq!(code, 0, "{v}");
        assert_eq!(
            (v["valid"].as_bool(), v["outcome"].as_str()),
            (Some(true), Some("paid"))
        );
        assert_eq!(v["fields"]["respMsg"], "成功[0000000]");
        assert_eq!(v["fields"]["orderId"], "pay20240105145046");
        let (code, v, _) = up(
            "sync_refund_20240105165842.txt",
            &["--at", "2024-01-05T12:00:00Z"],
        );
        assert_eq!((code, v["outcome"].as_str()), (0, Some("refund_pending")));
        // Today the leaf certificate has expired: parsed, but not valid.
        let (code, v, _) = up("sync_query_20240105145046.txt", &[]);
        assert_eq!(
            (code, v["valid"].as_bool(), v["outcome"].as_str()),
            (1, Some(false), None)
        );
        assert!(v["reason"].as_str().is_some());
        // Said to answer a refund query instead: read as one.
        let (_, v, _) = up(
            "sync_query_20240105145046.txt",
            &[
                "--at",
                "2024-01-05T12:00:00Z",
                "--operation",
                "refund_query",
            ],
        );
        assert_eq!(v["outcome"], "refunded");
    }

    /// A queryTrans answer that found nothing (respCode 34) echoes the query's own txnType 00:
    /// it is read as a query's answer. No real vector of one exists (all four found their
    /// transaction), so it is signed here with the UnionPay signing key a simulator state dir
    /// holds, and trusted through that dir's root and intermediate.
    #[test]
    fn a_unionpay_query_that_found_nothing_is_a_query() {
        use payonce_channels::crypto::RsaSigner;
        use payonce_channels::unionpay::protocol;
        let dir = tempfile::tempdir().unwrap();
        let mut sim = super::payonce()
            .args(["sim", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sim.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        sim.kill().unwrap();
        let _ = sim.wait();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        let signer = RsaSigner::from_pem(&read("unionpay_sign_key.pem")).unwrap();
        let mut fields: Vec<(String, String)> = [
            ("version", "5.1.0"),
            ("encoding", "UTF-8"),
            ("signMethod", "01"),
            ("txnType", "00"),
            ("txnSubType", "00"),
            ("bizType", "000000"),
            ("accessType", "0"),
            ("merId", "777290058110048"),
            ("orderId", "pay20240105145046"),
            ("txnTime", "20240105145046"),
            ("respCode", "34"),
            ("respMsg", "查无此交易"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        fields.push((
            "signPubKeyCert".into(),
            read("unionpay_sign_cert.pem").replace('\n', "\r\n"),
        ));
        let signature = protocol::sign(&signer, &fields);
        fields.push(("signature".into(), signature));
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        std::fs::write(dir.path().join("a.txt"), body).unwrap();
        let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
        let (a, root, middle) = (p("a.txt"), p("unionpay_root.pem"), p("unionpay_middle.pem"));
        let args = [
            "--channel",
            "unionpay",
            "--kind",
            "answer",
            "--file",
            a.as_str(),
            "--trust",
            root.as_str(),
            "--trust",
            middle.as_str(),
        ];
        let (code, v, err) = run(&args);
        assert_eq!((code, v["valid"].as_bool()), (0, Some(true)), "{v} {err}");
        assert_eq!(
            v["outcome"].as_str(),
            Some("absent"),
            "a query that found nothing: {v}"
        );
        // Said to answer a refund query, the same answer is a refund not found yet.
        let (_, v, _) = run(&[&args[..], &["--operation", "refund_query"]].concat());
        assert_eq!(v["outcome"].as_str(), Some("unknown"));
    }

    #[test]
    fn tampered_truncated_and_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let body =
            std::fs::read(vectors().join("unionpay/yansongda_pay/sync_query_20240105145046.txt"))
                .unwrap();
        let tampered = String::from_utf8(body.clone())
            .unwrap()
            .replacen("txnAmt=1", "txnAmt=9", 1);
        std::fs::write(dir.path().join("t.txt"), tampered).unwrap();
        std::fs::write(dir.path().join("cut.txt"), &body[..200]).unwrap();
        let v = vectors().join("unionpay/certs");
        let trust = [
            "--trust",
            v.join("acp_test_root.cer")
                .to_str()
                .unwrap()
                .to_owned()
                .leak(),
            "--trust",
            v.join("acp_test_middle.cer")
                .to_str()
                .unwrap()
                .to_owned()
                .leak(),
        ];
        let args = |f: &str| {
            let mut a = vec![
                "--channel",
                "unionpay",
                "--kind",
                "answer",
                "--at",
                "2024-01-05T12:00:00Z",
                "--file",
            ];
            a.push(dir.path().join(f).to_str().unwrap().to_owned().leak());
            a.extend(trust);
            a
        };
        let (code, v, _) = run(&args("t.txt"));
        assert_eq!((code, v["valid"].as_bool()), (1, Some(false)), "tampered");
        let (code, v, err) = run(&args("cut.txt"));
        assert_eq!((code, v), (2, Value::Null), "truncated: not a message");
        assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
        let (code, _, _) = run(&args("missing.txt"));
        assert_eq!(code, 2, "unreadable file");
        let (code, _, _) = run(&["--channel", "unionpay", "--kind", "answer"]);
        assert_eq!(code, 2, "usage");
    }

    #[test]
    fn alipay_answers_and_notifications() {
        let a = vectors().join("alipay-answers");
        let cert = a.join("alipay_public_cert_sandbox_2088721003899159.crt");
        let f = a.join("sync_alipay_trade_refund_response.reconstructed.json");
        let (code, v, _) = run(&[
            "--channel",
            "alipay",
            "--kind",
            "answer",
            "--file",
            f.to_str().unwrap(),
            "--trust",
            cert.to_str().unwrap(),
        ]);
        assert_eq!(
            (
                code,
                v["outcome"].as_str(),
                v["fields"]["fund_change"].as_str()
            ),
            (0, Some("refunded"), Some("Y"))
        );
        let f = a.join("sync_alipay_trade_query_response.reconstructed.json");
        let (code, v, _) = run(&[
            "--channel",
            "alipay",
            "--kind",
            "answer",
            "--file",
            f.to_str().unwrap(),
            "--trust",
            cert.to_str().unwrap(),
        ]);
        assert_eq!(code, 0);
        assert!(
            ["paid", "not_paid", "closed"].contains(&v["outcome"].as_str().unwrap()),
            "{v}"
        );
        // Alipay's real notification vectors, as the form bodies Alipay posts.
        let n = vectors().join("alipay");
        let vectors: Value =
            serde_json::from_slice(&std::fs::read(n.join("notify_vectors.json")).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (i, vec) in vectors.as_array().unwrap().iter().enumerate() {
            let params: Vec<(String, String)> = vec["params"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            let file = dir.path().join(format!("n{i}.form"));
            std::fs::write(&file, body).unwrap();
            let key = n.join(vec["public_key_file"].as_str().unwrap());
            let (code, v, _) = run(&[
                "--channel",
                "alipay",
                "--kind",
                "notification",
                "--file",
                file.to_str().unwrap(),
                "--trust",
                key.to_str().unwrap(),
            ]);
            let expected = vec["expect_valid"].as_bool().unwrap();
            assert_eq!(
                (code == 0, v["valid"].as_bool()),
                (expected, Some(expected)),
                "{}",
                vec["name"]
            );
        }
    }

    #[test]
    fn wechat_answer_with_its_headers_and_window() {
        let w = vectors().join("wechatpay/response_native_20201228_gopay");
        let (body, headers, cert) = (
            w.join("body.json"),
            w.join("headers.json"),
            w.join("platform_cert_60A862B1.pem"),
        );
        let base = [
            "--channel",
            "wechatpay",
            "--kind",
            "answer",
            "--file",
            body.to_str().unwrap(),
            "--headers",
            headers.to_str().unwrap(),
            "--trust",
            cert.to_str().unwrap(),
        ];
        let (code, v, _) = run(&[&base[..], &["--at", "2020-12-28T10:03:40Z"]].concat());
        assert_eq!(
            (
                code,
                v["outcome"].as_str(),
                v["fields"]["code_url"].as_str()
            ),
            (
                0,
                Some("not_paid"),
                Some("weixin://wxpay/bizpayurl?pr=5zPMHa4zz")
            )
        );
        // Outside WeChat's ±5 minute window: not valid.
        let (code, v, _) = run(&[&base[..], &["--at", "2020-12-28T11:00:00Z"]].concat());
        assert_eq!((code, v["valid"].as_bool()), (1, Some(false)));
        // Without its headers it cannot be judged.
        let (code, _, _) = run(&base[..6]);
        assert_eq!(code, 2);
    }

    #[test]
    fn wechat_notification_decrypted_with_the_apiv3_key() {
        use payonce_channels::crypto::RsaSigner;
        use payonce_channels::wechatpay::protocol::{encrypt_resource, response_message};
        let dir = tempfile::tempdir().unwrap();
        let platform = RsaSigner::generate();
        std::fs::write(dir.path().join("pub.pem"), platform.public_key_pem()).unwrap();
        let key = "0123456789abcdef0123456789abcdef";
        std::fs::write(dir.path().join("apiv3.key"), key).unwrap();
        let t = serde_json::json!({"appid": "wx1", "mchid": "1900000001", "out_trade_no": "A1", "transaction_id": "42", "trade_state": "SUCCESS",
            "trade_state_desc": "", "success_time": "2026-11-25T10:00:00+08:00", "amount": {"total": 100}});
        let (nonce, ct) = encrypt_resource(key.as_bytes(), "transaction", t.to_string().as_bytes());
        let body = serde_json::json!({"id": "EV-1", "create_time": "2026-11-25T10:00:00+08:00", "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功", "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ct, "associated_data": "transaction", "nonce": nonce}})
        .to_string();
        let ts = "1764036000"; // 2025-11-25T02:00:00Z
        let sig = platform.sign_b64(&response_message(ts, "N1", body.as_bytes()));
        std::fs::write(dir.path().join("n.json"), &body).unwrap();
        std::fs::write(dir.path().join("h.json"), serde_json::json!({"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": "N1", "Wechatpay-Signature": sig, "Wechatpay-Serial": "PUB_KEY_ID_X"}).to_string()).unwrap();
        let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
        let base = vec![
            "--channel".to_owned(),
            "wechatpay".into(),
            "--kind".into(),
            "notification".into(),
            "--file".into(),
            p("n.json"),
            "--headers".into(),
            p("h.json"),
            "--trust".into(),
            p("pub.pem"),
            "--at".into(),
            "2025-11-25T02:01:00Z".into(),
        ];
        let args = |extra: &[String]| -> Vec<String> { [base.clone(), extra.to_vec()].concat() };
        fn to_str(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let a = args(&[]);
        let (code, v, _) = run(&to_str(&a));
        assert_eq!(
            (code, v["valid"].as_bool(), v["outcome"].clone()),
            (0, Some(true), Value::Null),
            "signature only, without the APIv3 key"
        );
        let a = args(&["--apiv3-key".into(), p("apiv3.key")]);
        let (code, v, _) = run(&to_str(&a));
        assert_eq!(
            (
                code,
                v["outcome"].as_str(),
                v["fields"]["resource"]["out_trade_no"].as_str()
            ),
            (0, Some("paid"), Some("A1"))
        );
    }
}

/// `payonce reconcile` beside a running server: `--dry-run` classifies and writes nothing;
/// a run that only repaired exits 0; a re-run reads the kept bill; `--refetch` downloads it
/// again, and a difference for a person exits 3;
/// `--json` prints the counts by class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exits_by_what_it_found() {
    // The reconciling process reads the real clock (the simulator's signatures must be fresh for
    // it), so this test cannot move time: it waits out the last seconds of a Beijing day instead,
    // so that the payment and the date it reconciles are on the same day.
    let now = payonce_core::Clock::now(&payonce_core::SystemClock);
    let (_, midnight) = payonce_server::engine::reconcile::beijing_day(
        &payonce_server::engine::reconcile::beijing_date(now),
    )
    .unwrap();
    if midnight.0 - now.0 < 20_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (midnight.0 - now.0 + 100) as u64,
        ))
        .await;
    }
    let today = payonce_server::engine::reconcile::beijing_date(payonce_core::Clock::now(
        &payonce_core::SystemClock,
    ));
    let Some(app) = payonce_testkit::spawn_app(payonce_testkit::Backend::Sqlite).await else {
        return;
    };
    app.faults(json!({"notify_drop_rate": 1.0, "query_error_rate": 1.0}))
        .await;
    let order = app.create_order("CLI-REC-1", 900).await;
    let id = order["id"].as_str().unwrap();
    let p: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    app.sim_pay("sandbox", p["out_trade_no"].as_str().unwrap(), false)
        .await;
    let run = |extra: &[&str]| {
        let out = payonce()
            .args([
                "reconcile",
                "--database-url",
                &app.db.url,
                "--channel",
                "sandbox",
                "--date",
                &today,
                "--json",
            ])
            .arg("--channels")
            .arg(&app.sim.channels_file)
            .args(extra)
            // Any key: a reconciliation decrypts nothing.
            .env("PAYONCE_MASTER_KEY", "00".repeat(32))
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let before = app.counts().await;
    let (code, dry) = run(&["--dry-run"]);
    assert_eq!(
        (
            code,
            dry["status"].as_str(),
            dry["classes"]["repaired_paid"].as_u64()
        ),
        (Some(0), Some("dry_run"), Some(1)),
        "{dry}"
    );
    assert_eq!(app.counts().await, before, "a dry run writes nothing");
    assert_eq!(app.order(id).await["status"], "paying");
    let (code, done) = run(&[]);
    assert_eq!(
        (code, done["classes"]["repaired_paid"].as_u64()),
        (Some(0), Some(1)),
        "{done}"
    );
    assert_eq!(app.order(id).await["status"], "paid");
    app.http.post(app.sim_url("/sim/bill")).json(&json!({"kind": "foreign_charge", "channel": "sandbox", "out_trade_no": "NOT-OURS", "amount": 5})).send().await.unwrap();
    // A re-run reads the kept bill (no new row); --refetch downloads the corrected one.
    let (code, same) = run(&[]);
    assert_eq!(
        (
            code,
            same["classes"]["unknown_trade"].as_u64(),
            same["bill_source"].as_str()
        ),
        (Some(0), Some(0), Some("stored")),
        "{same}"
    );
    let (code, found) = run(&["--refetch"]);
    assert_eq!(
        (
            code,
            found["classes"]["unknown_trade"].as_u64(),
            found["bill_source"].as_str()
        ),
        (Some(3), Some(1), Some("downloaded")),
        "{found}"
    );
}

/// `payonce sim --merchants 2` writes two accounts per channel; `payonce accounts check` proves
/// each with a signed call, and names the one whose key is not its merchant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_check_proves_each_account_and_names_the_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let sim = payonce_sim::start_with(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        dir.path(),
        payonce_sim::SimOptions {
            merchants: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let toml = std::fs::read_to_string(&sim.channels_file).unwrap();
    assert!(toml.contains("[[wechatpay]]\nname = \"m1\"\ndefault = true\n"));
    assert!(toml.contains("[[unionpay]]\nname = \"m2\"\n"));
    let check = |file: &Path, extra: &[&str]| {
        let file = file.to_owned();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payonce"))
                .args(["accounts", "check", "--channels"])
                .arg(&file)
                .args(&extra)
                .output()
                .await
                .unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (code, out) = check(&sim.channels_file, &[]).await;
    assert_eq!(code, 0, "{out}");
    for who in [
        "wechatpay m1",
        "wechatpay m2",
        "alipay m2",
        "unionpay m2",
        "sandbox default",
    ] {
        assert!(out.contains(&format!("ok    {who} ")), "{who}: {out}");
    }
    // m2's WeChat key swapped for another: WeChat refuses its signature.
    std::fs::write(
        dir.path().join("stranger.pem"),
        payonce_channels::crypto::RsaSigner::generate().to_pkcs8_pem(),
    )
    .unwrap();
    let broken = toml.replacen(
        "merchant_key_file = \"wechatpay_m2_merchant_key.pem\"",
        "merchant_key_file = \"stranger.pem\"",
        1,
    );
    let broken_file = dir.path().join("broken.toml");
    std::fs::write(&broken_file, broken).unwrap();
    let (code, out) = check(&broken_file, &["--channel", "wechatpay"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok    wechatpay m1 "), "{out}");
    assert!(
        out.contains("FAIL  wechatpay m2 (1900000002): WeChat refused the request (SIGN_ERROR"),
        "{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "no key material: {out}");
}

/// `payonce keys rotate-master` moves every sealed secret — channel accounts' data keys and
/// webhook secrets — to a new master key in one go; the old key opens nothing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_master_moves_every_sealed_secret() {
    use payonce_server::crypto::{MasterKey, SealedAccount, open_account};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("rot.db").display());
    let (old_file, new_file) = (dir.path().join("old.key"), dir.path().join("new.key"));
    let out = payonce()
        .args([
            "apps",
            "create",
            "--database-url",
            &url,
            "--name",
            "shop",
            "--json",
        ])
        .arg("--master-key-file")
        .arg(&old_file)
        .env_remove("PAYONCE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let old = MasterKey::from_hex(&std::fs::read_to_string(&old_file).unwrap()).unwrap();
    // An account added at runtime, sealed under the old key.
    let sim_dir = tempfile::tempdir().unwrap();
    let sim = payonce_sim::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        sim_dir.path(),
    )
    .await
    .unwrap();
    let store = payonce_store::open(&url, true).await.unwrap();
    let clock: std::sync::Arc<dyn payonce_core::Clock> =
        std::sync::Arc::new(payonce_core::SystemClock);
    let state = payonce_server::AppState::new(
        store.clone(),
        clock,
        Default::default(),
        payonce_server::ServerConfig {
            workers: false,
            ..Default::default()
        },
        MasterKey::from_hex(&std::fs::read_to_string(&old_file).unwrap()).unwrap(),
    );
    let inline = payonce_channels::inline::InlineAccount::Sandbox {
        gateway: sim.base_url(),
        key_hex: std::fs::read_to_string(sim_dir.path().join("sandbox.key")).unwrap(),
    };
    let saved = payonce_server::engine::accounts::save(&state, "live", false, &inline)
        .await
        .unwrap();
    assert!(
        matches!(
            saved,
            payonce_server::engine::accounts::SaveOutcome::Enabled(_)
        ),
        "{saved:?}"
    );
    let out = payonce()
        .args(["keys", "rotate-master", "--database-url", &url])
        .arg("--master-key-file")
        .arg(&old_file)
        .arg("--new-master-key-file")
        .arg(&new_file)
        .env_remove("PAYONCE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moved 1 channel account(s) and 1 app(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let new = MasterKey::from_hex(&std::fs::read_to_string(&new_file).unwrap()).unwrap();
    let (record, s) = store.sealed_accounts().await.unwrap().remove(0);
    let sealed = SealedAccount {
        sealed: s.sealed,
        data_key_enc: s.data_key_enc,
        master_key_id: s.master_key_id,
    };
    assert_eq!(sealed.master_key_id, new.id());
    let opened = open_account(&[&new], "sandbox", &record.name, &sealed).unwrap();
    assert!(opened.contains("\"key_hex\""));
    assert!(open_account(&[&old], "sandbox", &record.name, &sealed).is_err());
    let app_id = payonce_core::AppId::parse(created["app_id"].as_str().unwrap()).unwrap();
    let app = store.app(&app_id).await.unwrap().unwrap();
    assert_eq!(
        new.decrypt(&app.webhook_secret_enc, app_id.as_str())
            .unwrap(),
        created["webhook_secret"].as_str().unwrap()
    );
    assert!(
        old.decrypt(&app.webhook_secret_enc, app_id.as_str())
            .is_err()
    );
}
