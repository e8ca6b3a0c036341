//! Where secrets come from: a `*_file` key, else an environment variable, else a systemd
//! credential in `$CREDENTIALS_DIRECTORY`. Secrets never live in the TOML. A source is resolved to
//! a value only by [`SecretSource::load`], when a command needs it; values are `SecretString`s,
//! so they never reach `Debug` output or logs. This module must not decide which secret a
//! command needs (that is [`crate::bootstrap`]).

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::ConfigError;

/// Environment variables that carry secrets when the `*_file` keys are not set.
pub const OKTA_TOKEN_ENV: &str = "OKTA_API_TOKEN";
pub const POSTMAN_KEY_ENV: &str = "POSTMAN_SCIM_API_KEY";
/// Names of the systemd credentials (`LoadCredential=`) read from `$CREDENTIALS_DIRECTORY`.
pub const OKTA_TOKEN_CREDENTIAL: &str = "okta-api-token";
pub const POSTMAN_KEY_CREDENTIAL: &str = "postman-scim-api-key";
/// The OAuth service app's private key (PEM), when `okta.private_key_file` is not set.
pub const OKTA_PRIVATE_KEY_ENV: &str = "OKTA_OAUTH_PRIVATE_KEY";
pub const OKTA_PRIVATE_KEY_CREDENTIAL: &str = "okta-oauth-private-key";
/// The bearer token that unlocks the details of `GET /status`, when `server.status_token_file`
/// is not set. Optional: without any of the three, `/status` shows counts only.
pub const STATUS_TOKEN_ENV: &str = "OKTA_POSTMAN_SYNC_STATUS_TOKEN";
pub const STATUS_TOKEN_CREDENTIAL: &str = "status-token";
/// The Okta Event Hook's `Authorization` value (issue 14).
pub const EVENT_HOOK_SECRET_ENV: &str = "OKTA_EVENT_HOOK_SECRET";
pub const EVENT_HOOK_SECRET_CREDENTIAL: &str = "okta-event-hook-secret";

/// Where a secret comes from; resolved to a value only by [`SecretSource::load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// Environment variable, then `$CREDENTIALS_DIRECTORY/<credential>`.
    EnvOrCredential {
        env: &'static str,
        credential: &'static str,
    },
}

impl SecretSource {
    /// Reads the secret. `key` names the config key for error messages.
    pub fn load(&self, key: &'static str, what: &'static str) -> Result<SecretString, ConfigError> {
        match self {
            SecretSource::File(path) => read_secret_file(key, path),
            SecretSource::EnvOrCredential { env, credential } => {
                if let Ok(v) = std::env::var(env) {
                    let v = v.trim().to_string();
                    if !v.is_empty() {
                        return Ok(SecretString::from(v));
                    }
                }
                if let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY") {
                    let path = Path::new(&dir).join(credential);
                    if path.exists() {
                        return read_secret_file(key, &path);
                    }
                }
                Err(ConfigError::MissingSecret {
                    what,
                    fix: format!(
                        "set `{key}` to a file holding it, or the environment variable {env}, \
                         or provide the systemd credential `{credential}` (LoadCredential=)"
                    ),
                })
            }
        }
    }
}

impl SecretSource {
    /// Like [`SecretSource::load`] for a secret that may be absent: `None` when the source is
    /// the environment/credential pair and neither is there. A configured file that cannot be
    /// read, or is empty, is still an error.
    pub fn load_optional(
        &self,
        key: &'static str,
        what: &'static str,
    ) -> Result<Option<SecretString>, ConfigError> {
        match self.load(key, what) {
            Ok(s) => Ok(Some(s)),
            Err(ConfigError::MissingSecret { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn read_secret_file(key: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("the file {} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(text.to_string()))
}
