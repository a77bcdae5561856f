//! `payonce verify-message`: an operator's check of one channel message against keys and
//! certificates they trust — the same verifiers and answer tables the connectors use
//! (`payonce_channels::inspect`). Exit 0: valid. Exit 1: parsed but not valid (signature,
//! chain, owner, time window). Exit 2: usage error, unreadable file, or not a message of that
//! channel — with a one-line reason on stderr.

use payonce_channels::inspect::{self, Operation, Request};
use payonce_core::ChannelName;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_parser = ["wechatpay", "alipay", "unionpay"])]
    channel: String,
    #[arg(long, value_parser = ["answer", "notification"])]
    kind: String,
    /// The message body, byte for byte as received.
    #[arg(long)]
    file: PathBuf,
    /// A JSON object of the HTTP headers that came with it (WeChat Pay); names case-insensitive.
    #[arg(long)]
    headers: Option<PathBuf>,
    /// A public key or certificate to trust, PEM or DER (repeatable). UnionPay: the self-signed
    /// certificate is the root, the other the intermediate.
    #[arg(long = "trust", required = true)]
    trust: Vec<PathBuf>,
    /// What the answer answers; default: inferred where the body says it.
    #[arg(long, value_parser = ["prepay", "query", "close", "refund", "refund_query"])]
    operation: Option<String>,
    /// Judge certificate validity and timestamp windows as of this time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
    /// The APIv3 key (a file holding it) to decrypt a WeChat notification's resource.
    #[arg(long)]
    apiv3_key: Option<PathBuf>,
    /// UnionPay: also accept the owner `00040000:SIGN` of older TEST certificates.
    #[arg(long)]
    accept_test_owner: bool,
}

fn usage(reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("verify-message: {reason}");
    ExitCode::from(2)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub fn run(args: &VerifyArgs) -> ExitCode {
    let body = match read(&args.file) {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let mut trust = Vec::new();
    for t in &args.trust {
        match read(t) {
            Ok(b) => trust.push(b),
            Err(e) => return usage(e),
        }
    }
    let headers = match &args.headers {
        None => Vec::new(),
        Some(p) => match read(p).and_then(|b| {
            serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| format!("--headers: {e}"))
        }) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            Ok(_) => return usage("--headers must be a JSON object"),
            Err(e) => return usage(e),
        },
    };
    let at_secs = match &args.at {
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        Some(t) => {
            match time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
                Ok(t) => t.unix_timestamp(),
                Err(e) => return usage(format!("--at is not RFC 3339: {e}")),
            }
        }
    };
    let apiv3_key = match &args.apiv3_key {
        None => None,
        Some(p) => match read(p) {
            Ok(k) => Some(String::from_utf8_lossy(&k).trim().as_bytes().to_vec()),
            Err(e) => return usage(e),
        },
    };
    let channel = ChannelName::parse(&args.channel).expect("clap checked the channel");
    let req = Request {
        channel,
        notification: args.kind == "notification",
        body: &body,
        headers,
        trust,
        operation: args.operation.as_deref().and_then(Operation::parse),
        at_secs,
        apiv3_key,
        accept_test_owner: args.accept_test_owner,
    };
    match inspect::inspect(&req) {
        Ok(v) => {
            println!("{}", v.to_json());
            if v.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => usage(e),
    }
}
