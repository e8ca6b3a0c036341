//! OAuth 2.0 service-app authentication for the Okta client (okta-api.md A4.2, A4.3): the
//! client-credentials grant with a `private_key_jwt` client assertion, DPoP-bound tokens when the
//! app requires them (or when forced), a cached access token refreshed before it expires, and the
//! token endpoint's own rate limit (A5: 4 requests per second).
//!
//! It owns the private key, the per-process DPoP key and the access token, and must never let
//! any of them reach `Debug` output, logs or errors: errors carry only Okta's OAuth `error` and
//! `error_description`. All signing goes through `jsonwebtoken` (ring); the DPoP key is generated
//! by ring. It does not decide what a rejected API call means: `mod.rs` asks it to refresh.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use super::error::{OAuthProblem, OktaError};
use super::wire;
use crate::metrics::Metrics;
use crate::retry::{retry, Attempt, RetryPolicy};

/// The scopes requested when the config names none (okta-api.md A4.2, C "Auth"): the three reads
/// the daemon makes. `okta.logs.read` is added only by features that read the System Log.
pub const DEFAULT_SCOPES: [&str; 3] = ["okta.apps.read", "okta.users.read", "okta.groups.read"];

/// `client_assertion_type` of a `private_key_jwt` assertion (A4.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion. Okta rejects one that expires more than an hour ahead (A4.2);
/// a few minutes covers any clock skew and is single-use anyway (`jti`).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// Refresh a token this long before it expires (C "Auth": `expires_in - 60 s`), or at half its
/// lifetime when it is shorter than two minutes.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Token requests per second: Okta's per-user limit on `/oauth2/v1/token` (A5).
const TOKEN_REQUESTS_PER_SECOND: u32 = 4;
/// Requests in one token fetch: plain, then with a DPoP proof, then with a nonce, then with a
/// rotated nonce (A4.3).
const MAX_CHALLENGES: usize = 4;

/// The OAuth service app the client authenticates as.
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// The service app's client id (`0oa...`): `iss` and `sub` of the client assertion.
    pub client_id: String,
    /// PEM private key (RSA, or EC P-256/P-384 in PKCS#8) whose public half is registered on
    /// the app.
    pub private_key_pem: SecretString,
    /// The `kid` Okta shows for the registered public key; sent in the assertion header.
    pub key_id: Option<String>,
    /// Okta scopes to request, e.g. [`DEFAULT_SCOPES`].
    pub scopes: Vec<String>,
    /// Send DPoP proofs from the first token request instead of waiting for Okta to ask.
    pub force_dpop: bool,
}

/// What a request needs to authenticate: the `Authorization` value, a DPoP proof when the token
/// is DPoP-bound, and which token was used (so a 401 refreshes only that one).
pub(super) struct Credential {
    pub authorization: HeaderValue,
    pub dpop: Option<HeaderValue>,
    pub generation: u64,
}

/// Issues access tokens and DPoP proofs. One per client.
pub(super) struct TokenSource {
    token_url: Url,
    client_id: String,
    key: EncodingKey,
    alg: Algorithm,
    key_id: Option<String>,
    scope: String,
    /// The cached token; the async lock makes concurrent callers wait for one fetch.
    state: tokio::sync::Mutex<TokenState>,
    /// Set once DPoP is in use (forced, or asked for by Okta); kept for the process lifetime.
    dpop: Mutex<Option<Arc<DpopKey>>>,
    limiter: DefaultDirectRateLimiter,
}

#[derive(Default)]
struct TokenState {
    current: Option<Cached>,
    generation: u64,
    /// The last `dpop-nonce` the token endpoint gave (A4.3).
    nonce: Option<String>,
}

