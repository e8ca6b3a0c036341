//! The one error type of the Okta client. Each variant carries what an operator needs to act
//! (HTTP status, the endpoint path, Okta's `errorCode`/`errorSummary`/`errorId`, the
//! `X-Okta-Request-Id` to find the call in the System Log) and says whether a retry can help.
//! This module must never hold or print a credential: endpoints are paths only, and nothing here
//! sees a request header.

/// What Okta said about a failed call, beyond the status (docs/okta-api.md#errors).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiErrorDetails {
    /// Okta's `errorCode` (e.g. `E0000011`): the only field Okta supports for flow control
    /// (docs/okta-api.md#errors).
    pub error_code: Option<String>,
    /// Okta's `errorSummary`: for people, may change over time.
    pub error_summary: Option<String>,
    /// Okta's `errorId`: correlation id to quote to Okta support.
    pub error_id: Option<String>,
    /// The `X-Okta-Request-Id` response header (docs/okta-api.md#conventions): correlates with
    /// System Log events.
    pub request_id: Option<String>,
    /// The `error="…"` of a `WWW-Authenticate` header (e.g. `insufficient_scope`), sent by Okta
    /// on bearer-token failures, sometimes with no JSON body at all (docs/okta-api.md#errors).
    pub www_authenticate_error: Option<String>,
    /// The `scope="…"` of that header: the scope an `insufficient_scope` answer asks for.
    pub www_authenticate_scope: Option<String>,
    /// Whether the request carried an OAuth access token (not an SSWS token): a 403 then means
    /// a missing admin role or scope on the service app, not on an admin.
    pub via_oauth: bool,
}

/// What is wrong with an OAuth service-app setup, in terms an operator can act on
/// (docs/okta-api.md#oauth-service-apps, #dpop, #errors). `check` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OAuthProblem {
    /// The token endpoint does not know `client_id`.
    UnknownClient,
    /// The assertion's signature or `kid` does not match a public key registered on the app.
    KeyNotRegistered,
    /// `invalid_client` without saying which of the two above.
    InvalidClient,
    /// A scope the daemon needs is not granted to the app, or not requested in `[okta] scopes`.
    ScopeNotGranted { scope: Option<String> },
    /// The service app has no admin role, so its token may not read the app (403 E0000006).
    MissingAdminRole,
    /// Okta refused the DPoP proof or the nonce dance did not converge.
    DpopRejected,
    /// A freshly issued token was refused by the API (401).
    TokenRejected,
    /// Any other refusal of the token endpoint (its `error` code is in the message).
    Other,
}

impl OAuthProblem {
    /// Classifies an answer of the token endpoint. Okta's `error` codes are the OAuth ones;
    /// which `invalid_client` case it is can only be read from `error_description` (e.g.
    /// "Invalid value for the `client_id` parameter", example
    /// `OAuthError401InvalidClient_InvalidClientId` of Okta's OAuth spec,
    /// <https://github.com/okta/okta-management-openapi-spec/blob/fdda229e82940cf5af4611ad673ca6a27974e31b/dist/current/oauth-minimal.yaml>),
    /// so that part is a best guess.
    pub fn from_token_error(status: u16, error: Option<&str>, description: Option<&str>) -> Self {
        let desc = description.unwrap_or("").to_ascii_lowercase();
        match error {
            Some("invalid_client") if desc.contains("client_id") => Self::UnknownClient,
            Some("invalid_client")
                if desc.contains("signature") || desc.contains("kid") || desc.contains("key") =>
            {
                Self::KeyNotRegistered
            }
            Some("invalid_client") => Self::InvalidClient,
            Some("invalid_scope") => Self::ScopeNotGranted {
                scope: scope_named_in(&desc),
            },
            Some("invalid_dpop_proof" | "use_dpop_nonce") => Self::DpopRejected,
            _ if status == 401 => Self::InvalidClient,
            _ => Self::Other,
        }
    }

    /// A short name for `check`: which problem it is.
    pub fn label(&self) -> String {
        match self {
            Self::UnknownClient => "unknown client".to_string(),
            Self::KeyNotRegistered => "key not registered (wrong kid or key)".to_string(),
            Self::InvalidClient => {
                "client refused (unknown client or key not registered)".to_string()
            }
            Self::ScopeNotGranted { scope: Some(s) } => format!("scope not granted: {s}"),
            Self::ScopeNotGranted { scope: None } => "scope not granted".to_string(),
            Self::MissingAdminRole => "missing admin role".to_string(),
            Self::DpopRejected => "DPoP proof refused".to_string(),
            Self::TokenRejected => "access token refused".to_string(),
            Self::Other => "token request refused".to_string(),
        }
    }

