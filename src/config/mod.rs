//! Configuration, converted once: `raw` is the TOML shape (serde, unknown keys rejected),
//! `secrets` says where each secret comes from, and `Config::validate` turns the raw shape
//! into a [`Config`] whose values are the types the program uses (the attribute mapping, the
//! SCIM auth scheme, the parsed cron schedule, the client settings), so nothing downstream parses
//! a setting again (ripgrep's `LowArgs` -> `HiArgs`). Every error names the key and says how to
//! fix it.
//!
//! Defaults that belong to a client (the SCIM base URL, Postman's 180/300 limits, the 30 s
//! timeouts, the auth scheme, the mapping chains) are the client's constants, used here, never
//! written twice. This module must not read secrets on its own or open anything: a secret is read
//! only when [`crate::bootstrap`] asks for it.

mod raw;
mod secrets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::okta::{
    AttributeMapping, OAuthSettings, OktaAuth, OktaClientConfig, Source, DEFAULT_SCOPES,
};
use crate::retry::RetryPolicy;
use crate::scim::{AuthScheme, ScimClientConfig};
use raw::{RawConfig, RawOkta};
pub use secrets::*;

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/okta-postman-sync/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}. Pass --config PATH or set OKTA_POSTMAN_SYNC_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("{what} is not configured: {fix}")]
    MissingSecret { what: &'static str, fix: String },
    #[error("cannot read the secret file {path} (config key `{key}`): {source}")]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// How the daemon authenticates to Okta (`[okta] auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OktaAuthConfig {
    /// `auth = "api_token"` (the default): an SSWS token (docs/okta-api.md#api-tokens-ssws).
    ApiToken { token: SecretSource },
    /// `auth = "oauth"`: an OAuth 2.0 service app with `private_key_jwt`
    /// (docs/okta-api.md#oauth-service-apps, #dpop).
    OAuth {
        client_id: String,
        private_key: SecretSource,
        key_id: Option<String>,
        scopes: Vec<String>,
        /// `dpop = true`: send DPoP proofs from the start instead of when Okta asks.
        force_dpop: bool,
    },
}

/// `[okta]`: the client's settings, the credential's source and the attribute mapping.
#[derive(Clone, Debug)]
pub struct OktaConfig {
    pub org_url: Url,
    pub app_id: String,
    pub auth: OktaAuthConfig,
    pub max_rate_share: f64,
    pub page_size: u32,
    pub timeout: Duration,
    /// `[okta.mapping]`, parsed: the engine reads app users with exactly this.
    pub mapping: AttributeMapping,
}

impl OktaConfig {
    /// Reads the credential `[okta] auth` names (the API token, or the OAuth service app's
    /// private key).
    pub fn load_auth(&self) -> Result<OktaAuth, ConfigError> {
        Ok(match &self.auth {
            OktaAuthConfig::ApiToken { token } => {
                OktaAuth::ApiToken(token.load("okta.api_token_file", "the Okta API token")?)
            }
            OktaAuthConfig::OAuth {
                client_id,
                private_key,
                key_id,
                scopes,
                force_dpop,
            } => OktaAuth::OAuth(OAuthSettings {
                client_id: client_id.clone(),
                private_key_pem: private_key
                    .load("okta.private_key_file", "the Okta OAuth private key")?,
                key_id: key_id.clone(),
                scopes: scopes.clone(),
                force_dpop: *force_dpop,
            }),
        })
    }

    /// The Okta client's configuration: these settings, the credential in hand and the retry
    /// policy. Settings the file does not offer keep the client's defaults.
    pub fn client_config(&self, auth: OktaAuth, retry: RetryPolicy) -> OktaClientConfig {
        OktaClientConfig {
            page_limit: self.page_size,
            max_rate_share: self.max_rate_share,
            timeout: self.timeout,
            retry,
            ..OktaClientConfig::with_defaults(self.org_url.clone(), self.app_id.clone(), auth)
        }
    }
}

/// `[postman]`: the SCIM client's settings and the key's source.
#[derive(Clone, Debug)]
pub struct PostmanConfig {
    pub scim_url: Url,
    pub api_key: SecretSource,
    pub auth_scheme: AuthScheme,
    pub writes_per_minute: u32,
    pub reads_per_minute: u32,
    /// Writes in flight at once (the engine's concurrency, not a client setting).
    pub max_in_flight: usize,
    pub timeout: Duration,
}

impl PostmanConfig {
    /// Reads the Postman SCIM API key.
    pub fn load_api_key(&self) -> Result<SecretString, ConfigError> {
        self.api_key
            .load("postman.api_key_file", "the Postman SCIM API key")
    }

