//! The channel simulator: plays the channels' side of their real protocols, keeps the ledger
//! of every channel order, charge and refund (the ground truth invariant checks compare
//! payonce against), sends notifications on a retry schedule, and injects faults on demand.

mod alipay;
mod control;
mod keys;
mod ledger;
mod notify;
mod ops;
mod rng;
mod sandbox;
mod statement;
mod unionpay;
mod wechatpay;
pub mod wire;

use axum::Router;
use payonce_core::ChannelName;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

pub use ledger::{Faults, Ledger, SimOrder, SimStatus};

/// Shared state of one simulator.
pub struct Sim {
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) rng: Mutex<rng::Streams>,
    /// Bad days on the bills (`POST /sim/bill`).
    pub(crate) bill_adjustments: Mutex<Vec<statement::BillAdjustment>>,
    pub(crate) keys: keys::SimKeys,
    /// Sends notifications to payonce.
    pub(crate) http: reqwest::Client,
    /// The channels' clock: timestamps in requests are checked against it, expiries measured by
    /// it. Tests hand in the same clock payonce uses.
    pub(crate) clock: Arc<dyn payonce_core::Clock>,
    /// The seed every random choice derives from (printed, so a run can be replayed).
    pub seed: u64,
    /// Notifications whose delivery (retries, delays, duplicates) has not finished: a test can
    /// wait for the channels to fall silent instead of sleeping.
    pub(crate) notifications_outstanding: std::sync::atomic::AtomicUsize,
}

/// How a simulator runs: its clock and the seed of its random choices.
#[derive(Clone)]
pub struct SimOptions {
    pub clock: Arc<dyn payonce_core::Clock>,
    /// `None`: a fresh seed from the system's randomness (still printed and kept in `Sim::seed`).
    pub seed: Option<u64>,
    /// Merchants played per channel (`payonce sim --merchants N`): 1 writes today's
    /// `channels.toml`; more write accounts `m1` … `mN` per channel.
    pub merchants: usize,
    /// How many of them `channels.toml` lists (`None`: all). The others exist at the channel
    /// only: a test adds them to payonce through the admin API.
    pub listed_merchants: Option<usize>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            clock: Arc::new(payonce_core::SystemClock),
            seed: None,
            merchants: 1,
            listed_merchants: None,
        }
    }
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    /// The `channels.toml` a payonce server reads to talk to this simulator.
    pub channels_file: PathBuf,
    pub sim: Arc<Sim>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    /// Loads the keys in `state_dir`, generating any that are missing, and writes
    /// `channels.toml` naming `gateway` and the key files.
    pub fn prepare(
        state_dir: &Path,
        gateway: &str,
        options: SimOptions,
    ) -> std::io::Result<(Arc<Sim>, PathBuf)> {
        std::fs::create_dir_all(state_dir)?;
        let keys = keys::SimKeys::load_or_generate_for(state_dir, options.merchants)?;
        let channels_file = state_dir.join("channels.toml");
        std::fs::write(
            &channels_file,
            keys.channels_toml(gateway, options.listed_merchants),
        )?;
        let seed = options.seed.unwrap_or_else(rng::fresh_seed);
        let sim = Sim {
            ledger: Mutex::new(Ledger::default()),
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(rng::Streams::new(seed)),
            bill_adjustments: Mutex::new(Vec::new()),
            keys,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("http client"),
            notifications_outstanding: std::sync::atomic::AtomicUsize::new(0),
            clock: options.clock,
            seed,
        };
        Ok((Arc::new(sim), channels_file))
    }

    /// The channels' "now", in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().0
    }

    /// A random alphanumeric string from the seeded generator (nonces, ids, codes).
    pub(crate) fn nonce(&self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut streams = self.rng.lock().unwrap();
        let rng = streams.stream(rng::Draw::Nonce);
        (0..len)
            .map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .merge(sandbox::routes())
            .merge(wechatpay::routes())
            .merge(alipay::routes())
            .merge(unionpay::routes())
            .merge(control::routes())
            .with_state(self.clone())
    }

    /// A uniform draw in [0, 1): fault decisions.
    /// (A probability of 0 draws nothing: a fault turned off leaves every stream where it was.)
    pub(crate) fn chance(&self, purpose: rng::Draw, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap().stream(purpose).next_f64() < p
    }

    pub(crate) fn between(&self, purpose: rng::Draw, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + (self.rng.lock().unwrap().stream(purpose).next_u64() % (hi - lo + 1))
        }
    }

    /// How many merchants the simulator plays on `channel`.
    pub fn merchants(&self, channel: ChannelName) -> usize {
        match channel {
            ChannelName::Wechatpay => self.keys.wechat.len(),
            ChannelName::Alipay => self.keys.alipay.len(),
            ChannelName::Unionpay => self.keys.unionpay.len(),
            ChannelName::Sandbox => 1,
        }
    }

    /// The account name of a channel's merchant `i` (a sub-merchant's own name, `sub1`).
    pub fn merchant_name(&self, channel: ChannelName, i: usize) -> String {
        match channel {
            ChannelName::Wechatpay => self.keys.wechat[i].name.clone(),
            ChannelName::Alipay => self.keys.alipay[i].name.clone(),
            _ => keys::account_name(i, self.merchants(channel)),
        }
    }

    /// How `/sim/ledger` names the account `name` of `channel`: `(merchant, sub_merchant)` —
    /// the provider and the sub-merchant for a sub-merchant, else `(name, None)`.
    pub fn ledger_names(&self, channel: ChannelName, name: &str) -> (String, Option<String>) {
        let roles: Vec<(&str, keys::MerchantRole)> = match channel {
            ChannelName::Wechatpay => self
                .keys
                .wechat
                .iter()
                .map(|m| (m.name.as_str(), m.role))
                .collect(),
            ChannelName::Alipay => self
                .keys
                .alipay
                .iter()
                .map(|m| (m.name.as_str(), m.role))
                .collect(),
            _ => Vec::new(),
        };
        match roles.iter().find(|(n, _)| *n == name) {
            Some((_, keys::MerchantRole::SubMerchant { provider })) => {
                (roles[*provider].0.to_owned(), Some(name.to_owned()))
            }
            _ => (name.to_owned(), None),
        }
    }

    pub fn ledger_snapshot(&self) -> Ledger {
        self.ledger.lock().unwrap().clone()
    }
}