struct Cached {
    token: SecretString,
    dpop: bool,
    refresh_at: Instant,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_id", &self.client_id)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(org_url: &Url, settings: &OAuthSettings) -> Result<Self, OktaError> {
        let mut token_url = org_url.clone();
        token_url.set_path("/oauth2/v1/token");
        let (key, alg) = load_private_key(&settings.private_key_pem)?;
        let dpop = if settings.force_dpop {
            Some(Arc::new(DpopKey::generate()?))
        } else {
            None
        };
        // Evenly spaced, no burst: at most 4 in any one-second window, however Okta aligns it.
        let quota = Quota::with_period(Duration::from_secs(1) / TOKEN_REQUESTS_PER_SECOND)
            .expect("the token request period is above zero")
            .allow_burst(NonZeroU32::MIN);
        Ok(Self {
            token_url,
            client_id: settings.client_id.clone(),
            key,
            alg,
            key_id: settings.key_id.clone(),
            scope: settings.scopes.join(" "),
            state: tokio::sync::Mutex::new(TokenState::default()),
            dpop: Mutex::new(dpop),
            limiter: RateLimiter::direct(quota),
        })
    }

    /// The credential for one API request (`method` to `url`), fetching a token first when none
    /// is cached or the cached one is due for refresh.
    pub async fn credential(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        metrics: &Metrics,
        method: &str,
        url: &Url,
    ) -> Result<Credential, OktaError> {
        let mut state = self.state.lock().await;
        let fresh = state
            .current
            .as_ref()
            .is_some_and(|c| Instant::now() < c.refresh_at);
        if !fresh {
            let cached = self.fetch(http, policy, metrics, &mut state).await?;
            state.generation += 1;
            state.current = Some(cached);
        }
        let generation = state.generation;
        let cached = state
            .current
            .as_ref()
            .expect("a token was cached just above");
        let token = cached.token.expose_secret();
        let (scheme, dpop) = if cached.dpop {
            let key = self.dpop_key().ok_or_else(|| OktaError::Signing {
                reason: "a DPoP-bound token without a DPoP key".to_string(),
            })?;
            let proof = key.proof(method, url, Some(token), None, unix_now())?;
            (
                "DPoP",
                Some(
                    HeaderValue::from_str(&proof).map_err(|_| OktaError::Signing {
                        reason: "the DPoP proof is not a valid header value".to_string(),
                    })?,
                ),
            )
        } else {
            ("Bearer", None)
        };
        let mut authorization =
            HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| OktaError::Decode {
                endpoint: self.token_url.path().to_string(),
                status: 200,
                detail: "the access token has characters not allowed in an HTTP header".to_string(),
            })?;
        authorization.set_sensitive(true);
        Ok(Credential {
            authorization,
            dpop,
            generation,
        })
    }

    /// Forgets the token of `generation` (Okta rejected it), so the next request fetches a new
    /// one. A newer token, fetched meanwhile by another request, is kept.
    pub async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation {
            state.current = None;
        }
    }

    fn dpop_key(&self) -> Option<Arc<DpopKey>> {
        self.dpop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The DPoP key, generating it the first time Okta asks for DPoP.
    fn enable_dpop(&self) -> Result<Arc<DpopKey>, OktaError> {
        let mut slot = self.dpop.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = slot.as_ref() {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(DpopKey::generate()?);
        *slot = Some(Arc::clone(&key));
        tracing::info!("Okta requires DPoP for this service app: using DPoP-bound tokens");
        Ok(key)
    }

    /// Fetches a token with the shared retry loop (429 waits for the window's reset, 5xx and
    /// transport failures back off); OAuth refusals are permanent.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        metrics: &Metrics,
        state: &mut TokenState,
    ) -> Result<Cached, OktaError> {
        let state = Mutex::new(state);
        retry(policy, metrics, "okta", || async {
            let nonce = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .nonce
                .clone();
            let (result, new_nonce) = self.fetch_once(http, metrics, policy, nonce).await;
            if new_nonce.is_some() {
                state.lock().unwrap_or_else(PoisonError::into_inner).nonce = new_nonce;
            }
            result
        })
        .await
    }

    /// One token fetch, following Okta's DPoP challenges: `invalid_dpop_proof` (the app needs
    /// DPoP) and `use_dpop_nonce` (send the nonce from the `dpop-nonce` header), A4.3. Each
    /// request gets a fresh assertion and proof, as Okta's Go SDK does (A4.2). Returns the
    /// latest nonce seen so later fetches start with it.
    async fn fetch_once(
        &self,
        http: &reqwest::Client,
        metrics: &Metrics,
        policy: &RetryPolicy,
        mut nonce: Option<String>,
    ) -> (Result<Cached, Attempt<OktaError>>, Option<String>) {
        let mut seen_nonce = None;
        for _ in 0..MAX_CHALLENGES {
            let outcome = self.request(http, metrics, policy, nonce.as_deref()).await;
            match outcome {
                Step::Done(cached) => return (Ok(cached), seen_nonce),
                Step::Failed(attempt) => return (Err(attempt), seen_nonce),
                Step::NeedDpop => {
                    if self.dpop_key().is_some() {
                        // Already sending proofs: Okta rejects them.
                        return (
                            Err(Attempt::Permanent(refused(
                                400,
                                Some("invalid_dpop_proof".to_string()),
                                Some("Okta rejected the DPoP proof".to_string()),
                            ))),
                            seen_nonce,
                        );
                    }
                    if let Err(e) = self.enable_dpop() {
                        return (Err(Attempt::Permanent(e)), seen_nonce);
                    }
                }
                Step::UseNonce(n) => {
                    nonce = Some(n.clone());
                    seen_nonce = Some(n);
                }
            }
        }
        let err = refused(
            400,
            Some("use_dpop_nonce".to_string()),
            Some("Okta kept asking for a new DPoP nonce".to_string()),
        );
        (Err(Attempt::Permanent(err)), seen_nonce)
    }

    async fn request(
        &self,
        http: &reqwest::Client,
        metrics: &Metrics,
        policy: &RetryPolicy,
        nonce: Option<&str>,
    ) -> Step {
        let endpoint = self.token_url.path();
        let now = unix_now();
        let assertion = match self.assertion(now) {
            Ok(a) => a,
            Err(e) => return Step::Failed(Attempt::Permanent(e)),
        };
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", self.scope.as_str()),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        let dpop_key = self.dpop_key();
        let mut req = http.post(self.token_url.clone()).form(&form);
        if let Some(key) = &dpop_key {
            match key.proof("POST", &self.token_url, None, nonce, now) {
                Ok(proof) => req = req.header("DPoP", proof),
                Err(e) => return Step::Failed(Attempt::Permanent(e)),
            }
        }
        self.limiter.until_ready().await;
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                metrics.okta_request(0);
                return Step::Failed(super::transport_attempt(endpoint, e));
            }
        };
        let status = response.status();
        metrics.okta_request(status.as_u16());
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return match serde_json::from_slice::<wire::TokenResponse>(&body) {
                Ok(t) => self.cached(t, dpop_key.is_some()),
                Err(e) => Step::Failed(Attempt::Permanent(OktaError::Decode {
                    endpoint: endpoint.to_string(),
                    status: status.as_u16(),
                    detail: format!(
                        "not a token response ({}; {e})",
                        headers
                            .get(CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("no Content-Type")
                    ),
                })),
            };
        }
        let parsed: wire::OAuthErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        match parsed.error.as_deref() {
            Some("use_dpop_nonce") => {
                if let Some(n) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
                    return Step::UseNonce(n.to_string());
                }
            }
            Some("invalid_dpop_proof") if dpop_key.is_none() => return Step::NeedDpop,
            _ => {}
        }
        let err = refused(status.as_u16(), parsed.error, parsed.error_description);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
                .then(|| {
                    super::ratelimit::RateHeaders::from_headers(&headers).map(|r| {
                        super::ratelimit::reset_wait(
                            r.reset,
                            super::ratelimit::server_date(&headers),
                            chrono::Utc::now(),
                            policy.max_wait,
                        )
                    })
                })
                .flatten();
            return Step::Failed(Attempt::Transient { err, retry_after });
        }
        Step::Failed(Attempt::Permanent(err))
    }

    fn cached(&self, t: wire::TokenResponse, proofed: bool) -> Step {
        let Some(token) = t.access_token.filter(|t| !t.is_empty()) else {
            return Step::Failed(Attempt::Permanent(OktaError::Decode {
                endpoint: self.token_url.path().to_string(),
                status: 200,
                detail: "the token response has no access_token".to_string(),
            }));
        };
        let dpop = match t.token_type.as_deref() {
            Some(tt) if tt.eq_ignore_ascii_case("dpop") => true,
            Some(tt) if tt.eq_ignore_ascii_case("bearer") => false,
            _ => proofed,
        };
        // Okta's tokens last an hour (A4.2); trust `expires_in` when present.
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
        Step::Done(Cached {
            token: SecretString::from(token),
            dpop,
            refresh_at: Instant::now() + refresh_after(lifetime),
        })
    }

    /// The signed client assertion (A4.2 claims table).
    fn assertion(&self, now: u64) -> Result<String, OktaError> {
        let claims = assertion_claims(&self.client_id, self.token_url.as_str(), now);
        let mut header = Header::new(self.alg);
        header.kid = self.key_id.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| OktaError::Signing {
            reason: format!("cannot sign the client assertion: {e}"),
        })
    }
}