    /// The SCIM client's configuration: these settings, the key in hand and the retry policy.
    /// Settings the file does not offer keep the client's defaults.
    pub fn client_config(&self, api_key: SecretString, retry: RetryPolicy) -> ScimClientConfig {
        ScimClientConfig {
            base_url: self.scim_url.clone(),
            auth_scheme: self.auth_scheme,
            writes_per_minute: self.writes_per_minute,
            reads_per_minute: self.reads_per_minute,
            timeout: self.timeout,
            retry,
            ..ScimClientConfig::new(api_key)
        }
    }
}

/// `[sync]`.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub state_path: PathBuf,
    pub max_deactivations: usize,
    /// Parsed once; its `source()` is the normalised 6/7-field text logs print.
    pub schedule: cron::Schedule,
    pub jitter: Duration,
    pub full_every: Duration,
    pub stale_after: Duration,
    /// Consecutive permanent failures before a user is quarantined.
    pub quarantine_after: u32,
    /// How long a quarantined user waits before the next attempt.
    pub quarantine_for: Duration,
    /// How long closed journal rows (the audit trail `history` shows) are kept. Open rows are
    /// kept whatever their age: recovery still needs them.
    pub history_for: Duration,
}

#[derive(Clone, Debug)]
pub struct GroupsConfig {
    pub enabled: bool,
    /// Explicit Okta group ids or names; empty = the groups assigned to the app.
    pub push: Vec<String>,
    pub delete_removed: bool,
}

/// `[events]` (issue 14): near-real-time sync from the System Log and the Event Hook.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Poll `GET /api/v1/logs` (needs `okta.logs.read` with OAuth).
    pub system_log: bool,
    /// Time between polls (at least 1 s).
    pub poll_interval: Duration,
    /// Serve `GET`/`POST /okta/events` on `[server] listen`.
    pub hook: bool,
    /// The `Authorization` value Okta sends with every hook call: `[events] hook_secret_file`,
    /// else `OKTA_EVENT_HOOK_SECRET`, else the systemd credential `okta-event-hook-secret`.
    pub hook_secret: SecretSource,
    /// Event-driven deactivations count against `[sync] max_deactivations` over this window.
    pub guard_window: Duration,
}

