//! The channel accounts an instance uses now: those of `channels.toml` (fixed at start) and
//! those added through the admin API (sealed in the database), swapped in whole when the
//! database's accounts change — on every instance, without a restart. Readers take a snapshot;
//! a call in flight keeps the connector it started with.

use arc_swap::ArcSwap;
use payonce_channels::{Channel, ChannelAccount, ChannelRegistry};
use payonce_core::ChannelName;
use std::sync::Arc;

#[derive(Clone)]
pub struct LiveChannels {
    /// The file's accounts, metered: never change while the process runs.
    file: Arc<ChannelRegistry>,
    /// The file's and the database's, as used now.
    now: Arc<ArcSwap<ChannelRegistry>>,
    /// What the database's accounts were when `now` was built (their newest `updated_at` and
    /// count): the reload worker compares it with the database's.
    pub(crate) stamp: Arc<std::sync::Mutex<Option<(i64, i64)>>>,
}

impl LiveChannels {
    /// `file` must already be metered.
    pub fn new(file: ChannelRegistry) -> Self {
        let file = Arc::new(file);
        LiveChannels {
            now: Arc::new(ArcSwap::from(file.clone())),
            file,
            stamp: Arc::default(),
        }
    }

    /// The accounts as they are now (a snapshot: it does not change under the caller).
    pub fn snapshot(&self) -> Arc<ChannelRegistry> {
        self.now.load_full()
    }

    /// Installs the database's accounts (metered) beside the file's.
    pub fn install(&self, database: &ChannelRegistry) {
        self.now.store(Arc::new(self.file.merged(database)));
    }

    /// The file's accounts alone.
    pub fn file(&self) -> &ChannelRegistry {
        &self.file
    }

    pub fn get(&self, name: ChannelName) -> Option<Arc<dyn Channel>> {
        self.now.load().get(name).cloned()
    }

    pub fn default_account(&self, name: ChannelName) -> Option<Arc<ChannelAccount>> {
        self.now.load().default_account(name).cloned()
    }

    pub fn account(&self, name: ChannelName, account: &str) -> Option<Arc<ChannelAccount>> {
        self.now.load().account(name, account).cloned()
    }

    pub fn connector(&self, name: ChannelName, account: &str) -> Option<Arc<dyn Channel>> {
        self.now.load().connector(name, account).cloned()
    }

    pub fn accounts(&self, name: ChannelName) -> Vec<Arc<ChannelAccount>> {
        self.now.load().accounts(name).to_vec()
    }

    pub fn names(&self) -> Vec<ChannelName> {
        self.now.load().names().collect()
    }
}
