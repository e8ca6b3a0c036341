//! Fault injection shared by both fakes: a seeded roll per request (so a run replays) and the
//! generic ways a request can go wrong on the wire — held responses, connection resets, slow
//! answers, malformed 200s. It decides, per fault, whether the request was applied before the
//! failure, because the ambiguous case (a POST that created the user, then the connection died)
//! is the one clients get wrong. Service-specific error bodies (Okta's `E0000047`, SCIM's error
//! shape) are not built here: each fake answers [`Rejection`]s itself.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Probabilities (0..=1) of each fault per request, and their parameters. The rates are taken in
/// the order of the fields; their sum should not exceed 1.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seed of the RNG: the same seed and the same request sequence give the same faults.
    pub seed: u64,
    /// 429 with the service's usual retry hint (`Retry-After` / Okta's reset header).
    pub rate_429: f64,
    /// 429 without `Retry-After` (Postman documents none for SCIM,
    /// docs/postman-scim.md#rate-limit-headers-and-delete).
    pub rate_429_no_retry_after: f64,
    pub rate_500: f64,
    pub rate_502: f64,
    pub rate_503: f64,
    /// Hold the response for `timeout_hold` so the client times out.
    pub rate_timeout: f64,
    /// Abort the connection without a complete response.
    pub rate_reset: f64,
    /// Answer correctly, but only after `slow`.
    pub rate_slow: f64,
    /// 200 with truncated JSON, an HTML error page, or JSON with wrong types.
    pub rate_malformed: f64,
    pub slow: Duration,
    pub timeout_hold: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            rate_429: 0.0,
            rate_429_no_retry_after: 0.0,
            rate_500: 0.0,
            rate_502: 0.0,
            rate_503: 0.0,
            rate_timeout: 0.0,
            rate_reset: 0.0,
            rate_slow: 0.0,
            rate_malformed: 0.0,
            slow: Duration::from_millis(1500),
            timeout_hold: Duration::from_secs(30),
        }
    }
}

impl FaultConfig {
    /// The same fault mix at every rate `p`, for "chaos" runs.
    pub fn uniform(seed: u64, p: f64) -> Self {
        Self {
            seed,
            rate_429: p,
            rate_429_no_retry_after: p,
            rate_500: p,
            rate_502: p,
            rate_503: p,
            rate_timeout: p,
            rate_reset: p,
            rate_slow: p,
            rate_malformed: p,
            ..Self::default()
        }
    }
}

/// An injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refused before the request reaches the handler: nothing was applied.
    Reject(Rejection),
    /// Goes wrong on the wire; may or may not have been applied.
    Disrupt(Disruption),
}

/// Faults answered with a service error before anything is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    TooManyRequests {
        retry_after: bool,
    },
    /// 500, 502 or 503.
    ServerError(u16),
}

/// Faults on the wire, handled generically by `disrupt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// The response is held for `timeout_hold`. `applied`: the request took effect first.
    Timeout {
        applied: bool,
    },
    /// The connection is aborted mid-response. `applied`: the request took effect first.
    Reset {
        applied: bool,
    },
    Slow,
    Malformed(Malformed),
}

/// Kinds of broken 200 responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The real (applied) response, cut in half.
    TruncatedJson,
    /// A proxy's HTML page: the request never reached the service, nothing applied.
    HtmlPage,
    /// The real (applied) response with strings, numbers and booleans swapped around.
    WrongTypes,
}

impl Fault {
    /// Short label for the fakes' counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Reject(Rejection::TooManyRequests { retry_after: true }) => "429",
            Fault::Reject(Rejection::TooManyRequests { retry_after: false }) => {
                "429_no_retry_after"
            }
            Fault::Reject(Rejection::ServerError(500)) => "500",
            Fault::Reject(Rejection::ServerError(502)) => "502",
            Fault::Reject(Rejection::ServerError(_)) => "503",
            Fault::Disrupt(Disruption::Timeout { .. }) => "timeout",
            Fault::Disrupt(Disruption::Reset { .. }) => "reset",
            Fault::Disrupt(Disruption::Slow) => "slow",
            Fault::Disrupt(Disruption::Malformed(_)) => "malformed",
        }
    }
}

/// The seeded source of faults. Each roll draws the same number of random values whatever the
/// outcome, so changing one rate does not reshuffle the rest of a replay.
pub(crate) struct FaultInjector {
    config: FaultConfig,
    rng: SmallRng,
}

impl FaultInjector {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    pub(crate) fn config(&self) -> &FaultConfig {
        &self.config
    }

    pub(crate) fn roll(&mut self) -> Option<Fault> {
        let x: f64 = self.rng.gen();
        let sub: u32 = self.rng.gen();
        let c = &self.config;
        // Writes that time out or reset took effect half of the time: the ambiguous failure.
        let applied = sub.is_multiple_of(2);
        let malformed = match sub % 3 {
            0 => Malformed::TruncatedJson,
            1 => Malformed::HtmlPage,
            _ => Malformed::WrongTypes,
        };
        let table = [
            (
                c.rate_429,
                Fault::Reject(Rejection::TooManyRequests { retry_after: true }),
            ),
            (
                c.rate_429_no_retry_after,
                Fault::Reject(Rejection::TooManyRequests { retry_after: false }),
            ),
            (c.rate_500, Fault::Reject(Rejection::ServerError(500))),
            (c.rate_502, Fault::Reject(Rejection::ServerError(502))),
            (c.rate_503, Fault::Reject(Rejection::ServerError(503))),
            (
                c.rate_timeout,
                Fault::Disrupt(Disruption::Timeout { applied }),
            ),
            (c.rate_reset, Fault::Disrupt(Disruption::Reset { applied })),
            (c.rate_slow, Fault::Disrupt(Disruption::Slow)),
            (
                c.rate_malformed,
                Fault::Disrupt(Disruption::Malformed(malformed)),
            ),
        ];
        let mut acc = 0.0;
        for (rate, fault) in table {
            acc += rate.max(0.0);
            if x < acc {
                return Some(fault);
            }
        }
        None
    }
}

