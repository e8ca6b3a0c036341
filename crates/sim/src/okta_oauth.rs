//! The OAuth 2.0 side of the fake Okta: the org authorization server's token endpoint (`POST
//! /oauth2/v1/token`, client credentials with `private_key_jwt`,
//! docs/okta-api.md#oauth-service-apps), DPoP with the nonce dance (docs/okta-api.md#dpop), and the
//! checks the Management API makes on OAuth access tokens: expiry, DPoP proofs (`htm`, `htu`
//! without query, `ath`, `jti`, `iat`), scopes per endpoint (the `oauth2` security of each
//! operation in Okta's OpenAPI description,
//! <https://github.com/okta/okta-management-openapi-spec/blob/fdda229e82940cf5af4611ad673ca6a27974e31b/dist/current/management-minimal.yaml>),
//! and the service app's admin role. Failures look like Okta's (OAuth `error` bodies on the token
//! endpoint; `WWW-Authenticate` on the API, docs/okta-api.md#errors).
//!
//! It verifies signatures for real (jsonwebtoken, against the JWKs registered per app, as Okta
//! stores them), so tests prove the client's flow, not a stub. It must not share code with
//! the product's `okta` module: it is an independent reading of the documents. It is stricter than Okta in one
//! way, on purpose: a rotated nonce invalidates the previous one at once (Okta keeps the old
//! one for three days, docs/okta-api.md#dpop), so tests can exercise the client's nonce retry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{DecodingKey, Validation};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use super::lock;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far a proof's `iat` may be from now.
const IAT_WINDOW_SECS: i64 = 60;

/// An API Services app registered in the fake org.
#[derive(Clone, Debug)]
pub struct SimServiceApp {
    pub client_id: String,
    /// Registered public keys by `kid` (Okta stores up to 50 JWKs per app,
    /// docs/okta-api.md#oauth-service-apps).
    pub keys: BTreeMap<String, Jwk>,
    /// Okta scopes granted to the app.
    pub granted_scopes: BTreeSet<String>,
    /// Whether the app has an admin role (without one, every API call is 403 E0000006).
    pub admin_role: bool,
    /// "Require DPoP header in token requests" (`dpop_bound_access_tokens`,
    /// docs/okta-api.md#dpop).
    pub require_dpop: bool,
}

impl SimServiceApp {
    /// An app with one key, the three read scopes, a read-only admin role, and no DPoP.
    pub fn new(client_id: &str, kid: &str, public_key: Jwk) -> Self {
        Self {
            client_id: client_id.to_string(),
            keys: BTreeMap::from([(kid.to_string(), public_key)]),
            granted_scopes: ["okta.apps.read", "okta.users.read", "okta.groups.read"]
                .into_iter()
                .map(str::to_string)
                .collect(),
            admin_role: true,
            require_dpop: false,
        }
    }
}

/// Counters of the OAuth side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OAuthStats {
    pub token_requests: u64,
    pub tokens_issued: u64,
    pub dpop_tokens_issued: u64,
    /// `use_dpop_nonce` challenges sent.
    pub nonce_challenges: u64,
    /// Token requests answered 429.
    pub token_rate_limited: u64,
    /// Refusals by OAuth `error` code (token endpoint) or `WWW-Authenticate` error (API).
    pub refusals: BTreeMap<String, u64>,
    /// API requests authenticated with an OAuth access token.
    pub api_requests: u64,
}

struct Issued {
    client_id: String,
    scopes: BTreeSet<String>,
    expires: Instant,
    /// The JWK thumbprint (RFC 7638) of the DPoP key the token is bound to.
    jkt: Option<String>,
}

struct AuthState {
    apps: BTreeMap<String, SimServiceApp>,
    tokens: HashMap<String, Issued>,
    assertion_jtis: HashSet<String>,
    proof_jtis: HashSet<String>,
    nonce: String,
    nonce_seq: u64,
    lifetime: Duration,
    token_limit_per_second: u32,
    window: (Instant, u32),
    stats: OAuthStats,
}

/// The fake's OAuth authorization server and token checks. Reached through
/// `FakeOkta::oauth()`.
pub struct OAuthSim {
    base_url: OnceLock<String>,
    state: Mutex<AuthState>,
}

