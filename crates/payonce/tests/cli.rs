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

    let out = payonce().args(["migrate", "--database-url", &url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = payonce()
        .args(["apps", "create", "--database-url", &url, "--name", "shop", "--webhook-url", "https://shop.example/h", "--json"])
        .arg("--master-key-file")
        .arg(&key_file)
        .env_remove("PAYONCE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = creds["secret"].as_str().unwrap();
    assert!(creds["app_id"].as_str().unwrap().starts_with("app_"));
    assert!(creds["webhook_secret"].as_str().unwrap().starts_with("whsec_"));
    // The master key file was created private, and the database holds no plaintext secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let db_bytes = std::fs::read(dir.path().join("cli.db")).unwrap();
    let wal = std::fs::read(dir.path().join("cli.db-wal")).unwrap_or_default();
    for needle in [secret, creds["webhook_secret"].as_str().unwrap()] {
        let hay = [db_bytes.as_slice(), wal.as_slice()].concat();
        assert!(!hay.windows(needle.len()).any(|w| w == needle.as_bytes()), "a secret is stored in clear");
    }

    let sim_dir = tempfile::tempdir().unwrap();
    let sim = payonce_sim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), sim_dir.path()).await.unwrap();
    let key_hex = std::fs::read_to_string(&key_file).unwrap();
    let mut server = ServeProcess::spawn(Path::new(env!("CARGO_BIN_EXE_payonce")), &url, &sim.channels_file, &key_hex, &["--no-migrate"])
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/orders", server.base_url()))
        .bearer_auth(secret)
        .json(&json!({"merchant_order_no": "CLI-1", "amount": 1, "currency": "CNY", "subject": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the printed secret authenticates");

    // SIGTERM: a clean stop.
    Command::new("kill").args(["-TERM", &server.pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status:?}");
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
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line}");
    let toml = std::fs::read_to_string(dir.path().join("channels.toml")).unwrap();
    assert!(toml.contains("[sandbox]"));
    assert!(payonce_channels::ChannelsConfig::load(&dir.path().join("channels.toml")).is_ok());
    child.kill().unwrap();
    let _ = child.wait();
}