/// Runs `req` through `next` (the handler, which applies the request) or not, as `disruption`
/// says, and returns the damaged response.
pub(crate) async fn disrupt(
    disruption: Disruption,
    slow: Duration,
    hold: Duration,
    req: Request,
    next: Next,
) -> Response {
    match disruption {
        Disruption::Slow => {
            tokio::time::sleep(slow).await;
            next.run(req).await
        }
        Disruption::Timeout { applied } => {
            let response = if applied {
                Some(next.run(req).await)
            } else {
                None
            };
            tokio::time::sleep(hold).await;
            response.unwrap_or_else(|| StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Disruption::Reset { applied } => {
            let prefix = if applied {
                let body = body_bytes(next.run(req).await).await;
                body.slice(..body.len() / 2)
            } else {
                Bytes::new()
            };
            reset_response(prefix)
        }
        Disruption::Malformed(Malformed::HtmlPage) => html_error_page(),
        Disruption::Malformed(Malformed::TruncatedJson) => {
            let body = body_bytes(next.run(req).await).await;
            let cut = if body.is_empty() {
                Bytes::from_static(b"{\"schemas\":[\"urn:ietf")
            } else {
                body.slice(..body.len() / 2)
            };
            json_200(cut)
        }
        Disruption::Malformed(Malformed::WrongTypes) => {
            let body = body_bytes(next.run(req).await).await;
            let value = serde_json::from_slice::<serde_json::Value>(&body)
                .unwrap_or_else(|_| serde_json::json!({"id": "x"}));
            let mangled = serde_json::to_vec(&mangle(value, 0)).unwrap_or_default();
            json_200(Bytes::from(mangled))
        }
    }
}

async fn body_bytes(response: Response) -> Bytes {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default()
}

fn json_200(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A 200 whose chunked body ends in an error: hyper then drops the connection without the final
/// chunk, which clients see as a reset / incomplete message.
fn reset_response(prefix: Bytes) -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(prefix),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        )),
    ];
    let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn html_error_page() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        "<!DOCTYPE html><html><head><title>Service Unavailable</title></head>\
         <body><h1>We'll be right back</h1><p>The service is temporarily unavailable.</p>\
         </body></html>",
    )
        .into_response()
}

/// Swaps JSON types two levels deep: strings become numbers, numbers strings, booleans strings,
/// arrays objects. Deep enough that any typed client fails to decode it.
fn mangle(value: serde_json::Value, depth: u8) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::from(s.len()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(if b { "yes" } else { "no" }.to_string()),
        Value::Array(items) if depth < 2 => Value::Object(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), mangle(v, depth + 1)))
                .collect(),
        ),
        Value::Object(map) if depth < 2 => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, mangle(v, depth + 1)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolls(config: FaultConfig, n: usize) -> Vec<Option<Fault>> {
        let mut injector = FaultInjector::new(config);
        (0..n).map(|_| injector.roll()).collect()
    }

    #[test]
    fn the_same_seed_replays_the_same_faults() {
        let config = FaultConfig::uniform(7, 0.05);
        assert_eq!(rolls(config.clone(), 500), rolls(config, 500));
    }

    #[test]
    fn a_quiet_config_injects_nothing() {
        assert!(rolls(FaultConfig::default(), 1000)
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn a_rate_of_one_always_injects_that_fault_and_resets_are_sometimes_applied() {
        let config = FaultConfig {
            rate_reset: 1.0,
            ..FaultConfig::default()
        };
        let all = rolls(config, 200);
        let applied = all
            .iter()
            .filter(|f| matches!(f, Some(Fault::Disrupt(Disruption::Reset { applied: true }))))
            .count();
        let not_applied = all
            .iter()
            .filter(|f| {
                matches!(
                    f,
                    Some(Fault::Disrupt(Disruption::Reset { applied: false }))
                )
            })
            .count();
        assert_eq!(applied + not_applied, 200);
        assert!(applied > 0 && not_applied > 0);
    }

    #[test]
    fn rates_are_roughly_honoured() {
        let config = FaultConfig {
            seed: 3,
            rate_500: 0.2,
            ..FaultConfig::default()
        };
        let n = rolls(config, 10_000).iter().filter(|f| f.is_some()).count();
        assert!((1_700..2_300).contains(&n), "{n} faults in 10000 rolls");
    }

    #[test]
    fn wrong_types_swaps_scalar_types() {
        let v = serde_json::json!({"id": "abc", "active": true, "n": 3, "list": [{"a": "b"}]});
        let m = mangle(v, 0);
        assert_eq!(m["id"], serde_json::json!(3));
        assert_eq!(m["active"], serde_json::json!("yes"));
        assert_eq!(m["n"], serde_json::json!("3"));
        assert!(m["list"].is_object());
    }
}