impl EventsConfig {
    pub fn enabled(&self) -> bool {
        self.system_log || self.hook
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub okta: OktaConfig,
    pub postman: PostmanConfig,
    pub sync: SyncConfig,
    pub groups: GroupsConfig,
    pub listen: Option<SocketAddr>,
    /// `[server] status_token_file`, else `OKTA_POSTMAN_SYNC_STATUS_TOKEN`, else the systemd
    /// credential `status-token`; read once when the daemon starts (optional).
    pub status_token: SecretSource,
    pub log_level: String,
    pub log_format: LogFormat,
    pub events: EventsConfig,
}

impl Config {
    /// Reads and validates the config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Validates config text. Never panics, whatever the input.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let okta = raw.okta.ok_or_else(|| {
            ConfigError::invalid(
                "okta",
                "the [okta] section is missing (org_url and app_id are required)",
            )
        })?;
        let auth = okta_auth(&okta)?;
        let org_url = parse_url(
            "okta.org_url",
            okta.org_url.as_deref().ok_or_else(|| {
                ConfigError::invalid(
                    "okta.org_url",
                    "is required, e.g. \"https://acme.okta.com\"",
                )
            })?,
        )?;
        let app_id = okta
            .app_id
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "okta.app_id",
                    "is required: the id of the Postman app in Okta (Applications > Postman, the `0oa...` id in the URL)",
                )
            })?;
        if !app_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::invalid(
                "okta.app_id",
                format!(
                    "{app_id:?} is not an Okta app id (letters and digits only, like 0oa1b2c3d4)"
                ),
            ));
        }
        let max_rate_share = okta
            .max_rate_share
            .unwrap_or(crate::okta::DEFAULT_MAX_RATE_SHARE);
        if !(max_rate_share > 0.0 && max_rate_share <= 1.0) {
            return Err(ConfigError::invalid(
                "okta.max_rate_share",
                format!("{max_rate_share} is out of range: use a share in (0, 1], e.g. 0.5"),
            ));
        }
        let page_size = okta.page_size.unwrap_or(crate::okta::DEFAULT_PAGE_LIMIT);
        if !(1..=500).contains(&page_size) {
            return Err(ConfigError::invalid(
                "okta.page_size",
                format!("{page_size} is out of range: Okta accepts 1..=500 for app users"),
            ));
        }
        let okta_cfg = OktaConfig {
            org_url,
            app_id,
            auth,
            max_rate_share,
            page_size,
            timeout: parse_duration(
                "okta.timeout",
                okta.timeout.as_deref(),
                crate::okta::DEFAULT_TIMEOUT,
                TIMEOUT,
            )?,
            mapping: mapping(okta.mapping)?,
        };

        let postman = raw.postman.ok_or_else(|| {
            ConfigError::invalid(
                "postman",
                "the [postman] section is missing (api_key_file or POSTMAN_SCIM_API_KEY is needed)",
            )
        })?;
        let scim_url = parse_url(
            "postman.scim_url",
            postman
                .scim_url
                .as_deref()
                .unwrap_or(crate::scim::DEFAULT_BASE_URL),
        )?;
        let auth_scheme = match postman.auth_scheme.as_deref() {
            None => AuthScheme::default(),
            Some("raw") => AuthScheme::Raw,
            Some("bearer") => AuthScheme::Bearer,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "postman.auth_scheme",
                    format!("{other:?} is not supported: use \"raw\" (the key as the whole Authorization value) or \"bearer\""),
                ))
            }
        };
        let writes_per_minute = postman
            .writes_per_minute
            .unwrap_or(crate::scim::DEFAULT_WRITES_PER_MINUTE);
        if writes_per_minute == 0 {
            return Err(ConfigError::invalid(
                "postman.writes_per_minute",
                "must be at least 1 (Postman allows 180)",
            ));
        }
        let reads_per_minute = postman
            .reads_per_minute
            .unwrap_or(crate::scim::DEFAULT_READS_PER_MINUTE);
        if reads_per_minute == 0 {
            return Err(ConfigError::invalid(
                "postman.reads_per_minute",
                "must be at least 1 (Postman allows 300)",
            ));
        }
        let max_in_flight = postman.max_in_flight.unwrap_or(4);
        if !(1..=64).contains(&max_in_flight) {
            return Err(ConfigError::invalid(
                "postman.max_in_flight",
                format!("{max_in_flight} is out of range: use 1..=64"),
            ));
        }
        let postman_cfg = PostmanConfig {
            scim_url,
            api_key: postman.api_key_file.map(SecretSource::File).unwrap_or(
                SecretSource::EnvOrCredential {
                    env: POSTMAN_KEY_ENV,
                    credential: POSTMAN_KEY_CREDENTIAL,
                },
            ),
            auth_scheme,
            writes_per_minute,
            reads_per_minute,
            max_in_flight,
            timeout: parse_duration(
                "postman.timeout",
                postman.timeout.as_deref(),
                crate::scim::DEFAULT_TIMEOUT,
                TIMEOUT,
            )?,
        };

        let sync = raw.sync;
        let schedule = parse_schedule(sync.schedule.as_deref().unwrap_or("0 */15 * * * *"))?;
        let full_every = parse_duration(
            "sync.full_every",
            sync.full_every.as_deref(),
            DAY,
            Bounds {
                min: MINUTE,
                max: 90 * DAY,
            },
        )?;
        let stale_after = parse_duration(
            "sync.stale_after",
            sync.stale_after.as_deref(),
            2 * HOUR,
            Bounds {
                min: MINUTE,
                max: 90 * DAY,
            },
        )?;
        let sync_cfg = SyncConfig {
            state_path: sync
                .state_path
                .unwrap_or_else(|| PathBuf::from("/var/lib/okta-postman-sync/state.db")),
            max_deactivations: sync.max_deactivations.unwrap_or(25),
            schedule,
            jitter: parse_duration(
                "sync.jitter",
                sync.jitter.as_deref(),
                Duration::ZERO,
                Bounds {
                    min: Duration::ZERO,
                    max: DAY,
                },
            )?,
            full_every,
            stale_after,
            quarantine_after: match sync.quarantine_after.unwrap_or(3) {
                0 => {
                    return Err(ConfigError::invalid(
                        "sync.quarantine_after",
                        "must be at least 1 (failures before a user is quarantined)",
                    ))
                }
                n => n,
            },
            quarantine_for: parse_duration(
                "sync.quarantine_for",
                sync.quarantine_for.as_deref(),
                DAY,
                Bounds {
                    min: MINUTE,
                    max: 365 * DAY,
                },
            )?,
            // 400 days by default, so a yearly audit finds last year's changes. At least a day
            // (recovery and `why` read recent rows); at most ten years, which keeps the date
            // arithmetic of the prune cutoff far from overflowing.
            history_for: parse_duration(
                "sync.history_for",
                sync.history_for.as_deref(),
                400 * DAY,
                Bounds {
                    min: DAY,
                    max: 3660 * DAY,
                },
            )?,
        };
        if sync_cfg.state_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("sync.state_path", "must not be empty"));
        }

        let groups = GroupsConfig {
            enabled: raw.groups.enabled.unwrap_or(true),
            push: raw.groups.push.unwrap_or_default(),
            delete_removed: raw.groups.delete_removed.unwrap_or(false),
        };

        let listen = match raw.server.listen {
            None => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid(
                    "server.listen",
                    format!("{s:?} is not an address:port, e.g. \"0.0.0.0:9464\""),
                )
            })?),
        };
        let status_token = raw
            .server
            .status_token_file
            .map(SecretSource::File)
            .unwrap_or(SecretSource::EnvOrCredential {
                env: STATUS_TOKEN_ENV,
                credential: STATUS_TOKEN_CREDENTIAL,
            });

        let log_level = raw.log.level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "{log_level:?} is not a level or filter: use error, warn, info, debug or trace"
                ),
            ));
        }
        let log_format = match raw.log.format.as_deref().unwrap_or("pretty") {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("{other:?} is not supported: use \"pretty\" or \"json\""),
                ))
            }
        };

        let events = events_config(raw.events, listen.is_some())?;

        Ok(Config {
            events,
            okta: okta_cfg,
            postman: postman_cfg,
            sync: sync_cfg,
            groups,
            listen,
            status_token,
            log_level,
            log_format,
        })
    }
}