impl Default for OAuthSim {
    fn default() -> Self {
        Self {
            base_url: OnceLock::new(),
            state: Mutex::new(AuthState {
                apps: BTreeMap::new(),
                tokens: HashMap::new(),
                assertion_jtis: HashSet::new(),
                proof_jtis: HashSet::new(),
                nonce: "sim-nonce-1".to_string(),
                nonce_seq: 1,
                // "The lifetime for this token is fixed at one hour"
                // (docs/okta-api.md#oauth-service-apps).
                lifetime: Duration::from_secs(3600),
                // Per-user limit on /oauth2/v1/token: 4 per second (docs/okta-api.md#rate-limits).
                token_limit_per_second: 4,
                window: (Instant::now(), 0),
                stats: OAuthStats::default(),
            }),
        }
    }
}

impl OAuthSim {
    pub fn register_app(&self, app: SimServiceApp) {
        lock(&self.state).apps.insert(app.client_id.clone(), app);
    }

    /// Changes a registered app (scopes, keys, role, DPoP); no-op for an unknown client.
    pub fn update_app(&self, client_id: &str, f: impl FnOnce(&mut SimServiceApp)) {
        if let Some(app) = lock(&self.state).apps.get_mut(client_id) {
            f(app);
        }
    }

    /// Lifetime (and `expires_in`) of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.state).lifetime = lifetime;
    }

    /// Makes every issued token expire now, as if an hour had passed.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in lock(&self.state).tokens.values_mut() {
            t.expires = now;
        }
    }

    /// Issues a new DPoP nonce; the previous one stops working at once.
    pub fn rotate_nonce(&self) {
        let mut s = lock(&self.state);
        s.nonce_seq += 1;
        s.nonce = format!("sim-nonce-{}", s.nonce_seq);
    }

    pub fn stats(&self) -> OAuthStats {
        lock(&self.state).stats.clone()
    }

    fn token_url(&self) -> String {
        format!(
            "{}/oauth2/v1/token",
            self.base_url.get().map(String::as_str).unwrap_or("")
        )
    }

    /// Judges an API request that carries an OAuth access token (`Bearer` or `DPoP`). `None`
    /// when the request uses another scheme (SSWS), which `okta.rs` judges.
    pub(super) fn authorize(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Result<(), Response>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        let dpop_scheme = match scheme {
            "Bearer" => false,
            "DPoP" => true,
            _ => return None,
        };
        let base = self.base_url.get().cloned().unwrap_or_default();
        let mut s = lock(&self.state);
        s.stats.api_requests += 1;
        let Some(issued) = s.tokens.get(token) else {
            return Some(Err(invalid_token(
                &mut s,
                &base,
                "The access token is invalid.",
            )));
        };
        if Instant::now() >= issued.expires {
            return Some(Err(invalid_token(
                &mut s,
                &base,
                "The access token is expired.",
            )));
        }
        let (client_id, scopes, jkt) = (
            issued.client_id.clone(),
            issued.scopes.clone(),
            issued.jkt.clone(),
        );
        match (jkt, dpop_scheme) {
            (Some(_), false) => {
                return Some(Err(invalid_token(
                    &mut s,
                    &base,
                    "The access token is DPoP-bound: send it as `Authorization: DPoP`.",
                )))
            }
            (None, true) => {
                return Some(Err(invalid_token(
                    &mut s,
                    &base,
                    "The access token is not DPoP-bound.",
                )))
            }
            (Some(bound), true) => {
                let htu = format!("{base}{path}");
                let proof = headers.get("dpop").and_then(|v| v.to_str().ok());
                let checked = match proof {
                    None => Err("The DPoP proof JWT header is missing.".to_string()),
                    Some(p) => verify_proof(&mut s, p, method.as_str(), &htu, Some(token))
                        .and_then(|(jkt, _)| {
                            (jkt == bound).then_some(()).ok_or_else(|| {
                                "The DPoP proof is not signed by the key the token is bound to."
                                    .to_string()
                            })
                        }),
                };
                if let Err(description) = checked {
                    count(&mut s.stats.refusals, "invalid_dpop_proof");
                    let www = format!(
                        "DPoP algs=\"RS256 RS384 RS512 ES256 ES384 ES512\", \
                         authorization_uri=\"{base}/oauth2/v1/authorize\", \
                         realm=\"IdentityProvider\", error=\"invalid_dpop_proof\", \
                         error_description=\"{description}\""
                    );
                    return Some(Err(www_response(StatusCode::UNAUTHORIZED, &www)));
                }
            }
            (None, false) => {}
        }
        if let Some(needed) = scope_for(path) {
            if !scopes.contains(needed) {
                count(&mut s.stats.refusals, "insufficient_scope");
                // The header quoted in https://github.com/okta/okta-sdk-golang/issues/145.
                let www = format!(
                    "Bearer authorization_uri=\"{base}/oauth2/v1/authorize\", \
                     realm=\"IdentityProvider\", scope=\"{needed}\", \
                     error=\"insufficient_scope\", error_description=\"The access token \
                     provided does not contain the required scopes.\", resource=\"{path}\""
                );
                return Some(Err(www_response(StatusCode::FORBIDDEN, &www)));
            }
        }
        let has_role = s.apps.get(&client_id).is_some_and(|a| a.admin_role);
        if !has_role {
            count(&mut s.stats.refusals, "no_admin_role");
            let body = json!({
                "errorCode": "E0000006",
                "errorSummary": "You do not have permission to perform the requested action",
                "errorLink": "E0000006",
                "errorId": "oaeSimNoAdminRole",
                "errorCauses": [],
            });
            return Some(Err((StatusCode::FORBIDDEN, Json(body)).into_response()));
        }
        Some(Ok(()))
    }
}

