//! The raw shape of the config file: exactly the TOML, every key optional where a default
//! exists, unknown keys rejected (`deny_unknown_fields`), so a typo is an error naming the key.
//! Nothing here validates or defaults a value: [`super::Config::validate`] does that once
//! (ripgrep's `LowArgs` before `HiArgs`).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) okta: Option<RawOkta>,
    pub(super) postman: Option<RawPostman>,
    #[serde(default)]
    pub(super) sync: RawSync,
    #[serde(default)]
    pub(super) groups: RawGroups,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) events: RawEvents,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOkta {
    pub(super) org_url: Option<String>,
    pub(super) app_id: Option<String>,
    pub(super) auth: Option<String>,
    pub(super) api_token_file: Option<PathBuf>,
    pub(super) client_id: Option<String>,
    pub(super) private_key_file: Option<PathBuf>,
    pub(super) key_id: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) dpop: Option<bool>,
    pub(super) max_rate_share: Option<f64>,
    pub(super) page_size: Option<u32>,
    pub(super) timeout: Option<String>,
    #[serde(default)]
    pub(super) mapping: RawMapping,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    pub(super) user_name: Option<Vec<String>>,
    pub(super) given_name: Option<Vec<String>>,
    pub(super) family_name: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostman {
    pub(super) scim_url: Option<String>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) auth_scheme: Option<String>,
    pub(super) writes_per_minute: Option<u32>,
    pub(super) reads_per_minute: Option<u32>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub(super) state_path: Option<PathBuf>,
    pub(super) max_deactivations: Option<usize>,
    pub(super) schedule: Option<String>,
    pub(super) jitter: Option<String>,
    pub(super) full_every: Option<String>,
    pub(super) stale_after: Option<String>,
    pub(super) quarantine_after: Option<u32>,
    pub(super) quarantine_for: Option<String>,
    pub(super) history_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroups {
    pub(super) enabled: Option<bool>,
    pub(super) push: Option<Vec<String>>,
    pub(super) delete_removed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) status_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    pub(super) system_log: Option<bool>,
    pub(super) poll_interval: Option<String>,
    pub(super) hook: Option<bool>,
    pub(super) hook_secret_file: Option<PathBuf>,
    pub(super) guard_window: Option<String>,
}
