//! `channels.toml`: which channels this deployment talks to, their gateways and key files.
//! `payonce sim` writes one for its own endpoints; production writes it by hand.

use crate::{ChannelRegistry, sandbox};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub sandbox: Option<SandboxConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Base URL of the sandbox gateway, e.g. `http://127.0.0.1:7070`.
    pub gateway: String,
    /// File holding the hex-encoded HMAC key shared with the gateway.
    pub key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid channels file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ChannelsConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg: ChannelsConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.into(), message: e.to_string() })?;
        // Key files are named relative to the channels file, so a state dir can move.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(s) = cfg.sandbox.as_mut() {
            s.key_file = base.join(&s.key_file);
        }
        Ok(cfg)
    }

    /// Builds the connectors. `timeout` bounds every channel call; past it the outcome is unknown.
    pub fn build(&self, timeout: Duration) -> Result<ChannelRegistry, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| ConfigError::Invalid { path: PathBuf::new(), message: e.to_string() })?;
        let mut reg = ChannelRegistry::default();
        if let Some(s) = &self.sandbox {
            let key = crate::config::read_hex_key(&s.key_file)?;
            reg.insert(Arc::new(sandbox::SandboxClient::new(s.gateway.clone(), key, http.clone())));
        }
        Ok(reg)
    }
}

pub fn read_hex_key(path: &Path) -> Result<crate::secret::SecretBytes, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    let bytes = hex::decode(text.trim())
        .map_err(|_| ConfigError::Invalid { path: path.into(), message: "key file is not hex".into() })?;
    Ok(crate::secret::SecretBytes::new(bytes))
}