/// The Okta scope an API path needs: the `oauth2` security of the operations the daemon calls
/// (Okta's OpenAPI description, listed in docs/okta-api.md#sources: listApplicationUsers,
/// listApplicationGroupAssignments and getApplication need `okta.apps.read`; listGroupUsers needs
/// `okta.groups.read`).
fn scope_for(path: &str) -> Option<&'static str> {
    if path.starts_with("/api/v1/apps") {
        Some("okta.apps.read")
    } else if path.starts_with("/api/v1/groups") {
        Some("okta.groups.read")
    } else if path.starts_with("/api/v1/users") {
        Some("okta.users.read")
    } else if path.starts_with("/api/v1/logs") {
        Some("okta.logs.read")
    } else {
        None
    }
}

fn count(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_default() += 1;
}

fn www_response(status: StatusCode, www: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(www) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn invalid_token(s: &mut AuthState, base: &str, description: &str) -> Response {
    count(&mut s.stats.refusals, "invalid_token");
    let www = format!(
        "Bearer authorization_uri=\"{base}/oauth2/v1/authorize\", realm=\"IdentityProvider\", \
         error=\"invalid_token\", error_description=\"{description}\""
    );
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "errorCode": "E0000011",
            "errorSummary": "Invalid token provided",
            "errorLink": "E0000011",
            "errorId": "oaeSimInvalidToken",
            "errorCauses": [],
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&www) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// `POST /oauth2/v1/token`, outside the API's auth middleware.
pub(super) fn router(sim: Arc<OAuthSim>, base_url: &str) -> Router {
    let _ = sim.base_url.set(base_url.to_string());
    Router::new()
        .route("/oauth2/v1/token", post(token))
        .with_state(sim)
}

fn epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn oauth_error(s: &mut AuthState, status: StatusCode, error: &str, description: &str) -> Response {
    count(&mut s.stats.refusals, error);
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(sim): State<Arc<OAuthSim>>, headers: HeaderMap, body: String) -> Response {
    let token_url = sim.token_url();
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut guard = lock(&sim.state);
    let s = &mut *guard;
    s.stats.token_requests += 1;

    // 4 requests per second on /oauth2/v1/token (docs/okta-api.md#rate-limits).
    if s.window.0.elapsed() >= Duration::from_secs(1) {
        s.window = (Instant::now(), 0);
    }
    if s.window.1 >= s.token_limit_per_second {
        s.stats.token_rate_limited += 1;
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "errorCode": "E0000047",
                "errorSummary": "API call exceeded rate limit due to too many requests.",
                "errorLink": "E0000047",
                "errorId": "oaeSimTokenRate",
                "errorCauses": [],
            })),
        )
            .into_response();
        let h = r.headers_mut();
        h.insert(
            "x-rate-limit-limit",
            HeaderValue::from(s.token_limit_per_second),
        );
        h.insert("x-rate-limit-remaining", HeaderValue::from(0));
        h.insert("x-rate-limit-reset", HeaderValue::from(epoch_secs() + 1));
        return r;
    }
    s.window.1 += 1;

    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return oauth_error(
            s,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The grant type in the request isn't supported.",
        );
    }
    let assertion = field("client_assertion");
    if assertion.is_empty() {
        return oauth_error(
            s,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "No client credentials found",
        );
    }
    if field("client_assertion_type") != JWT_BEARER {
        return oauth_error(
            s,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The `client_assertion_type` is invalid.",
        );
    }
    let client_id = match verify_assertion(s, assertion, &token_url) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let app = s
        .apps
        .get(&client_id)
        .cloned()
        .expect("verify_assertion returns registered clients only");
    let requested: BTreeSet<String> = field("scope")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if requested.is_empty() {
        return oauth_error(
            s,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "No scopes were requested.",
        );
    }
    let missing: Vec<&String> = requested.difference(&app.granted_scopes).collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        return oauth_error(
            s,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("The following scopes are not granted to the client: {list}"),
        );
    }

    let proof = headers.get("dpop").and_then(|v| v.to_str().ok());
    let jkt = match proof {
        None if app.require_dpop => {
            return oauth_error(
                s,
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "The DPoP proof JWT header is missing.",
            )
        }
        None => None,
        Some(p) => match verify_proof(s, p, "POST", &token_url, None) {
            Err(description) => {
                return oauth_error(
                    s,
                    StatusCode::BAD_REQUEST,
                    "invalid_dpop_proof",
                    &description,
                )
            }
            Ok((jkt, nonce)) => {
                if nonce.as_deref() != Some(s.nonce.as_str()) {
                    s.stats.nonce_challenges += 1;
                    let mut r = oauth_error(
                        s,
                        StatusCode::BAD_REQUEST,
                        "use_dpop_nonce",
                        "Authorization server requires nonce in DPoP proof.",
                    );
                    if let Ok(v) = HeaderValue::from_str(&s.nonce) {
                        r.headers_mut().insert("dpop-nonce", v);
                    }
                    return r;
                }
                Some(jkt)
            }
        },
    };

    let access_token: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let token_type = if jkt.is_some() { "DPoP" } else { "Bearer" };
    s.stats.tokens_issued += 1;
    if jkt.is_some() {
        s.stats.dpop_tokens_issued += 1;
    }
    let lifetime = s.lifetime;
    s.tokens.insert(
        access_token.clone(),
        Issued {
            client_id,
            scopes: requested.clone(),
            // Tests set absurd lifetimes (u64::MAX seconds): `Instant + Duration` would panic,
            // so the lifetime is clamped to a century (and `now` kept if even that overflows).
            expires: {
                let now = Instant::now();
                now.checked_add(lifetime.min(Duration::from_secs(100 * 365 * 24 * 3600)))
                    .unwrap_or(now)
            },
            jkt,
        },
    );
    Json(json!({
        "token_type": token_type,
        "expires_in": lifetime.as_secs(),
        "access_token": access_token,
        "scope": requested.into_iter().collect::<Vec<_>>().join(" "),
    }))
    .into_response()
}

