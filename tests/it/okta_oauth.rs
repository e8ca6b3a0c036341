//! End-to-end tests of OAuth service-app authentication (issue 8): the real engine, `check` and
//! Okta client against the fake Okta's token endpoint, which verifies the client assertion and
//! DPoP proofs with the registered public keys (docs/okta-api.md#oauth-service-apps, #dpop).

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::World;
use okta_postman_sync::bootstrap::okta_client_config;
use okta_postman_sync::cmd::check::check;
use okta_postman_sync::metrics::Metrics;
use okta_postman_sync::okta::OktaClient;
use okta_postman_sync::retry::RetryPolicy;
use okta_postman_sync::sync::{Outcome, RunOptions};
use okta_postman_sync_sim::okta_oauth::rsa_jwk;
use okta_postman_sync_sim::{SimServiceApp, TestKeyPair};
use tokio_util::sync::CancellationToken;

const CLIENT_ID: &str = "0oaserviceapp1";
const KID: &str = "test-kid-1";
/// Test-only RSA key pair (see tests/fixtures/README.md).
const RSA_PEM: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/oauth-test-only-rsa-key.pem"
));
const RSA_JWK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/oauth-test-only-rsa-key.public.jwk.json"
));

fn fixture_rsa_jwk() -> jsonwebtoken::jwk::Jwk {
    let v: serde_json::Value = serde_json::from_str(RSA_JWK).expect("fixture JWK is JSON");
    rsa_jwk(v["n"].as_str().expect("n"), v["e"].as_str().expect("e"))
}

/// A world whose daemon authenticates as an OAuth service app with a fresh EC key, registered
/// in the fake Okta; `change` adjusts the registered app.
async fn oauth_world(lines: &str, change: impl FnOnce(&mut SimServiceApp)) -> World {
    let mut w = World::new().await;
    let key = TestKeyPair::generate_ec();
    let mut app = SimServiceApp::new(CLIENT_ID, KID, key.public_jwk.clone());
    change(&mut app);
    w.okta.oauth().register_app(app);
    w.use_oauth(
        &key.private_pem,
        &format!("client_id = \"{CLIENT_ID}\"\nkey_id = \"{KID}\"\n{lines}"),
    );
    w
}

fn seed(w: &World) {
    for (f, l) in [("Ann", "Lee"), ("Bob", "Ray"), ("Cat", "Poe")] {
        w.okta_user(f, l);
    }
    let g = w.okta.add_group("Engineering");
    let dan = w.okta.add_user(okta_postman_sync_sim::UserSpec::new(
        "dan.fox@example.com",
        "Dan",
        "Fox",
    ));
    w.okta.add_member(&g, &dan).expect("member");
    w.okta.assign_group(&g).expect("assign group");
}

/// Postman's final state, comparable across worlds: members and groups by name.
fn postman_state(w: &World) -> (BTreeMap<String, bool>, BTreeMap<String, usize>) {
    let members = w
        .members_without_duplicates()
        .into_iter()
        .map(|(name, u)| (name, u.active))
        .collect();
    let groups = w
        .postman
        .groups()
        .into_iter()
        .map(|g| (g.display_name, g.members.len()))
        .collect();
    (members, groups)
}

async fn okta_check_detail(w: &World) -> (bool, String) {
    let report = check(&w.config(), RetryPolicy::fast()).await;
    let item = report
        .items
        .into_iter()
        .find(|i| i.side == "okta")
        .expect("an Okta item");
    (item.ok, item.detail)
}