/// `[events]`: every key optional; the hook needs the HTTP server.
fn events_config(raw: raw::RawEvents, listening: bool) -> Result<EventsConfig, ConfigError> {
    let hook = raw.hook.unwrap_or(false);
    if hook && !listening {
        return Err(ConfigError::invalid(
            "events.hook",
            "needs the HTTP server: set [server] listen (e.g. \"0.0.0.0:9464\") behind the HTTPS \
             proxy Okta calls, or set hook = false",
        ));
    }
    if raw.hook_secret_file.is_some() && !hook {
        return Err(ConfigError::invalid(
            "events.hook_secret_file",
            "is only used with hook = true: set [events] hook = true or remove it",
        ));
    }
    Ok(EventsConfig {
        system_log: raw.system_log.unwrap_or(false),
        poll_interval: parse_duration(
            "events.poll_interval",
            raw.poll_interval.as_deref(),
            Duration::from_secs(15),
            Bounds {
                min: Duration::from_secs(1),
                max: HOUR,
            },
        )?,
        hook,
        hook_secret: raw.hook_secret_file.map(SecretSource::File).unwrap_or(
            SecretSource::EnvOrCredential {
                env: EVENT_HOOK_SECRET_ENV,
                credential: EVENT_HOOK_SECRET_CREDENTIAL,
            },
        ),
        guard_window: parse_duration(
            "events.guard_window",
            raw.guard_window.as_deref(),
            HOUR,
            Bounds {
                min: MINUTE,
                max: 7 * DAY,
            },
        )?,
    })
}

/// `[okta] auth` and the keys that go with it. Keys of the other method are errors, so a
/// half-migrated config does not silently use the wrong credential.
fn okta_auth(okta: &RawOkta) -> Result<OktaAuthConfig, ConfigError> {
    match okta.auth.as_deref().unwrap_or("api_token") {
        "api_token" => {
            let oauth_keys = [
                ("okta.client_id", okta.client_id.is_some()),
                ("okta.private_key_file", okta.private_key_file.is_some()),
                ("okta.key_id", okta.key_id.is_some()),
                ("okta.scopes", okta.scopes.is_some()),
                ("okta.dpop", okta.dpop.is_some()),
            ];
            if let Some((key, _)) = oauth_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(
                    key,
                    "is only used with auth = \"oauth\": set [okta] auth = \"oauth\" or remove it",
                ));
            }
            Ok(OktaAuthConfig::ApiToken {
                token: okta.api_token_file.clone().map(SecretSource::File).unwrap_or(
                    SecretSource::EnvOrCredential {
                        env: OKTA_TOKEN_ENV,
                        credential: OKTA_TOKEN_CREDENTIAL,
                    },
                ),
            })
        }
        "oauth" => {
            if okta.api_token_file.is_some() {
                return Err(ConfigError::invalid(
                    "okta.api_token_file",
                    "is not used with auth = \"oauth\": remove it (the service app's private key is in okta.private_key_file)",
                ));
            }
            let client_id = okta
                .client_id
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "okta.client_id",
                        "is required with auth = \"oauth\": the Client ID of the API Services app (the 0oa... id on its General tab)",
                    )
                })?;
            if !client_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError::invalid(
                    "okta.client_id",
                    format!("{client_id:?} is not an Okta client id (letters and digits, like 0oa1b2c3d4)"),
                ));
            }
            let key_id = match okta.key_id.as_deref().map(str::trim) {
                Some("") => {
                    return Err(ConfigError::invalid(
                        "okta.key_id",
                        "is empty: set it to the KID Okta shows for the public key, or remove it",
                    ))
                }
                Some(k) if k.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                    return Err(ConfigError::invalid(
                        "okta.key_id",
                        format!("{k:?} contains spaces: copy the KID exactly as Okta shows it"),
                    ))
                }
                other => other.map(str::to_string),
            };
            let scopes = match &okta.scopes {
                None => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
                Some(list) => {
                    if list.is_empty() {
                        return Err(ConfigError::invalid(
                            "okta.scopes",
                            "must list at least one scope, e.g. [\"okta.apps.read\", \"okta.users.read\", \"okta.groups.read\"]",
                        ));
                    }
                    let mut scopes: Vec<String> = Vec::new();
                    for scope in list {
                        let scope = scope.trim();
                        let ok = scope.starts_with("okta.")
                            && scope
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
                        if !ok {
                            return Err(ConfigError::invalid(
                                "okta.scopes",
                                format!("{scope:?} is not an Okta scope (like \"okta.users.read\"; one scope per list item)"),
                            ));
                        }
                        if !scopes.iter().any(|s| s == scope) {
                            scopes.push(scope.to_string());
                        }
                    }
                    scopes
                }
            };
            Ok(OktaAuthConfig::OAuth {
                client_id: client_id.to_string(),
                private_key: okta.private_key_file.clone().map(SecretSource::File).unwrap_or(
                    SecretSource::EnvOrCredential {
                        env: OKTA_PRIVATE_KEY_ENV,
                        credential: OKTA_PRIVATE_KEY_CREDENTIAL,
                    },
                ),
                key_id,
                scopes,
                force_dpop: okta.dpop.unwrap_or(false),
            })
        }
        other => Err(ConfigError::invalid(
            "okta.auth",
            format!("{other:?} is not supported: use \"api_token\" (an SSWS token) or \"oauth\" (an API Services app)"),
        )),
    }
}