/// Checks a client assertion (claims: docs/okta-api.md#oauth-service-apps) against the app's
/// registered keys; returns the client id.
fn verify_assertion(
    s: &mut AuthState,
    assertion: &str,
    token_url: &str,
) -> Result<String, Box<Response>> {
    let invalid = |s: &mut AuthState, d: &str| {
        Box::new(oauth_error(
            s,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            d,
        ))
    };
    okta_postman_sync_jwt_ring::install();
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return Err(invalid(s, "The client_assertion is not a valid JWT."));
    };
    // Which client: read `iss` before verifying, as a server must to find the keys.
    let claimed = assertion
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("iss").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let Some(app) = s.apps.get(&claimed).cloned() else {
        return Err(invalid(s, "Invalid value for the `client_id` parameter"));
    };
    let keys: Vec<&Jwk> = match &header.kid {
        Some(kid) => match app.keys.get(kid) {
            Some(k) => vec![k],
            None => return Err(invalid(
                s,
                "The client_assertion token has a kid which does not identify a registered key.",
            )),
        },
        None => app.keys.values().collect(),
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[&app.client_id]);
    validation.sub = Some(app.client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 5;
    let mut last = "The client_assertion signature is invalid.".to_string();
    for jwk in keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
            Ok(data) => {
                let now = epoch_secs();
                let claims = data.claims;
                let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
                if exp > now + 3600 {
                    return Err(invalid(
                        s,
                        "The client_assertion token has an expiration too far in the future.",
                    ));
                }
                match claims.get("iat").and_then(Value::as_i64) {
                    Some(iat) if iat <= now + 5 => {}
                    _ => {
                        return Err(invalid(
                            s,
                            "The client_assertion token must have an iat before the request.",
                        ))
                    }
                }
                let Some(jti) = claims.get("jti").and_then(Value::as_str) else {
                    return Err(invalid(s, "The client_assertion token has no jti."));
                };
                if !s.assertion_jtis.insert(jti.to_string()) {
                    return Err(invalid(
                        s,
                        "The client_assertion token has already been used (jti).",
                    ));
                }
                return Ok(app.client_id.clone());
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                last = match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_) => {
                        "The client_assertion signature is invalid.".to_string()
                    }
                    ErrorKind::ExpiredSignature => "The client_assertion token is expired.".to_string(),
                    ErrorKind::InvalidAudience => "The audience claim for client_assertion must be the endpoint invoking the client_assertion.".to_string(),
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                        "The issuer and subject of the client_assertion must be the client_id.".to_string()
                    }
                    other => format!("The client_assertion token is invalid ({other:?})."),
                };
            }
        }
    }
    Err(invalid(s, &last))
}

