//! `check`: the product document's "Test API credentials" step for both sides, with no writes.
//! Okta: the token (or the OAuth service app) is valid and may read the app, its users and its
//! groups; for a service app it names the setup problem. Postman: the SCIM key
//! is accepted (`/ServiceProviderConfig` and a one-item `/Users`), with the configured auth
//! scheme; when it is refused, the other scheme is tried so the operator learns which one works.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{load_config, print_json, CliError};
use crate::cli::OutputFormat;
use crate::config::{Config, OktaAuthConfig};
use crate::exit::Exit;
use crate::metrics::Metrics;
use crate::okta::{OktaClient, OktaError};
use crate::retry::RetryPolicy;
use crate::scim::{AuthScheme, ScimClient, ScimClientConfig};

#[derive(Debug, Serialize)]
pub struct CheckItem {
    pub side: &'static str,
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub items: Vec<CheckItem>,
}

/// A SCIM client with the configured settings and this auth scheme (the other one is tried when
/// the key is refused).
fn scim_client(
    config: &Config,
    key: secrecy::SecretString,
    scheme: AuthScheme,
    metrics: &Arc<Metrics>,
    retry: &RetryPolicy,
) -> Result<ScimClient, String> {
    let cfg = ScimClientConfig {
        auth_scheme: scheme,
        ..config.postman.client_config(key, retry.clone())
    };
    ScimClient::new(cfg, Arc::clone(metrics)).map_err(|e| e.to_string())
}

/// Runs every check; never writes.
pub async fn check(config: &Config, retry: RetryPolicy) -> CheckReport {
    let metrics = Arc::new(Metrics::new());
    let mut items = Vec::new();

    // Okta.
    let (what, may_read) = match &config.okta.auth {
        OktaAuthConfig::ApiToken { .. } => {
            ("API token", "token may read the app, its users and groups")
        }
        OktaAuthConfig::OAuth { .. } => (
            "OAuth service app",
            "service app may read the app, its users and groups",
        ),
    };
    match crate::bootstrap::okta_client_config(config, retry.clone()) {
        Err(e) => items.push(CheckItem {
            side: "okta",
            check: what.into(),
            ok: false,
            detail: e.to_string(),
        }),
        Ok(okta_config) => {
            let item = match OktaClient::new(okta_config, Arc::clone(&metrics)) {
                Err(e) => CheckItem {
                    side: "okta",
                    check: "client".into(),
                    ok: false,
                    detail: e.to_string(),
                },
                Ok(client) => match client.check().await {
                    Ok(label) => CheckItem {
                        side: "okta",
                        check: may_read.into(),
                        ok: true,
                        detail: format!("app {} ({label})", config.okta.app_id),
                    },
                    Err(e) => CheckItem {
                        side: "okta",
                        check: may_read.into(),
                        ok: false,
                        detail: okta_failure(&e),
                    },
                },
            };
            items.push(item);
            if config.events.system_log {
                items.push(check_system_log(config, retry.clone(), &metrics).await);
            }
        }
    }

    // Postman.
    match config.postman.load_api_key() {
        Err(e) => items.push(CheckItem {
            side: "postman",
            check: "SCIM API key".into(),
            ok: false,
            detail: e.to_string(),
        }),
        Ok(key) => {
            let (scheme, other, name, other_name) = match config.postman.auth_scheme {
                AuthScheme::Raw => (AuthScheme::Raw, AuthScheme::Bearer, "raw", "bearer"),
                AuthScheme::Bearer => (AuthScheme::Bearer, AuthScheme::Raw, "bearer", "raw"),
            };
            match scim_client(config, key.clone(), scheme, &metrics, &retry) {
                Err(e) => items.push(CheckItem {
                    side: "postman",
                    check: "client".into(),
                    ok: false,
                    detail: e,
                }),
                Ok(client) => {
                    let spc = client.service_provider_config().await;
                    let users = match &spc {
                        Ok(()) => client.probe_users().await,
                        Err(_) => Ok(()),
                    };
                    match spc.and(users) {
                        Ok(()) => items.push(CheckItem {
                            side: "postman",
                            check: format!("SCIM key accepted (auth_scheme = \"{name}\")"),
                            ok: true,
                            detail: "GET /ServiceProviderConfig and GET /Users?count=1 succeeded"
                                .into(),
                        }),
                        Err(e) => {
                            let mut detail = crate::sync::describe(&e);
                            if e.status() == Some(401) {
                                if let Ok(alt) = scim_client(config, key, other, &metrics, &retry) {
                                    if alt.probe_users().await.is_ok() {
                                        detail = format!(
                                            "the key is refused with auth_scheme = \"{name}\" but accepted with \"{other_name}\": set [postman] auth_scheme = \"{other_name}\""
                                        );
                                    }
                                }
                            }
                            items.push(CheckItem {
                                side: "postman",
                                check: format!("SCIM key accepted (auth_scheme = \"{name}\")"),
                                ok: false,
                                detail,
                            });
                        }
                    }
                }
            }
        }
    }
    CheckReport {
        ok: items.iter().all(|i| i.ok),
        items,
    }
}