/// Parses a base URL; plain `http://` is refused unless the host is loopback (tests, demo).
fn parse_url(key: &'static str, value: &str) -> Result<Url, ConfigError> {
    let trimmed = value.trim().trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| ConfigError::invalid(key, format!("{value:?} is not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(ConfigError::invalid(
                    key,
                    format!("{value:?} uses plain http: use https (http is only allowed for 127.0.0.1/localhost)"),
                ));
            }
        }
        other => {
            return Err(ConfigError::invalid(
                key,
                format!("scheme {other:?} is not supported: use https"),
            ))
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::invalid(key, format!("{value:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must not carry credentials; use the secret files",
        ));
    }
    Ok(url)
}

/// The range a duration setting may take. Zero timeouts would fail every request; absurd
/// lengths would overflow date arithmetic (a `jitter` of 10^10 years) or silently disable a
/// safety (a `quarantine_for` of a century), so both are configuration errors naming the key.
struct Bounds {
    min: Duration,
    max: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Per-request timeouts: at least a second, at most ten minutes.
const TIMEOUT: Bounds = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(600),
};

fn parse_duration(
    key: &'static str,
    value: Option<&str>,
    default: Duration,
    bounds: Bounds,
) -> Result<Duration, ConfigError> {
    let d = match value {
        None => return Ok(default),
        Some(s) => humantime::parse_duration(s.trim()).map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"15m\", \"24h\""),
            )
        })?,
    };
    if d < bounds.min || d > bounds.max {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} is out of range: use {} to {}",
                humantime::format_duration(d),
                humantime::format_duration(bounds.min),
                humantime::format_duration(bounds.max)
            ),
        ));
    }
    Ok(d)
}

/// `[okta.mapping]`: each chain parsed into the client's [`Source`]s; a chain that is not set
/// keeps the client's default ([`AttributeMapping::default`], written only there).
fn mapping(raw: raw::RawMapping) -> Result<AttributeMapping, ConfigError> {
    let defaults = AttributeMapping::default();
    Ok(AttributeMapping {
        user_name: mapping_chain("okta.mapping.user_name", raw.user_name, defaults.user_name)?,
        given_name: mapping_chain(
            "okta.mapping.given_name",
            raw.given_name,
            defaults.given_name,
        )?,
        family_name: mapping_chain(
            "okta.mapping.family_name",
            raw.family_name,
            defaults.family_name,
        )?,
    })
}

fn mapping_chain(
    key: &'static str,
    value: Option<Vec<String>>,
    default: Vec<Source>,
) -> Result<Vec<Source>, ConfigError> {
    let Some(chain) = value else {
        return Ok(default);
    };
    if chain.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "must list at least one source, e.g. [\"user.profile.login\"]",
        ));
    }
    chain
        .iter()
        .map(|source| {
            // Written exactly: surrounding spaces are a typo, not a source.
            let parsed = (source.trim() == source)
                .then(|| source.parse::<Source>().ok())
                .flatten();
            parsed.ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format!("{source:?} is not a source: use app.credentials.userName, app.profile.<attr> or user.profile.<attr>"),
                )
            })
        })
        .collect()
}

/// Accepts the 6-field cron form (with seconds) and the common 5-field crontab form (a `0`
/// seconds field is prepended), and checks it with the `cron` crate.
pub fn normalise_schedule(expr: &str) -> Result<String, ConfigError> {
    Ok(parse_schedule(expr)?.source().to_string())
}