enum Step {
    Done(Cached),
    Failed(Attempt<OktaError>),
    NeedDpop,
    UseNonce(String),
}

fn refused(status: u16, error: Option<String>, description: Option<String>) -> OktaError {
    let problem = OAuthProblem::from_token_error(status, error.as_deref(), description.as_deref());
    OktaError::TokenRefused {
        status,
        error,
        description,
        problem,
    }
}

/// How long a token of `lifetime` is used before it is refreshed.
pub(super) fn refresh_after(lifetime: Duration) -> Duration {
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    lifetime.saturating_sub(margin)
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub(super) struct AssertionClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    jti: String,
}

/// `iss` = `sub` = client id, `aud` = the token URL, `iat` = now, a short `exp`, a unique `jti`.
pub(super) fn assertion_claims(client_id: &str, token_url: &str, now: u64) -> AssertionClaims {
    AssertionClaims {
        iss: client_id.to_string(),
        sub: client_id.to_string(),
        aud: token_url.to_string(),
        iat: now,
        exp: now + ASSERTION_LIFETIME.as_secs(),
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

/// Reads a PEM private key: RSA (PKCS#1 or PKCS#8) signs RS256, EC P-256 signs ES256 and P-384
/// ES384 (A4.2 lists these algorithms). A trial signature proves the key works before it is
/// needed.
fn load_private_key(pem: &SecretString) -> Result<(EncodingKey, Algorithm), OktaError> {
    let bytes = pem.expose_secret().as_bytes();
    let candidates: Vec<(EncodingKey, Algorithm)> =
        if let Ok(key) = EncodingKey::from_rsa_pem(bytes) {
            vec![(key, Algorithm::RS256)]
        } else if let Ok(key) = EncodingKey::from_ec_pem(bytes) {
            vec![(key.clone(), Algorithm::ES256), (key, Algorithm::ES384)]
        } else {
            Vec::new()
        };
    for (key, alg) in candidates {
        if jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &key).is_ok() {
            return Ok((key, alg));
        }
    }
    Err(OktaError::Config {
        reason: "the OAuth private key (okta.private_key_file) is not a usable PEM private key: \
                 use an RSA key (\"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\") or an EC \
                 P-256/P-384 key in PKCS#8 (\"BEGIN PRIVATE KEY\"; convert an \"EC PRIVATE KEY\" \
                 with `openssl pkcs8 -topk8 -nocrypt`)"
            .to_string(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `base64url(SHA-256(token))`, the `ath` claim (A4.3).
pub(super) fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// `htu`: the request URL without query or fragment (RFC 9449; A4.3, as Okta's Go SDK does).
pub(super) fn htu(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The per-process DPoP key: an ephemeral EC P-256 key made by ring (ES256).
pub(super) struct DpopKey {
    key: EncodingKey,
    jwk: Jwk,
}

#[derive(Serialize)]
struct ProofClaims<'a> {
    jti: String,
    htm: &'a str,
    htu: String,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl DpopKey {
    pub fn generate() -> Result<Self, OktaError> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let failed = |what: &str| OktaError::Signing {
            reason: format!("cannot create the DPoP key: {what}"),
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| failed("key generation failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| failed("the generated key is unreadable"))?;
        // An uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(failed("unexpected public key encoding"));
        }
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: URL_SAFE_NO_PAD.encode(&point[1..33]),
                y: URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        };
        Ok(Self {
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        })
    }

    /// A fresh proof for one request: `typ: dpop+jwt`, the public `jwk`, and `htm`, `htu`
    /// (without query), `iat`, a unique `jti`, `ath` with a token, `nonce` when given (A4.3).
    pub fn proof(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String, OktaError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".to_string());
        header.jwk = Some(self.jwk.clone());
        let claims = ProofClaims {
            jti: uuid::Uuid::new_v4().to_string(),
            htm: method,
            htu: htu(url),
            iat: now,
            ath: access_token.map(access_token_hash),
            nonce,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| OktaError::Signing {
            reason: format!("cannot sign the DPoP proof: {e}"),
        })
    }
}

/// Sends `Authorization` on a request builder; kept here so the header name stays next to the
/// credential that fills it.
pub(super) fn authorize(
    req: reqwest::RequestBuilder,
    cred: &Credential,
) -> reqwest::RequestBuilder {
    let req = req.header(AUTHORIZATION, cred.authorization.clone());
    match &cred.dpop {
        Some(proof) => req.header("DPoP", proof.clone()),
        None => req,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_a_minute_before_expiry_or_at_half_a_short_lifetime() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn assertion_claims_follow_okta_rules_with_a_unique_jti() {
        let url = "https://acme.okta.com/oauth2/v1/token";
        let a = assertion_claims("0oa1", url, 1_700_000_000);
        let b = assertion_claims("0oa1", url, 1_700_000_000);
        assert_eq!(
            (a.iss.as_str(), a.sub.as_str(), a.aud.as_str()),
            ("0oa1", "0oa1", url)
        );
        assert_eq!(a.iat, 1_700_000_000);
        assert!(
            a.exp > a.iat && a.exp - a.iat <= 3600,
            "short exp, at most an hour"
        );
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn htu_drops_the_query_and_ath_is_base64url_sha256() {
        let url = Url::parse("https://acme.okta.com/api/v1/apps/0oa1/users?limit=500&after=x")
            .expect("url");
        assert_eq!(htu(&url), "https://acme.okta.com/api/v1/apps/0oa1/users");
        // SHA-256("abc"), base64url without padding.
        assert_eq!(
            access_token_hash("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn a_file_that_is_not_a_private_key_is_a_config_error_that_names_the_key() {
        let err = load_private_key(&SecretString::from("not a key".to_string()))
            .err()
            .expect("rejected");
        assert!(err.to_string().contains("okta.private_key_file"), "{err}");
    }

    #[test]
    fn dpop_proofs_carry_the_public_jwk_and_fresh_claims() {
        let key = DpopKey::generate().expect("key");
        let url =
            Url::parse("https://acme.okta.com/api/v1/groups/00g1/users?limit=200").expect("url");
        let proof = key
            .proof("GET", &url, Some("tok"), Some("n1"), 1_700_000_000)
            .expect("proof");
        let header = jsonwebtoken::decode_header(&proof).expect("header");
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        assert!(header.jwk.is_some());
        let payload = proof.split('.').nth(1).expect("payload");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        assert_eq!(claims["htm"], "GET");
        assert_eq!(
            claims["htu"],
            "https://acme.okta.com/api/v1/groups/00g1/users"
        );
        assert_eq!(claims["ath"], access_token_hash("tok"));
        assert_eq!(claims["nonce"], "n1");
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    }

    #[test]
    fn token_endpoint_errors_are_classified_for_the_operator() {
        let c = |status, e: &str, d: &str| OAuthProblem::from_token_error(status, Some(e), Some(d));
        assert_eq!(
            c(
                401,
                "invalid_client",
                "Invalid value for the `client_id` parameter"
            ),
            OAuthProblem::UnknownClient
        );
        assert_eq!(
            c(
                401,
                "invalid_client",
                "The client_assertion signature is invalid."
            ),
            OAuthProblem::KeyNotRegistered
        );
        assert_eq!(
            c(
                400,
                "invalid_scope",
                "The following scopes are not granted: okta.logs.read"
            ),
            OAuthProblem::ScopeNotGranted {
                scope: Some("okta.logs.read".to_string())
            }
        );
        assert_eq!(
            c(400, "invalid_dpop_proof", "x"),
            OAuthProblem::DpopRejected
        );
    }
}