/// What `check` says about an Okta failure: with an OAuth service app, which setup problem it
/// is (unknown client, key not registered, scope not granted, missing admin role) first.
fn okta_failure(e: &OktaError) -> String {
    match (e.oauth_problem(), e) {
        // The token endpoint's refusal already carries the advice.
        (Some(problem), OktaError::TokenRefused { .. }) => format!("{}: {e}", problem.label()),
        (Some(problem), _) => format!("{}: {}. {e}", problem.label(), problem.advice()),
        (None, _) => match e.hint() {
            Some(h) => format!("{e}. {h}"),
            None => e.to_string(),
        },
    }
}

pub fn render(r: &CheckReport) -> String {
    let mut out = String::new();
    for i in &r.items {
        out.push_str(&format!(
            "[{}] {:<7} {}: {}\n",
            if i.ok { " OK " } else { "FAIL" },
            i.side,
            i.check,
            i.detail
        ));
    }
    out.push_str(if r.ok {
        "Both sides pass.\n"
    } else {
        "Some checks failed: see above for what to do.\n"
    });
    out
}

pub async fn run(config_path: &Path, output: OutputFormat) -> Result<Exit, CliError> {
    let config = load_config(config_path)?;
    let report = check(&config, RetryPolicy::default()).await;
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print!("{}", render(&report)),
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Failed })
}

/// `[events] system_log = true` (issue 14): one System Log page, so a missing
/// `okta.logs.read` is found by `check`, not by a warning in the daemon's log.
async fn check_system_log(
    config: &Config,
    retry: RetryPolicy,
    metrics: &Arc<Metrics>,
) -> CheckItem {
    let check = "may read the System Log ([events] system_log)".to_string();
    let client = crate::bootstrap::okta_client_config(config, retry)
        .map_err(|e| e.to_string())
        .and_then(|c| OktaClient::new(c, Arc::clone(metrics)).map_err(|e| e.to_string()));
    let client = match client {
        Ok(c) => c,
        Err(detail) => {
            return CheckItem {
                side: "okta",
                check,
                ok: false,
                detail,
            }
        }
    };
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    match client
        .poll_logs(crate::okta::LogCursor::Since(since), crate::events::EVENT_TYPES)
        .await
    {
        Ok(_) => CheckItem { side: "okta", check, ok: true, detail: "GET /api/v1/logs answered".into() },
        Err(e) if e.status() == Some(403) => CheckItem {
            side: "okta",
            check,
            ok: false,
            detail: "Okta refused the System Log (403): grant the OAuth scope okta.logs.read to the \
                     service app (and add it to [okta] scopes), or use a token whose admin may read \
                     the System Log. Without it the daemon keeps to the schedule alone"
                .into(),
        },
        Err(e) => CheckItem { side: "okta", check, ok: false, detail: okta_failure(&e) },
    }
}
