//! The commands behind the CLI: each loads what it needs, calls the library, prints its result
//! and returns the process exit code. `main.rs` only parses arguments and calls [`run_cli`].

use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, OutputFormat};
use crate::config::{AuthSchemeSetting, Config, ConfigError, OktaAuthConfig};
use crate::engine::{Engine, RunOptions};
use crate::metrics::Metrics;
use crate::okta::{AttributeMapping, OAuthSettings, OktaAuth, OktaClient, OktaClientConfig};
use crate::retry::RetryPolicy;
use crate::scim::{AuthScheme, ScimClient, ScimClientConfig};
use crate::store::StoreHandle;
use crate::store::{StateLock, Store};

/// Exit codes (documented in the README).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_REFUSED: u8 = 3;

/// Builds the API clients and the engine from a validated config. Secrets are read here.
pub fn build_engine(
    config: Arc<Config>,
    store: StoreHandle,
    writable: bool,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
) -> Result<Engine, anyhow::Error> {
    let okta = okta_client_config(&config, retry.clone())?;
    let key = config
        .postman
        .api_key
        .load("postman.api_key_file", "the Postman SCIM API key")?;
    build_engine_with_secrets(config, okta, key, store, writable, metrics, retry)
}

/// Like [`build_engine`], with the secrets already in hand (the demo): the Okta client
/// configuration (which carries its credential) and the Postman SCIM key.
pub fn build_engine_with_secrets(
    config: Arc<Config>,
    okta: OktaClientConfig,
    key: SecretString,
    store: StoreHandle,
    writable: bool,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
) -> Result<Engine, anyhow::Error> {
    let mapping = AttributeMapping {
        user_name: AttributeMapping::parse(
            "okta.mapping.user_name",
            &config.okta.mapping_user_name,
        )?,
        given_name: AttributeMapping::parse(
            "okta.mapping.given_name",
            &config.okta.mapping_given_name,
        )?,
        family_name: AttributeMapping::parse(
            "okta.mapping.family_name",
            &config.okta.mapping_family_name,
        )?,
    };
    let okta = OktaClient::new(okta, Arc::clone(&metrics))?;
    let scim = ScimClient::new(
        ScimClientConfig {
            base_url: config.postman.scim_url.clone(),
            api_key: key,
            auth_scheme: match config.postman.auth_scheme {
                AuthSchemeSetting::Raw => AuthScheme::Raw,
                AuthSchemeSetting::Bearer => AuthScheme::Bearer,
            },
            writes_per_minute: config.postman.writes_per_minute,
            reads_per_minute: config.postman.reads_per_minute,
            timeout: config.postman.timeout,
            retry,
            max_body_bytes: crate::limits::MAX_BODY_BYTES,
        },
        Arc::clone(&metrics),
    )?;
    Ok(Engine {
        config,
        okta,
        scim,
        mapping,
        store,
        metrics,
        writable,
    })
}

/// Reads the Okta credential `[okta] auth` names (the API token, or the OAuth service app's
/// private key) and builds the Okta client's configuration.
pub fn okta_client_config(
    config: &Config,
    retry: RetryPolicy,
) -> Result<OktaClientConfig, ConfigError> {
    Ok(okta_client_config_with(config, okta_auth(config)?, retry))
}

/// Reads the Okta credential `[okta] auth` names.
pub fn okta_auth(config: &Config) -> Result<OktaAuth, ConfigError> {
    Ok(match &config.okta.auth {
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

/// The Okta client's configuration from the config file and a credential in hand.
pub fn okta_client_config_with(
    config: &Config,
    auth: OktaAuth,
    retry: RetryPolicy,
) -> OktaClientConfig {
    OktaClientConfig {
        org_url: config.okta.org_url.clone(),
        app_id: config.okta.app_id.clone(),
        auth,
        page_limit: config.okta.page_size,
        max_rate_share: config.okta.max_rate_share,
        timeout: config.okta.timeout,
        retry,
        max_body_bytes: crate::limits::MAX_BODY_BYTES,
    }
}

/// Cancels the token on SIGINT or SIGTERM.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested: finishing the operations in flight");
        cancel.cancel();
    });
}

fn load_config(path: &Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_CONFIG
    })
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the output as JSON: {e}"),
    }
}

/// Runs the parsed command line; returns the exit code.
pub async fn run_cli(cli: Cli) -> u8 {
    match cli.command {
        Command::Reconcile {
            dry_run,
            full,
            output,
            allow_deactivations,
        } => {
            let opts = RunOptions {
                dry_run,
                full,
                allow_deactivations,
            };
            reconcile(&cli.config, &opts, output).await
        }
        Command::Run => crate::daemon::run_daemon(&cli.config).await,
        Command::Demo { users } => crate::demo::run_demo(users).await,
        Command::Check { output } => crate::check::run_check(&cli.config, output).await,
        Command::Status { output } => crate::status::run_status(&cli.config, output),
    }
}

/// Opens the store for a command: read-only (dry runs), or read-write under the single-writer
/// lock. Errors are printed; the exit code is returned.
pub fn open_store(config: &Config, writable: bool) -> Result<(StoreHandle, Option<StateLock>), u8> {
    let path = &config.sync.state_path;
    if !writable {
        return match Store::open_read_only(path) {
            Ok(Some(s)) => Ok((StoreHandle::new(s), None)),
            Ok(None) => match Store::in_memory() {
                Ok(s) => Ok((StoreHandle::new(s), None)),
                Err(e) => {
                    eprintln!("error: {e}");
                    Err(EXIT_FAILED)
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                Err(EXIT_FAILED)
            }
        };
    }
    let lock = StateLock::acquire(path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    let store = Store::open(path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    Ok((StoreHandle::new(store), Some(lock)))
}

/// Everything a command that runs the engine needs: the validated config, logging, the secrets
/// checked, the store (under the single-writer lock when `writable`) and the engine. Errors are
/// printed; the exit code is returned. The lock lives as long as the returned value.
pub fn prepare_engine(
    config_path: &Path,
    writable: bool,
) -> Result<(Arc<Config>, Engine, Option<StateLock>), u8> {
    let config = Arc::new(load_config(config_path)?);
    crate::telemetry::init(&config.log_level, config.log_format);
    // Secrets are config too: a missing or empty secret file must not create or touch the
    // state file first (build_engine reads them again; they are small files).
    if let Err(e) = okta_auth(&config).and_then(|_| {
        config
            .postman
            .api_key
            .load("postman.api_key_file", "the Postman SCIM API key")
    }) {
        eprintln!("error: {e}");
        return Err(EXIT_CONFIG);
    }
    let (store, lock) = open_store(&config, writable)?;
    let metrics = Arc::new(Metrics::new());
    match build_engine(
        Arc::clone(&config),
        store,
        writable,
        metrics,
        RetryPolicy::default(),
    ) {
        Ok(engine) => Ok((config, engine, lock)),
        Err(e) => {
            eprintln!("error: {e:#}");
            Err(if e.downcast_ref::<ConfigError>().is_some() {
                EXIT_CONFIG
            } else {
                EXIT_FAILED
            })
        }
    }
}

async fn reconcile(config_path: &Path, opts: &RunOptions, output: OutputFormat) -> u8 {
    let (_config, engine, _lock) = match prepare_engine(config_path, !opts.dry_run) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let report = engine.run(opts, &cancel, None).await;
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print!("{}", crate::output::render_run(&report)),
    }
    report.outcome.exit_code()
}