    /// What the operator should do.
    pub fn advice(&self) -> String {
        match self {
            Self::UnknownClient => "Okta does not know this client: set [okta] client_id to the \
                Client ID of the API Services app (Applications > the app > General)"
                .to_string(),
            Self::KeyNotRegistered => "the client assertion is not signed by a key registered \
                on the app: add the public key of okta.private_key_file under Client \
                Credentials > Public Keys, and set [okta] key_id to the KID Okta shows for it"
                .to_string(),
            Self::InvalidClient => "Okta refused the client: check [okta] client_id, and that \
                the public key of okta.private_key_file is registered on the app with the \
                [okta] key_id"
                .to_string(),
            Self::ScopeNotGranted { scope: Some(scope) } => format!(
                "the scope {scope} is not granted: grant it on the app's Okta API Scopes tab \
                 and list it in [okta] scopes"
            ),
            Self::ScopeNotGranted { scope: None } => "a requested scope is not granted: grant \
                every scope of [okta] scopes on the app's Okta API Scopes tab"
                .to_string(),
            Self::MissingAdminRole => "the service app has no admin role that may read this \
                app: assign it the Read-only Administrator role (the app > Admin roles)"
                .to_string(),
            Self::DpopRejected => "Okta refused the DPoP proof: check the clocks (iat) and the \
                org_url (htu); see the README's DPoP section"
                .to_string(),
            Self::TokenRejected => "Okta refused a freshly issued access token: check org_url \
                and that the app is active"
                .to_string(),
            Self::Other => "see Okta's error above; the README's OAuth section lists the setup \
                steps"
                .to_string(),
        }
    }
}

/// `okta.<word>.<word>` inside a text, if one is there.
fn scope_named_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .find(|w| w.starts_with("okta.") && w.matches('.').count() >= 2)
        .map(str::to_string)
}

/// Why talking to Okta failed.
#[derive(Debug, thiserror::Error)]
pub enum OktaError {
    /// The client configuration cannot work (bad URL, app id, limits).
    #[error("invalid Okta client configuration: {reason}")]
    Config { reason: String },

    /// Okta answered with a non-success status.
    #[error("{}", describe_api(*.status, .endpoint, .details))]
    Api {
        status: u16,
        /// Path of the request, without query string.
        endpoint: String,
        details: Box<ApiErrorDetails>,
    },

    /// No usable answer: connection refused or reset, timeout, or the body broke off mid-read.
    #[error("could not talk to Okta for {endpoint}: {kind}")]
    Transport {
        endpoint: String,
        /// Short description: "timed out", "connection failed", "response body broke off", ...
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },

    /// Okta (or something in between, such as a proxy's HTML page) answered 2xx with a body this
    /// client cannot read: not JSON, truncated, or JSON of the wrong shape.
    #[error("the answer to {endpoint} (HTTP {status}) could not be read: {detail}")]
    Decode {
        endpoint: String,
        status: u16,
        detail: String,
    },

    /// A `Link: rel="next"` pointed at another origin than `org_url`. Following it would send the
    /// API token to that host, so the read stops instead.
    #[error(
        "Okta's next-page link for {endpoint} points at {origin}, not at the configured org_url; \
         refusing to follow it so the API token is not sent elsewhere"
    )]
    ForeignNextLink { endpoint: String, origin: String },

    /// A `Link: rel="next"` that is not a URL, or that leads back to the page just read.
    #[error("Okta's next-page link for {endpoint} is unusable: {detail}")]
    BadNextLink { endpoint: String, detail: String },

    /// The OAuth token endpoint (`/oauth2/v1/token`) refused to issue an access token. Carries
    /// Okta's OAuth `error` and `error_description`, never the assertion.
    #[error("{}", describe_token(*.status, .error.as_deref(), .description.as_deref(), .problem))]
    TokenRefused {
        status: u16,
        error: Option<String>,
        description: Option<String>,
        problem: OAuthProblem,
    },

    /// An answer larger than the client's cap on a response body: refused from its
    /// `Content-Length`, or stopped at the cap while streaming. Not retried: a server (or a
    /// proxy in front of it) that sent this once sends it again.
    #[error(
        "Okta's answer to {endpoint} (HTTP {status}) {}; the read was abandoned. Okta's pages \
         stay far below this (500 app users are about 1.5 MB): check for a proxy or gateway \
         between this host and org_url that answers in Okta's place, or lower [okta] page_size \
         if app user profiles are very large",
        describe_size(*.declared, *.cap)
    )]
    TooLarge {
        endpoint: String,
        status: u16,
        /// The `Content-Length` the server declared, when it declared one above the cap.
        declared: Option<u64>,
        cap: usize,
    },

    /// The client assertion or a DPoP proof could not be signed.
    #[error("OAuth signing failed: {reason}")]
    Signing { reason: String },
}

impl OktaError {
    /// Whether retrying the same request can help: 429, 5xx and transport failures can.
    pub fn is_retryable(&self) -> bool {
        match self {
            OktaError::Api { status, .. } => *status == 429 || *status >= 500,
            OktaError::Transport { .. } => true,
            OktaError::TokenRefused { status, .. } => *status == 429 || *status >= 500,
            OktaError::Config { .. }
            | OktaError::Signing { .. }
            | OktaError::Decode { .. }
            | OktaError::TooLarge { .. }
            | OktaError::ForeignNextLink { .. }
            | OktaError::BadNextLink { .. } => false,
        }
    }