/// Checks a DPoP proof (docs/okta-api.md#dpop; RFC 9449 4.3): `typ`, the embedded `jwk` and the
/// signature, `htm`, `htu`, a fresh `iat`, a unique `jti`, and `ath` when a token is presented.
/// Returns the key's thumbprint and the proof's `nonce`.
fn verify_proof(
    s: &mut AuthState,
    proof: &str,
    htm: &str,
    htu: &str,
    token: Option<&str>,
) -> Result<(String, Option<String>), String> {
    okta_postman_sync_jwt_ring::install();
    let header = jsonwebtoken::decode_header(proof)
        .map_err(|_| "The DPoP proof is not a JWT.".to_string())?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err("The DPoP proof must have typ dpop+jwt.".to_string());
    }
    let jwk = header
        .jwk
        .ok_or_else(|| "The DPoP proof has no jwk header.".to_string())?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "The DPoP jwk is unusable.".to_string())?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
        .map_err(|_| "The DPoP proof signature is invalid.".to_string())?
        .claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    if text("htm").as_deref() != Some(htm) {
        return Err("'htm' claim in the DPoP proof JWT is invalid.".to_string());
    }
    if text("htu").as_deref() != Some(htu) {
        // The wording quoted in https://github.com/okta/okta-sdk-nodejs/issues/453.
        return Err("'htu' claim in the DPoP proof JWT is invalid.".to_string());
    }
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
    if (epoch_secs() - iat).abs() > IAT_WINDOW_SECS {
        return Err("'iat' claim in the DPoP proof JWT is invalid.".to_string());
    }
    if let Some(token) = token {
        let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            token.as_bytes(),
        ));
        if text("ath").as_deref() != Some(expected.as_str()) {
            return Err("'ath' claim in the DPoP proof JWT is invalid.".to_string());
        }
    }
    let jti = text("jti").ok_or_else(|| "The DPoP proof has no jti.".to_string())?;
    if !s.proof_jtis.insert(jti) {
        return Err("The DPoP proof jti has already been used.".to_string());
    }
    Ok((thumbprint(&jwk)?, text("nonce")))
}

/// RFC 7638 JWK thumbprint: SHA-256 of the required members in lexicographic order.
fn thumbprint(jwk: &Jwk) -> Result<String, String> {
    let canonical = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            let crv = serde_json::to_value(&p.curve).map_err(|e| e.to_string())?;
            format!(r#"{{"crv":{crv},"kty":"EC","x":"{}","y":"{}"}}"#, p.x, p.y)
        }
        AlgorithmParameters::RSA(p) => {
            format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, p.e, p.n)
        }
        _ => return Err("The DPoP jwk must be an EC or RSA key.".to_string()),
    };
    Ok(URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    )))
}

/// A key pair for tests and the demo: the private key as PKCS#8 PEM (what the daemon reads
/// from `okta.private_key_file`) and the public key as the JWK Okta would store.
pub struct TestKeyPair {
    pub private_pem: String,
    pub public_jwk: Jwk,
}

impl TestKeyPair {
    /// A fresh EC P-256 key (ring). Fast enough to make per test.
    pub fn generate_ec() -> TestKeyPair {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("ring can generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("ring reads the key it generated");
        let point = pair.public_key().as_ref();
        TestKeyPair {
            private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            public_jwk: ec_jwk(&point[1..33], &point[33..65]),
        }
    }
}

/// A P-256 public JWK from its coordinates.
pub fn ec_jwk(x: &[u8], y: &[u8]) -> Jwk {
    Jwk {
        common: CommonParameters::default(),
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }),
    }
}

/// An RSA public JWK from base64url `n` and `e`.
pub fn rsa_jwk(n: &str, e: &str) -> Jwk {
    Jwk {
        common: CommonParameters::default(),
        algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
            key_type: RSAKeyType::RSA,
            n: n.to_string(),
            e: e.to_string(),
        }),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