/// The field-count half of [`normalise_schedule`]: a 5-field expression gets a `0` seconds field.
fn normalise_fields(expr: &str) -> Result<String, ConfigError> {
    let fields = expr.split_whitespace().count();
    let normalised = match fields {
        5 => format!("0 {}", expr.trim()),
        6 | 7 => expr.trim().to_string(),
        _ => {
            return Err(ConfigError::invalid(
                "sync.schedule",
                format!("{expr:?} has {fields} fields: use 5 (\"*/15 * * * *\") or 6 with seconds (\"0 */15 * * * *\")"),
            ))
        }
    };
    Ok(normalised)
}

/// [`normalise_schedule`], parsed: the schedule the daemon runs on (its `source()` is the
/// normalised text).
pub fn parse_schedule(expr: &str) -> Result<cron::Schedule, ConfigError> {
    let normalised = normalise_fields(expr)?;
    normalised.parse::<cron::Schedule>().map_err(|e| {
        ConfigError::invalid(
            "sync.schedule",
            format!("{expr:?} is not a cron expression: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [okta]
        org_url = "https://acme.okta.com"
        app_id = "0oa1abc"
        [postman]
    "#;

    fn err(text: &str) -> String {
        Config::parse(text)
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(
            c.postman.scim_url.as_str(),
            "https://api.getpostman.com/scim/v2"
        );
        assert_eq!(c.postman.writes_per_minute, 180);
        assert_eq!(c.postman.reads_per_minute, 300);
        assert_eq!(c.postman.auth_scheme, AuthScheme::Raw);
        assert_eq!(c.sync.max_deactivations, 25);
        assert_eq!(c.okta.max_rate_share, 0.5);
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(c.listen.is_none());
    }

    #[test]
    fn the_validated_config_holds_the_clients_defaults_as_real_types() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.okta.mapping, AttributeMapping::default());
        assert_eq!(c.sync.schedule.source(), "0 */15 * * * *");
        let key = SecretString::from("k");
        let built = c.postman.client_config(key.clone(), RetryPolicy::default());
        let defaults = ScimClientConfig::new(key);
        assert_eq!(built.base_url, defaults.base_url);
        assert_eq!(built.auth_scheme, defaults.auth_scheme);
        assert_eq!(built.writes_per_minute, defaults.writes_per_minute);
        assert_eq!(built.reads_per_minute, defaults.reads_per_minute);
        assert_eq!(built.timeout, defaults.timeout);
        let auth = OktaAuth::ApiToken(SecretString::from("t"));
        let built = c.okta.client_config(auth.clone(), RetryPolicy::default());
        let defaults =
            OktaClientConfig::with_defaults(c.okta.org_url.clone(), c.okta.app_id.clone(), auth);
        assert_eq!(built.page_limit, defaults.page_limit);
        assert_eq!(built.max_rate_share, defaults.max_rate_share);
        assert_eq!(built.timeout, defaults.timeout);
        // A chain that is set replaces the default, parsed.
        let c = Config::parse(&MINIMAL.replace(
            "[postman]",
            "[okta.mapping]\nuser_name = [\"user.profile.email\"]\n[postman]\nauth_scheme = \"bearer\"",
        ))
        .expect("valid");
        assert_eq!(
            c.okta.mapping.user_name,
            [Source::UserProfile("email".into())]
        );
        assert_eq!(
            c.okta.mapping.given_name,
            AttributeMapping::default().given_name
        );
        assert_eq!(c.postman.auth_scheme, AuthScheme::Bearer);
        let e = err(&MINIMAL.replace(
            "[postman]",
            "[okta.mapping]\nuser_name = [\" user.profile.email\"]\n[postman]",
        ));
        assert!(e.contains("okta.mapping.user_name"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = err(&format!("{MINIMAL}\nwrites_per_minut = 10\n"));
        assert!(e.contains("writes_per_minut"), "{e}");
        let e = err("[okta]\norg_url = \"https://a.okta.com\"\napp_id = \"0oa1\"\napi_token = \"secret\"\n[postman]\n");
        assert!(e.contains("api_token"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("auth_scheme = \"basic\"", "postman.auth_scheme"),
            ("writes_per_minute = 0", "postman.writes_per_minute"),
            (
                "scim_url = \"http://api.getpostman.com/scim/v2\"",
                "postman.scim_url",
            ),
            ("timeout = \"soon\"", "postman.timeout"),
        ];
        for (line, key) in cases {
            let text = MINIMAL.replace("[postman]", &format!("[postman]\n{line}"));
            let e = err(&text);
            assert!(e.contains(key), "{line}: {e}");
        }
        let e = err(&MINIMAL.replace("https://acme.okta.com", "http://acme.okta.com"));
        assert!(e.contains("okta.org_url") && e.contains("https"), "{e}");
        let e = err(&format!("{MINIMAL}\n[sync]\nschedule = \"every day\"\n"));
        assert!(e.contains("sync.schedule"), "{e}");
        let e = err(&format!("{MINIMAL}\n[log]\nformat = \"xml\"\n"));
        assert!(e.contains("log.format"), "{e}");
        let e = err(&format!("{MINIMAL}\n[server]\nlisten = \"nowhere\"\n"));
        assert!(e.contains("server.listen"), "{e}");
        let e = err(&MINIMAL.replace("app_id = \"0oa1abc\"", "app_id = \"../x\""));
        assert!(e.contains("okta.app_id"), "{e}");
        let e = err("[okta]\norg_url = \"https://a.okta.com\"\napp_id = \"0oa1\"\n[okta.mapping]\nuser_name = [\"profile.x\"]\n[postman]\n");
        assert!(e.contains("okta.mapping.user_name"), "{e}");
    }

    #[test]
    fn zero_timeouts_and_absurd_durations_are_refused_naming_the_key() {
        let cases = [
            ("[postman]", "timeout = \"0s\"", "postman.timeout"),
            ("[okta]", "timeout = \"0s\"", "okta.timeout"),
            ("[okta]", "timeout = \"2h\"", "okta.timeout"),
        ];
        for (section, line, key) in cases {
            let text = MINIMAL.replacen(section, &format!("{section}\n{line}"), 1);
            let e = err(&text);
            assert!(e.contains(key) && e.contains("out of range"), "{line}: {e}");
        }
        for (line, key) in [
            ("jitter = \"10000000000y\"", "sync.jitter"),
            ("jitter = \"2d\"", "sync.jitter"),
            ("quarantine_for = \"500000y\"", "sync.quarantine_for"),
            ("quarantine_for = \"0s\"", "sync.quarantine_for"),
            ("history_for = \"1h\"", "sync.history_for"),
            ("history_for = \"100y\"", "sync.history_for"),
            ("full_every = \"0s\"", "sync.full_every"),
            ("stale_after = \"1000y\"", "sync.stale_after"),
        ] {
            let e = err(&format!("{MINIMAL}\n[sync]\n{line}\n"));
            assert!(e.contains(key), "{line}: {e}");
        }
        // The edges of each range are accepted.
        let ok = Config::parse(&format!(
            "{MINIMAL}\n[sync]\njitter = \"24h\"\nquarantine_for = \"365d\"\nfull_every = \"1m\"\n"
        ))
        .expect("edges are valid");
        assert_eq!(ok.sync.jitter, Duration::from_secs(86400));
    }

    const OAUTH: &str = r#"
        [okta]
        org_url = "https://acme.okta.com"
        app_id = "0oa1abc"
        auth = "oauth"
        client_id = "0oaclient1"
        private_key_file = "/etc/okta-postman-sync/okta-oauth-key.pem"
        [postman]
    "#;

    #[test]
    fn api_token_is_the_default_auth_and_oauth_keys_are_rejected_with_it() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert!(matches!(c.okta.auth, OktaAuthConfig::ApiToken { .. }));
        for (line, key) in [
            ("client_id = \"0oa1\"", "okta.client_id"),
            ("private_key_file = \"/k.pem\"", "okta.private_key_file"),
            ("key_id = \"k1\"", "okta.key_id"),
            ("scopes = [\"okta.apps.read\"]", "okta.scopes"),
            ("dpop = true", "okta.dpop"),
        ] {
            let e = err(&MINIMAL.replace("[postman]", &format!("{line}\n[postman]")));
            assert!(e.contains(key) && e.contains("oauth"), "{line}: {e}");
        }
    }

    #[test]
    fn oauth_config_gets_default_scopes_and_needs_no_token() {
        let c = Config::parse(OAUTH).expect("valid");
        let OktaAuthConfig::OAuth {
            client_id,
            private_key,
            key_id,
            scopes,
            force_dpop,
        } = c.okta.auth
        else {
            panic!("expected OAuth")
        };
        assert_eq!(client_id, "0oaclient1");
        assert_eq!(
            private_key,
            SecretSource::File("/etc/okta-postman-sync/okta-oauth-key.pem".into())
        );
        assert_eq!(key_id, None);
        assert_eq!(
            scopes,
            ["okta.apps.read", "okta.users.read", "okta.groups.read"]
        );
        assert!(!force_dpop);
        let c = Config::parse(&OAUTH.replace(
            "[postman]",
            "key_id = \"kid-1\"\nscopes = [\"okta.apps.read\", \"okta.groups.read\", \"okta.logs.read\"]\ndpop = true\n[postman]",
        ))
        .expect("valid");
        let OktaAuthConfig::OAuth {
            key_id,
            scopes,
            force_dpop,
            ..
        } = c.okta.auth
        else {
            panic!("expected OAuth")
        };
        assert_eq!(key_id.as_deref(), Some("kid-1"));
        assert_eq!(scopes.len(), 3);
        assert!(force_dpop);
    }

    #[test]
    fn bad_oauth_values_name_their_key() {
        let cases = [
            (
                OAUTH.replace("auth = \"oauth\"", "auth = \"saml\""),
                "okta.auth",
            ),
            (
                OAUTH.replace("client_id = \"0oaclient1\"", ""),
                "okta.client_id",
            ),
            (OAUTH.replace("0oaclient1", "0oa client"), "okta.client_id"),
            (
                OAUTH.replace("[postman]", "api_token_file = \"/t\"\n[postman]"),
                "okta.api_token_file",
            ),
            (
                OAUTH.replace("[postman]", "scopes = []\n[postman]"),
                "okta.scopes",
            ),
            (
                OAUTH.replace(
                    "[postman]",
                    "scopes = [\"okta.apps.read okta.users.read\"]\n[postman]",
                ),
                "okta.scopes",
            ),
            (
                OAUTH.replace("[postman]", "key_id = \"\"\n[postman]"),
                "okta.key_id",
            ),
            (
                OAUTH.replace("[postman]", "dpop = \"yes\"\n[postman]"),
                "dpop",
            ),
        ];
        for (text, key) in cases {
            let e = err(&text);
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn the_example_config_is_valid_and_its_oauth_keys_work_when_uncommented() {
        let example = include_str!("../../config/okta-postman-sync.example.toml");
        let c = Config::parse(example).expect("the example config is valid");
        assert!(matches!(c.okta.auth, OktaAuthConfig::ApiToken { .. }));
        let oauth = example
            .replace("auth = \"api_token\"", "auth = \"oauth\"")
            .replace("api_token_file = ", "# api_token_file = ")
            .replace("# client_id = ", "client_id = ")
            .replace("# private_key_file = ", "private_key_file = ")
            .replace("# key_id = ", "key_id = ")
            .replace("# scopes = ", "scopes = ")
            .replace("# dpop = ", "dpop = ");
        let c = Config::parse(&oauth).expect("the example's OAuth keys are valid");
        assert!(matches!(c.okta.auth, OktaAuthConfig::OAuth { .. }));
    }

    #[test]
    fn loopback_http_is_allowed_for_tests() {
        let text = MINIMAL
            .replace("https://acme.okta.com", "http://127.0.0.1:8080")
            .replace(
                "[postman]",
                "[postman]\nscim_url = \"http://localhost:9/scim/v2/\"",
            );
        let c = Config::parse(&text).expect("loopback http is fine");
        assert_eq!(c.postman.scim_url.as_str(), "http://localhost:9/scim/v2");
    }

    #[test]
    fn five_and_six_field_schedules_are_accepted() {
        assert_eq!(
            normalise_schedule("*/15 * * * *").expect("5 fields"),
            "0 */15 * * * *"
        );
        assert_eq!(
            normalise_schedule("30 0 3 * * *").expect("6 fields"),
            "30 0 3 * * *"
        );
        assert!(normalise_schedule("* *").is_err());
    }

    #[test]
    fn secrets_come_from_files_and_are_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "PMAK-secret\n").expect("write");
        let s = SecretSource::File(path)
            .load("postman.api_key_file", "the Postman SCIM API key")
            .expect("read");
        use secrecy::ExposeSecret;
        assert_eq!(s.expose_secret(), "PMAK-secret");
        let missing = SecretSource::File(dir.path().join("nope"))
            .load("postman.api_key_file", "the Postman SCIM API key")
            .expect_err("missing");
        assert!(missing.to_string().contains("postman.api_key_file"));
    }

    #[test]
    fn the_status_token_is_optional_and_read_from_its_file() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(
            c.status_token,
            SecretSource::EnvOrCredential {
                env: STATUS_TOKEN_ENV,
                credential: STATUS_TOKEN_CREDENTIAL
            }
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status-token");
        std::fs::write(&path, "s3cret-status-token-0123456789\n").expect("write");
        let c = Config::parse(&format!(
            "{MINIMAL}\n[server]\nstatus_token_file = {:?}\n",
            path.display().to_string()
        ))
        .expect("valid");
        use secrecy::ExposeSecret;
        let token = c
            .status_token
            .load_optional("server.status_token_file", "the /status token")
            .expect("readable")
            .expect("configured");
        assert_eq!(token.expose_secret(), "s3cret-status-token-0123456789");
        // A configured file that is missing is an error naming the key, not "no token".
        let missing = SecretSource::File(dir.path().join("nope"))
            .load_optional("server.status_token_file", "the /status token")
            .expect_err("missing file");
        assert!(missing.to_string().contains("server.status_token_file"));
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for text in [
            "",
            "[",
            "okta = 1",
            "[okta]\norg_url = 5",
            "\u{0}\u{1}",
            "[[okta]]",
            "[okta]\nmax_rate_share = nan\n",
        ] {
            let _ = Config::parse(text);
        }
    }
}