/// Binds the simulator on `listener` and serves it in the background.
pub async fn start(listener: TcpListener, state_dir: &Path) -> std::io::Result<SimHandle> {
    start_with(listener, state_dir, SimOptions::default()).await
}

/// `start` with a given clock and seed.
pub async fn start_with(
    listener: TcpListener,
    state_dir: &Path,
    options: SimOptions,
) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let (sim, channels_file) = Sim::prepare(state_dir, &format!("http://{addr}"), options)?;
    let app = sim.router();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator stopped");
        }
    });
    Ok(SimHandle {
        addr,
        channels_file,
        sim,
        task,
    })
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `payonce sim --seed N`: the same seed makes the same random choices, in the same order.
    #[test]
    fn a_seed_replays_every_random_choice() {
        let draws = |seed: u64| {
            let dir = tempfile::tempdir().unwrap();
            let (sim, _) = Sim::prepare(
                dir.path(),
                "http://127.0.0.1:1",
                SimOptions {
                    seed: Some(seed),
                    ..Default::default()
                },
            )
            .unwrap();
            let faults: Vec<bool> = (0..64)
                .map(|_| sim.chance(rng::Draw::NotifyDrop, 0.5))
                .collect();
            let delays: Vec<u64> = (0..16)
                .map(|_| sim.between(rng::Draw::NotifyDelay, 0, 1000))
                .collect();
            (faults, delays, sim.nonce(32), sim.seed)
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7).0, draws(8).0);
        assert_eq!(draws(7).3, 7);
    }

    /// Draws for one purpose do not move when another purpose draws in between: a scenario
    /// that adds a query (or a nonce) still drops the same notifications.
    #[test]
    fn each_purpose_has_its_own_stream() {
        let dir = tempfile::tempdir().unwrap();
        let sims: Vec<_> = (0..2)
            .map(|_| {
                Sim::prepare(
                    dir.path(),
                    "http://127.0.0.1:1",
                    SimOptions {
                        seed: Some(11),
                        ..Default::default()
                    },
                )
                .unwrap()
                .0
            })
            .collect();
        let drops = |sim: &Sim, interleave: bool| -> Vec<bool> {
            (0..64)
                .map(|_| {
                    if interleave {
                        sim.chance(rng::Draw::QueryError, 0.5);
                        sim.nonce(8);
                    }
                    sim.chance(rng::Draw::NotifyDrop, 0.5)
                })
                .collect()
        };
        assert_eq!(drops(&sims[0], false), drops(&sims[1], true));
        let other: Vec<bool> = (0..64)
            .map(|_| sims[0].chance(rng::Draw::PrepayError, 0.5))
            .collect();
        assert_ne!(
            drops(&sims[1], false),
            other,
            "purposes draw different sequences"
        );
    }
}
