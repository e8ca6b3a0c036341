//! The one error type of the Okta client. Each variant carries what an operator needs to act
//! (HTTP status, the endpoint path, Okta's `errorCode`/`errorSummary`/`errorId`, the
//! `X-Okta-Request-Id` to find the call in the System Log) and says whether a retry can help.
//! This module must never hold or print a credential: endpoints are paths only, and nothing here
//! sees a request header.

/// What Okta said about a failed call, beyond the status (okta-api.md A6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiErrorDetails {
    /// Okta's `errorCode` (e.g. `E0000011`): the only field Okta supports for flow control (A6).
    pub error_code: Option<String>,
    /// Okta's `errorSummary`: for people, may change over time.
    pub error_summary: Option<String>,
    /// Okta's `errorId`: correlation id to quote to Okta support.
    pub error_id: Option<String>,
    /// The `X-Okta-Request-Id` response header (A1): correlates with System Log events.
    pub request_id: Option<String>,
    /// The `error="…"` of a `WWW-Authenticate` header (e.g. `insufficient_scope`), sent by Okta
    /// on bearer-token failures, sometimes with no JSON body at all (A6).
    pub www_authenticate_error: Option<String>,
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
}

impl OktaError {
    /// Whether retrying the same request can help: 429, 5xx and transport failures can.
    pub fn is_retryable(&self) -> bool {
        match self {
            OktaError::Api { status, .. } => *status == 429 || *status >= 500,
            OktaError::Transport { .. } => true,
            OktaError::Config { .. }
            | OktaError::Decode { .. }
            | OktaError::ForeignNextLink { .. }
            | OktaError::BadNextLink { .. } => false,
        }
    }

    /// Advice for the operator, when the cause is likely on their side.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            OktaError::Api {
                status, endpoint, ..
            } => api_hint(*status, endpoint),
            _ => None,
        }
    }

    /// The HTTP status, when Okta answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            OktaError::Api { status, .. } | OktaError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn api_hint(status: u16, endpoint: &str) -> Option<&'static str> {
    match status {
        // okta-api.md A4.1: SSWS tokens expire after 30 days unused.
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
    if let Some(e) = &d.www_authenticate_error {
        s.push_str(&format!(" (WWW-Authenticate error={e})"));
    }
    let ids = [
        d.error_id.as_deref().map(|v| ("errorId", v)),
        d.request_id.as_deref().map(|v| ("X-Okta-Request-Id", v)),
    ];
    for (name, value) in ids.into_iter().flatten() {
        s.push_str(&format!(" [{name} {value}]"));
    }
    if let Some(hint) = api_hint(status, endpoint) {
        s.push_str(&format!(". Hint: {hint}"));
    }
    s
}
