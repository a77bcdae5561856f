//! `payonce accounts check` (every account of a `channels.toml`, checked as the admin API checks
//! an account it is given: keys parse, then one harmless signed call whose answer must verify)
//! and `payonce keys rotate-master` (every sealed secret moved to a new master key, in one
//! transaction).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct CheckArgs {
    #[arg(long, env = "PAYONCE_CHANNELS", default_value = "channels.toml")]
    channels: PathBuf,
    /// Only this channel's accounts.
    #[arg(long)]
    channel: Option<String>,
    /// Only the account of this name.
    #[arg(long)]
    account: Option<String>,
    #[arg(long, env = "PAYONCE_CHANNEL_TIMEOUT_MS", default_value_t = 5000)]
    channel_timeout_ms: u64,
}

/// Exit 0 when every account checked passed, 1 otherwise (each failure says what is wrong).
pub async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let clock: std::sync::Arc<dyn payonce_core::Clock> =
        std::sync::Arc::new(payonce_core::SystemClock);
    // Keys that do not parse fail here, naming the file (never its content).
    let registry = payonce_channels::ChannelsConfig::load(&args.channels)?
        .build(Duration::from_millis(args.channel_timeout_ms), clock)?;
    let mut failed = 0;
    let mut checked = 0;
    for account in registry.all_accounts() {
        if args
            .channel
            .as_deref()
            .is_some_and(|c| c != account.channel().as_str())
            || args.account.as_deref().is_some_and(|a| a != account.name)
        {
            continue;
        }
        checked += 1;
        // A service provider makes no call of its own: its keys are proven by a signed call
        // of one of its sub-merchants (which signs with exactly those keys).
        let through = if account.takes_payments() {
            account
        } else {
            match registry
                .all_accounts()
                .find(|a| a.role.provider() == Some(account.name.as_str()))
            {
                Some(sub) => sub,
                None => {
                    failed += 1;
                    println!(
                        "FAIL  {} {}: a service provider is checked through one of its sub-merchants, and it has none",
                        account.channel(),
                        account.name
                    );
                    continue;
                }
            }
        };
        match payonce_channels::inline::signed_call_check(through).await {
            Ok(m) => println!("ok    {m}"),
            Err(p) => {
                failed += 1;
                println!("FAIL  {p}");
            }
        }
    }
    if checked == 0 {
        anyhow::bail!("no account of {} matches", args.channels.display());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(clap::Args)]
pub struct RotateArgs {
    #[arg(
        long,
        env = "PAYONCE_DATABASE_URL",
        default_value = "sqlite://payonce.db"
    )]
    database_url: String,
    /// The key in use now.
    #[arg(long, env = "PAYONCE_MASTER_KEY_FILE", default_value = "payonce.key")]
    master_key_file: PathBuf,
    /// The new key: a file with 64 hex characters (created with a fresh key if missing).
    #[arg(long)]
    new_master_key_file: PathBuf,
}

/// Re-wraps every channel account's data key and re-encrypts every webhook secret under the new
/// key, in one transaction. Instances then restart with `--master-key-file` the new key and
/// `--previous-master-key-file` the old one until all have.
pub async fn rotate_master(args: RotateArgs) -> anyhow::Result<ExitCode> {
    use payonce_server::crypto::{MasterKey, SealedAccount, rewrap_account};
    let store = payonce_store::open(&args.database_url, true).await?;
    let old = crate::serve::master_key(&args.master_key_file)?;
    let new = MasterKey::load_or_create(&args.new_master_key_file)?;
    if old.id() == new.id() {
        anyhow::bail!("the new master key is the key in use");
    }
    let mut accounts = Vec::new();
    for (r, s) in store.sealed_accounts().await? {
        if s.master_key_id == new.id() {
            continue;
        }
        let sealed = SealedAccount {
            sealed: s.sealed,
            data_key_enc: s.data_key_enc,
            master_key_id: s.master_key_id,
        };
        let moved =
            rewrap_account(&old, &new, r.channel.as_str(), &r.name, &sealed).map_err(|_| {
                anyhow::anyhow!(
                    "{} account {} is not sealed under the key of {}",
                    r.channel,
                    r.name,
                    args.master_key_file.display()
                )
            })?;
        accounts.push((
            r.channel,
            r.name,
            payonce_store::SealedSecrets {
                sealed: moved.sealed,
                data_key_enc: moved.data_key_enc,
                master_key_id: moved.master_key_id,
            },
        ));
    }
    let mut apps = Vec::new();
    for app in store.apps().await? {
        let again = |enc: &str| -> anyhow::Result<String> {
            let plain = old.decrypt(enc, app.id.as_str()).map_err(|_| {
                anyhow::anyhow!(
                    "app {}'s webhook secret does not open with the key in use",
                    app.id
                )
            })?;
            Ok(new.encrypt(&plain, app.id.as_str()))
        };
        let current = again(&app.webhook_secret_enc)?;
        let previous = match &app.webhook_secret_prev_enc {
            Some(p) => Some(again(p)?),
            None => None,
        };
        apps.push((app.id.clone(), current, previous));
    }
    store.rewrap_secrets(&accounts, &apps).await?;
    println!(
        "moved {} channel account(s) and {} app(s) from master key {} to {}",
        accounts.len(),
        apps.len(),
        old.id(),
        new.id()
    );
    Ok(ExitCode::SUCCESS)
}