    /// Advice for the operator, when the cause is likely on their side.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            OktaError::Api {
                status,
                endpoint,
                details,
            } => api_hint(*status, endpoint, details),
            _ => None,
        }
    }

    /// The OAuth setup problem behind this error, when the client uses an OAuth service app.
    pub fn oauth_problem(&self) -> Option<OAuthProblem> {
        match self {
            OktaError::TokenRefused { problem, .. } => Some(problem.clone()),
            OktaError::Api {
                status, details, ..
            } if details.via_oauth => match (*status, details.www_authenticate_error.as_deref()) {
                (403, Some("insufficient_scope")) => Some(OAuthProblem::ScopeNotGranted {
                    scope: details.www_authenticate_scope.clone(),
                }),
                (403, _) => Some(OAuthProblem::MissingAdminRole),
                (401, Some("invalid_dpop_proof" | "use_dpop_nonce")) => {
                    Some(OAuthProblem::DpopRejected)
                }
                (401, _) => Some(OAuthProblem::TokenRejected),
                _ => None,
            },
            _ => None,
        }
    }

    /// The HTTP status, when Okta answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            OktaError::Api { status, .. }
            | OktaError::Decode { status, .. }
            | OktaError::TooLarge { status, .. }
            | OktaError::TokenRefused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn describe_size(declared: Option<u64>, cap: usize) -> String {
    let limit = if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
        format!("{} MiB", cap >> 20)
    } else {
        format!("{cap}-byte")
    };
    match declared {
        Some(n) => format!(
            "declares {n} bytes, more than the {limit} limit on a response body (nothing was \
             read)"
        ),
        None => format!(
            "is longer than the {limit} limit on a response body (reading stopped at the \
             limit)"
        ),
    }
}

fn api_hint(status: u16, endpoint: &str, d: &ApiErrorDetails) -> Option<&'static str> {
    match status {
        403 if d.via_oauth && d.www_authenticate_error.as_deref() == Some("insufficient_scope") => Some(
            "grant the scope named in WWW-Authenticate to the service app (Okta API Scopes tab) \
             and list it in [okta] scopes",
        ),
        401 if d.via_oauth => Some("Okta refused the OAuth access token even after a refresh"),
        403 if d.via_oauth => Some(
            "the service app lacks an admin role that may read the app (assign Read-only \
             Administrator)",
        ),
        // SSWS tokens expire after 30 days unused (docs/okta-api.md#api-tokens-ssws).
        401 => Some("check the API token (expired after 30 days unused? revoked?)"),
        403 => Some(
            "the token's admin lacks read access to the app (needs Read-only Admin or app admin)",
        ),
        // Every app endpoint we call sits under /api/v1/apps/{appId}: a 404 there means the
        // app id does not name an app of this org.
        404 if endpoint.starts_with("/api/v1/apps/") => Some("check [okta] app_id"),
        _ => None,
    }
}

fn describe_api(status: u16, endpoint: &str, d: &ApiErrorDetails) -> String {
    let mut s = format!("Okta answered HTTP {status} to GET {endpoint}");
    match (&d.error_code, &d.error_summary) {
        (Some(code), Some(summary)) => s.push_str(&format!(": {code} {summary}")),
        (Some(code), None) => s.push_str(&format!(": {code}")),
        (None, Some(summary)) => s.push_str(&format!(": {summary}")),
        (None, None) => {}
    }
    match (&d.www_authenticate_error, &d.www_authenticate_scope) {
        (Some(e), Some(scope)) => {
            s.push_str(&format!(" (WWW-Authenticate error={e}, scope={scope})"))
        }
        (Some(e), None) => s.push_str(&format!(" (WWW-Authenticate error={e})")),
        _ => {}
    }
    let ids = [
        d.error_id.as_deref().map(|v| ("errorId", v)),
        d.request_id.as_deref().map(|v| ("X-Okta-Request-Id", v)),
    ];
    for (name, value) in ids.into_iter().flatten() {
        s.push_str(&format!(" [{name} {value}]"));
    }
    if let Some(hint) = api_hint(status, endpoint, d) {
        s.push_str(&format!(". Hint: {hint}"));
    }
    s
}

fn describe_token(
    status: u16,
    error: Option<&str>,
    description: Option<&str>,
    problem: &OAuthProblem,
) -> String {
    let mut s = format!("Okta's token endpoint refused an access token (HTTP {status}");
    if let Some(e) = error {
        s.push_str(&format!(", {e}"));
    }
    s.push(')');
    if let Some(d) = description {
        s.push_str(&format!(": {d}"));
    }
    s.push_str(&format!(". {}", problem.advice()));
    s
}