#[tokio::test]
async fn engine_with_an_oauth_service_app_syncs_exactly_like_one_with_an_api_token() {
    let with_token = World::new().await;
    seed(&with_token);
    let report = with_token.run().await;
    assert_eq!(report.outcome, Outcome::Ok, "{:?}", report.errors);

    // The OAuth world signs its assertions with the RSA fixture key (RS256).
    let mut with_oauth = World::new().await;
    seed(&with_oauth);
    with_oauth
        .okta
        .oauth()
        .register_app(SimServiceApp::new(CLIENT_ID, KID, fixture_rsa_jwk()));
    with_oauth.use_oauth(
        RSA_PEM,
        &format!("client_id = \"{CLIENT_ID}\"\nkey_id = \"{KID}\""),
    );
    let report = with_oauth.run().await;
    assert_eq!(report.outcome, Outcome::Ok, "{:?}", report.errors);

    assert_eq!(postman_state(&with_oauth), postman_state(&with_token));
    assert_eq!(postman_state(&with_oauth).0.len(), 4);
    let stats = with_oauth.okta.oauth().stats();
    assert_eq!(
        stats.tokens_issued, 1,
        "one cached token serves the whole run"
    );
    assert!(stats.api_requests >= 1, "{stats:?}");
    assert!(stats.refusals.is_empty(), "{stats:?}");
    let (ok, detail) = okta_check_detail(&with_oauth).await;
    assert!(ok, "{detail}");
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_next_run_succeeds() {
    let w = oauth_world("", |_| {}).await;
    seed(&w);
    let engine = w.engine();
    let opts = RunOptions {
        full: true,
        ..RunOptions::default()
    };
    let r = engine.run(&opts, &CancellationToken::new(), None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.okta.oauth().stats().tokens_issued, 1);

    // The daemon still holds the token it thinks is good for an hour; Okta says it expired.
    w.okta.oauth().expire_tokens();
    w.okta_user("Eve", "Ng");
    let r = engine.run(&opts, &CancellationToken::new(), None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    let stats = w.okta.oauth().stats();
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");
    assert_eq!(stats.refusals.get("invalid_token"), Some(&1), "{stats:?}");
    assert!(w.member("eve.ng@example.com").is_some_and(|u| u.active));
}

#[tokio::test]
async fn wrong_key_or_kid_or_client_is_named_by_check() {
    // The private key is not the one registered on the app.
    let w = oauth_world("", |app| {
        app.keys
            .insert(KID.to_string(), TestKeyPair::generate_ec().public_jwk);
    })
    .await;
    let (ok, detail) = okta_check_detail(&w).await;
    assert!(!ok);
    assert!(detail.starts_with("key not registered"), "{detail}");
    assert!(detail.contains("invalid_client"), "{detail}");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Failed, "no sync with a refused key");
    assert!(w.postman.users().is_empty());

    // A kid Okta does not know.
    let w = oauth_world("", |app| {
        let jwk = app.keys.remove(KID).expect("key");
        app.keys.insert("another-kid".to_string(), jwk);
    })
    .await;
    let (_, detail) = okta_check_detail(&w).await;
    assert!(detail.starts_with("key not registered"), "{detail}");

    // A client id Okta does not know.
    let w = oauth_world("", |app| app.client_id = "0oasomeoneelse".to_string()).await;
    let (_, detail) = okta_check_detail(&w).await;
    assert!(detail.starts_with("unknown client"), "{detail}");
}

#[tokio::test]
async fn missing_scope_is_named_from_www_authenticate_and_from_the_token_endpoint() {
    // Not requested: the API answers 403 insufficient_scope naming the scope.
    let w = oauth_world(
        "scopes = [\"okta.users.read\", \"okta.groups.read\"]",
        |_| {},
    )
    .await;
    let (ok, detail) = okta_check_detail(&w).await;
    assert!(!ok);
    assert!(
        detail.starts_with("scope not granted: okta.apps.read"),
        "{detail}"
    );

    // Requested but not granted to the app: the token endpoint refuses with invalid_scope.
    let w = oauth_world(
        "scopes = [\"okta.apps.read\", \"okta.groups.read\", \"okta.logs.read\"]",
        |_| {},
    )
    .await;
    let (_, detail) = okta_check_detail(&w).await;
    assert!(
        detail.starts_with("scope not granted: okta.logs.read"),
        "{detail}"
    );
}

#[tokio::test]
async fn missing_admin_role_is_named_by_check() {
    let w = oauth_world("", |app| app.admin_role = false).await;
    let (ok, detail) = okta_check_detail(&w).await;
    assert!(!ok);
    assert!(detail.starts_with("missing admin role"), "{detail}");
    assert!(detail.contains("Read-only Administrator"), "{detail}");
}

#[tokio::test]
async fn app_that_requires_dpop_gets_dpop_bound_tokens_without_configuration() {
    let w = oauth_world("", |app| app.require_dpop = true).await;
    seed(&w);
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.members_without_duplicates().len(), 4);
    let stats = w.okta.oauth().stats();
    assert_eq!(stats.dpop_tokens_issued, 1, "{stats:?}");
    assert_eq!(stats.tokens_issued, 1, "{stats:?}");
    // Plain request refused, then the proof without a nonce, then success.
    assert_eq!(
        stats.refusals.get("invalid_dpop_proof"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.nonce_challenges, 1, "{stats:?}");
}

#[tokio::test]
async fn forced_dpop_sends_a_proof_from_the_first_token_request() {
    let w = oauth_world("dpop = true", |_| {}).await;
    seed(&w);
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    let stats = w.okta.oauth().stats();
    assert_eq!(stats.dpop_tokens_issued, 1, "{stats:?}");
    assert_eq!(stats.refusals.get("invalid_dpop_proof"), None, "{stats:?}");
}

#[tokio::test]
async fn rotated_dpop_nonce_is_picked_up_on_the_next_token_request() {
    let w = oauth_world("", |app| app.require_dpop = true).await;
    seed(&w);
    let engine = w.engine();
    let opts = RunOptions::default();
    let r = engine.run(&opts, &CancellationToken::new(), None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);

    w.okta.oauth().rotate_nonce();
    w.okta.oauth().expire_tokens();
    w.okta_user("Eve", "Ng");
    let r = engine.run(&opts, &CancellationToken::new(), None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    let stats = w.okta.oauth().stats();
    assert_eq!(stats.dpop_tokens_issued, 2, "{stats:?}");
    // First fetch: no nonce, then the nonce. Second: the stale nonce, then the new one.
    assert_eq!(stats.nonce_challenges, 2, "{stats:?}");
    assert_eq!(
        stats.refusals.get("invalid_dpop_proof"),
        Some(&1),
        "DPoP is remembered for the process: {stats:?}"
    );
    assert!(w.member("eve.ng@example.com").is_some_and(|u| u.active));
}

#[tokio::test]
async fn repeated_refreshes_stay_within_the_token_endpoints_rate_limit() {
    let w = oauth_world("", |_| {}).await;
    seed(&w);
    let client = OktaClient::new(
        okta_client_config(&w.config(), RetryPolicy::fast()).expect("client config"),
        Arc::new(Metrics::new()),
    )
    .expect("client");
    for _ in 0..6 {
        w.okta.oauth().expire_tokens();
        client.check().await.expect("check");
    }
    let stats = w.okta.oauth().stats();
    assert_eq!(stats.tokens_issued, 6, "{stats:?}");
    assert_eq!(stats.token_rate_limited, 0, "{stats:?}");
}

#[tokio::test]
async fn neither_the_private_key_nor_a_token_appears_in_debug_or_errors() {
    let w = oauth_world("", |app| app.admin_role = false).await;
    let pem = std::fs::read_to_string(w.dir.path().join("okta-oauth-key.pem")).expect("pem");
    let key_body: String = pem.lines().nth(1).expect("a base64 line").to_string();
    let config = okta_client_config(&w.config(), RetryPolicy::fast()).expect("client config");
    let client = OktaClient::new(config.clone(), Arc::new(Metrics::new())).expect("client");
    let err = client.check().await.expect_err("no admin role");
    for text in [
        format!("{config:?}"),
        format!("{client:?}"),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(!text.contains(&key_body), "private key leaked: {text}");
        assert!(!text.contains("Bearer "), "token leaked: {text}");
        assert!(!text.contains("eyJ"), "a JWT leaked: {text}");
    }
}

#[tokio::test]
async fn a_token_whose_expires_in_is_u64_max_syncs_and_is_reused_without_a_panic() {
    // `expires_in: 18446744073709551615` once panicked in `Instant + Duration` and killed the
    // run task; the client clamps the lifetime to a day.
    let w = oauth_world("", |_| {}).await;
    w.okta
        .oauth()
        .set_token_lifetime(std::time::Duration::from_secs(u64::MAX));
    seed(&w);
    let engine = w.engine();
    for _ in 0..2 {
        let r = engine
            .run(&RunOptions::default(), &CancellationToken::new(), None)
            .await;
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    }
    let stats = w.okta.oauth().stats();
    assert_eq!(stats.tokens_issued, 1, "one token for both runs: {stats:?}");
    assert!(w.member("ann.lee@example.com").is_some_and(|u| u.active));
}
