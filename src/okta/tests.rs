//! Client tests against wiremock on 127.0.0.1: request shape, paging, mapping, rate limits,
//! errors. Timing is never asserted, only behaviour (what was read, what was sent, metrics).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;

const TOKEN: &str = "00secret-token-value";
const APP: &str = "0oaPOSTMAN";
const USERS: &str = "/api/v1/apps/0oaPOSTMAN/users";

fn config(server: &MockServer) -> OktaClientConfig {
    OktaClientConfig {
        retry: RetryPolicy::fast(),
        timeout: Duration::from_secs(5),
        ..OktaClientConfig::with_defaults(
            server.uri().parse().expect("mock server URI"),
            APP,
            OktaAuth::ApiToken(TOKEN.into()),
        )
    }
}

fn client_with(cfg: OktaClientConfig) -> (OktaClient, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let client = OktaClient::new(cfg, metrics.clone()).expect("valid test config");
    (client, metrics)
}

fn client(server: &MockServer) -> (OktaClient, Arc<Metrics>) {
    client_with(config(server))
}

/// An app user as `expand=user` returns it.
fn app_user(id: &str, login: &str, app_status: &str, user_status: &str) -> Value {
    let first = login.split('@').next().unwrap_or_default();
    json!({
        "id": id, "externalId": null, "scope": "USER", "status": app_status,
        "syncState": "DISABLED", "credentials": {"userName": login},
        "profile": {"email": login},
        "_embedded": {"user": {
            "id": id, "status": user_status, "activated": null,
            "profile": {"login": login, "firstName": first, "lastName": "Tester"}
        }},
        "_links": {"app": {"href": "https://example.okta.com/api/v1/apps/0oaPOSTMAN"}}
    })
}

fn ok_json(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn next_url(server: &MockServer, p: &str, after: &str) -> String {
    format!("{}{p}?after={after}&limit=500&expand=user", server.uri())
}

/// Mounts `pages` of app users; page i>0 is served for `after=p{i}`.
async fn mount_user_pages(server: &MockServer, pages: Vec<Vec<Value>>, comma_joined: bool) {
    let n = pages.len();
    for (i, page) in pages.into_iter().enumerate() {
        let mut response = ok_json(Value::Array(page));
        let self_link = format!("<{}{USERS}>; rel=\"self\"", server.uri());
        if i + 1 < n {
            let next_link = format!(
                "<{}>; rel=\"next\"",
                next_url(server, USERS, &format!("p{}", i + 1))
            );
            response = if comma_joined {
                response.insert_header("Link", format!("{self_link}, {next_link}").as_str())
            } else {
                response
                    .append_header("Link", self_link.as_str())
                    .append_header("Link", next_link.as_str())
            };
        } else {
            response = response.append_header("Link", self_link.as_str());
        }
        let mock = Mock::given(method("GET")).and(path(USERS));
        let mock = if i == 0 {
            mock.and(query_param_is_missing("after"))
        } else {
            mock.and(query_param("after", format!("p{i}").as_str()))
        };
        mock.respond_with(response).expect(1).mount(server).await;
    }
}

#[tokio::test]
async fn app_users_are_read_across_pages_with_separate_link_headers() {
    let server = MockServer::start().await;
    mount_user_pages(
        &server,
        vec![
            vec![app_user("00u1", "ada@example.com", "ACTIVE", "ACTIVE")],
            vec![app_user(
                "00u2",
                "bob@example.com",
                "PROVISIONED",
                "LOCKED_OUT",
            )],
            vec![app_user("00u3", "cy@example.com", "ACTIVE", "ACTIVE")],
        ],
        false,
    )
    .await;
    let (okta, metrics) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("complete read");
    assert!(read.complete);
    assert_eq!(read.incomplete_reason, None);
    let ids: Vec<&str> = read.users.keys().map(OktaUserId::as_str).collect();
    assert_eq!(ids, ["00u1", "00u2", "00u3"]);
    assert!(read.users.values().all(|u| u.active));
    assert!(metrics
        .encode()
        .contains("okta_postman_sync_okta_requests_total{status=\"200\"} 3"));
}

#[tokio::test]
async fn app_users_are_read_across_pages_with_comma_joined_link_values() {
    let server = MockServer::start().await;
    mount_user_pages(
        &server,
        vec![
            vec![app_user("00u1", "ada@example.com", "ACTIVE", "ACTIVE")],
            vec![app_user("00u2", "bob@example.com", "ACTIVE", "ACTIVE")],
        ],
        true,
    )
    .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("complete read");
    assert_eq!(read.users.len(), 2);
}

#[tokio::test]
async fn requests_carry_the_token_accept_user_agent_and_page_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .and(query_param("limit", "500"))
        .and(query_param("expand", "user"))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .and(header("accept", "application/json"))
        .and(header(
            "user-agent",
            concat!("okta-postman-sync/", env!("CARGO_PKG_VERSION")),
        ))
        .respond_with(ok_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("request matched every expectation");
    assert!(read.complete && read.users.is_empty());
}

#[tokio::test]
async fn embedded_users_feed_the_mapping_fallbacks_and_a_configured_chain() {
    let server = MockServer::start().await;
    let body = json!([
        // No app credentials: userName falls back to user.profile.login; names from the app
        // profile win over the Okta profile.
        {"id": "00u1", "status": "ACTIVE",
         "profile": {"firstName": "Augusta", "lastName": null},
         "_embedded": {"user": {"id": "00u1", "status": "ACTIVE",
            "profile": {"login": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace",
                        "email": "ada.lovelace@example.com"}}}}
    ]);
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(body))
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("complete read");
    let ada = &read.users[&OktaUserId::new("00u1")];
    assert_eq!(ada.attrs.user_name, "ada@example.com");
    assert_eq!(ada.attrs.given_name, "Augusta");
    assert_eq!(ada.attrs.family_name, "Lovelace");

    let mapping = AttributeMapping {
        user_name: AttributeMapping::parse("user_name", &["user.profile.email".to_string()])
            .expect("valid chain"),
        ..AttributeMapping::default()
    };
    let read = okta.read_app_users(&mapping).await.expect("complete read");
    assert_eq!(
        read.users[&OktaUserId::new("00u1")].attrs.user_name,
        "ada.lovelace@example.com"
    );
}

#[tokio::test]
async fn suspended_okta_users_are_read_as_inactive_with_the_reason() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(json!([
            app_user("00u1", "ada@example.com", "ACTIVE", "SUSPENDED"),
            app_user("00u2", "bob@example.com", "INACTIVE", "ACTIVE"),
        ])))
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("complete read");
    let ada = &read.users[&OktaUserId::new("00u1")];
    assert!(!ada.active);
    assert_eq!(ada.reason, "Okta user SUSPENDED");
    assert!(!read.users[&OktaUserId::new("00u2")].active);
}

#[tokio::test]
async fn an_app_user_without_a_user_name_is_skipped_not_dropped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(json!([
            app_user("00u1", "ada@example.com", "ACTIVE", "ACTIVE"),
            {"id": "00u2", "status": "ACTIVE", "credentials": {"userName": null},
             "_embedded": {"user": {"id": "00u2", "status": "ACTIVE", "profile": {}}}},
            // A record of the wrong shape is reported by id too.
            {"id": "00u3", "status": 7, "profile": "not an object"},
        ])))
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("skips do not make the read incomplete");
    assert!(read.complete);
    assert_eq!(read.users.len(), 1);
    assert!(read.skipped[&OktaUserId::new("00u2")].contains("no userName"));
    assert!(read.skipped[&OktaUserId::new("00u3")].contains("could not be read"));
}

#[tokio::test]
async fn unknown_fields_nulls_omissions_and_unknown_statuses_are_tolerated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(json!([
            {"id": "00u1", "status": "ACTIVE", "scope": "SOMETHING_NEW", "brandNewField": {"x": [1]},
             "credentials": {"userName": "ada@example.com", "password": null},
             "profile": null, "lastSync": null, "_links": null,
             "_embedded": {"user": {"id": "00u1", "status": "ACTIVATING", "realmId": "guo1",
                "profile": {"login": "ada@example.com", "firstName": null}}}},
            {"id": "00u2", "status": "IMPLICIT_V2",
             "credentials": {"userName": "bob@example.com"}, "_embedded": null},
            {"id": "00u3", "status": "ACTIVE", "credentials": {"userName": "cy@example.com"}},
        ])))
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("complete read");
    assert_eq!(read.users.len(), 3);
    let ada = &read.users[&OktaUserId::new("00u1")];
    assert!(!ada.active, "unknown Okta user status is not entitled");
    assert!(ada.reason.contains("ACTIVATING"));
    assert_eq!(ada.attrs.given_name, "ada");
    assert!(!read.users[&OktaUserId::new("00u2")].active);
    assert!(read.users[&OktaUserId::new("00u3")].active);
}

#[tokio::test]
async fn a_failing_page_yields_a_partial_read_with_the_earlier_users() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .and(query_param_is_missing("after"))
        .respond_with(
            ok_json(json!([app_user(
                "00u1",
                "ada@example.com",
                "ACTIVE",
                "ACTIVE"
            )]))
            .insert_header(
                "Link",
                format!("<{}>; rel=\"next\"", next_url(&server, USERS, "p1")).as_str(),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .and(query_param("after", "p1"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let (okta, metrics) = client_with(OktaClientConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::fast()
        },
        ..config(&server)
    });
    let partial = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect_err("page 2 keeps failing");
    assert!(!partial.read.complete);
    assert!(partial.read.users.contains_key(&OktaUserId::new("00u1")));
    let reason = partial
        .read
        .incomplete_reason
        .as_deref()
        .expect("reason set");
    assert!(reason.contains("503"), "{reason}");
    assert!(partial.error.is_retryable());
    assert_eq!(partial.error.status(), Some(503));
    let text = metrics.encode();
    assert!(text.contains("okta_postman_sync_okta_requests_total{status=\"503\"} 3"));
    assert!(text.contains("okta_postman_sync_retries_total{api=\"okta\"} 2"));
}

#[tokio::test]
async fn a_429_waits_for_the_reset_by_the_server_date_and_then_succeeds() {
    let server = MockServer::start().await;
    // The server's clock is in 2000: by the local clock this Reset lies long past, and a client
    // reading the local clock would not wait at all. By the server's Date it is 4 s away (+1 s),
    // capped here by max_wait.
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Date", "Sat, 01 Jan 2000 00:00:00 GMT")
                .insert_header("X-Rate-Limit-Limit", "100")
                .insert_header("X-Rate-Limit-Remaining", "0")
                .insert_header("X-Rate-Limit-Reset", "946684804")
                .set_body_json(json!({"errorCode": "E0000047",
                    "errorSummary": "API call exceeded rate limit due to too many requests."})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(json!([app_user(
            "00u1",
            "ada@example.com",
            "ACTIVE",
            "ACTIVE"
        )])))
        .with_priority(2)
        .mount(&server)
        .await;
    let (okta, metrics) = client_with(OktaClientConfig {
        retry: RetryPolicy {
            max_wait: Duration::from_millis(300),
            ..RetryPolicy::fast()
        },
        ..config(&server)
    });
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("the retry succeeds");
    assert_eq!(read.users.len(), 1);
    let text = metrics.encode();
    assert!(text.contains("okta_postman_sync_okta_requests_total{status=\"429\"} 1"));
    assert!(text.contains("okta_postman_sync_retries_total{api=\"okta\"} 1"));
    assert!(
        text.contains("okta_postman_sync_rate_limit_wait_seconds_total{api=\"okta\"} 0.3"),
        "{text}"
    );
}

/// A fake Okta whose rate-limit windows follow the clock: window `w` covers
/// [w * WINDOW, (w + 1) * WINDOW) after start and is identified by `Reset = BASE + w`.
/// It serves `pages` one-user pages and records how many requests each window saw.
struct WindowedOkta {
    start: Instant,
    uri: String,
    per_window: Mutex<BTreeMap<u64, u64>>,
    pages: usize,
}

const WINDOW: Duration = Duration::from_millis(150);
const BASE: u64 = 1_700_000_000;
const LIMIT: u64 = 4;

impl Respond for WindowedOkta {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let window = (self.start.elapsed().as_millis() / WINDOW.as_millis()) as u64;
        let used = {
            let mut per_window = self.per_window.lock().expect("test lock");
            let used = per_window.entry(window).or_insert(0);
            *used += 1;
            *used
        };
        let page: usize = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "after")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut response = ok_json(json!([app_user(
            &format!("00u{page}"),
            &format!("user{page}@example.com"),
            "ACTIVE",
            "ACTIVE"
        )]))
        // Date = Reset: the client computes a 1 s wait, capped by max_wait (200 ms) - longer
        // than a window here, so a paused client always resumes in a later window.
        .insert_header("Date", httpdate(BASE + window).as_str())
        .insert_header("X-Rate-Limit-Limit", LIMIT.to_string().as_str())
        .insert_header(
            "X-Rate-Limit-Remaining",
            LIMIT.saturating_sub(used).to_string().as_str(),
        )
        .insert_header("X-Rate-Limit-Reset", (BASE + window).to_string().as_str());
        if page + 1 < self.pages {
            response = response.insert_header(
                "Link",
                format!(
                    "<{}{USERS}?after={}&limit=500>; rel=\"next\"",
                    self.uri,
                    page + 1
                )
                .as_str(),
            );
        }
        response
    }
}

fn httpdate(epoch: u64) -> String {
    chrono::DateTime::from_timestamp(epoch as i64, 0)
        .expect("valid timestamp")
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[tokio::test]
async fn the_client_stays_within_its_share_of_each_rate_limit_window() {
    let server = MockServer::start().await;
    let fake = Arc::new(WindowedOkta {
        start: Instant::now(),
        uri: server.uri(),
        per_window: Mutex::new(BTreeMap::new()),
        pages: 6,
    });
    struct Shared(Arc<WindowedOkta>);
    impl Respond for Shared {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            self.0.respond(request)
        }
    }
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(Shared(fake.clone()))
        .mount(&server)
        .await;
    let (okta, metrics) = client_with(OktaClientConfig {
        max_rate_share: 0.5,
        retry: RetryPolicy {
            max_wait: Duration::from_millis(200),
            ..RetryPolicy::fast()
        },
        ..config(&server)
    });
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("complete read");
    assert_eq!(read.users.len(), 6);
    let per_window = fake.per_window.lock().expect("test lock").clone();
    let budget = (LIMIT as f64 * 0.5).floor() as u64;
    assert!(
        per_window.values().all(|&n| n <= budget),
        "requests per window: {per_window:?}"
    );
    assert!(metrics
        .encode()
        .contains("okta_postman_sync_rate_limit_wait_seconds_total{api=\"okta\"}"));
}

#[tokio::test]
async fn a_401_is_not_retried_and_says_to_check_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("X-Okta-Request-Id", "req-123")
                .set_body_json(json!({"errorCode": "E0000011",
                    "errorSummary": "Invalid token provided", "errorLink": "E0000011",
                    "errorId": "oae-abc", "errorCauses": []})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let err = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect_err("401")
        .error;
    assert!(!err.is_retryable());
    assert_eq!(
        err.hint(),
        Some("check the API token (expired after 30 days unused? revoked?)")
    );
    let OktaError::Api {
        status,
        endpoint,
        details,
    } = &err
    else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((*status, endpoint.as_str()), (401, USERS));
    assert_eq!(details.error_code.as_deref(), Some("E0000011"));
    assert_eq!(details.error_id.as_deref(), Some("oae-abc"));
    assert_eq!(details.request_id.as_deref(), Some("req-123"));
    let text = err.to_string();
    assert!(text.contains("E0000011") && text.contains("req-123") && text.contains("API token"));
    assert!(!text.contains(TOKEN) && !format!("{err:?}").contains(TOKEN));
}

#[tokio::test]
async fn a_403_without_a_body_reports_the_www_authenticate_error_and_a_hint() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/groups/00gA/users"))
        .respond_with(ResponseTemplate::new(403).insert_header(
            "WWW-Authenticate",
            "Bearer authorization_uri=\"x\", realm=\"y\", scope=\"okta.groups.read\", \
             error=\"insufficient_scope\", error_description=\"The access token provided does \
             not contain the required scopes.\"",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let err = okta
        .list_group_members(&OktaGroupId::new("00gA"))
        .await
        .expect_err("403");
    assert!(err.hint().is_some_and(|h| h.contains("Read-only Admin")));
    let OktaError::Api { details, .. } = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(
        details.www_authenticate_error.as_deref(),
        Some("insufficient_scope")
    );
}

#[tokio::test]
async fn a_404_on_the_app_says_to_check_the_app_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/apps/0oaPOSTMAN"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"errorCode": "E0000007", "errorSummary": "Not found: Resource not found: 0oaPOSTMAN (AppInstance)"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let err = okta.check().await.expect_err("404");
    assert_eq!(err.hint(), Some("check [okta] app_id"));
    assert!(err.to_string().contains("check [okta] app_id"));
}

#[tokio::test]
async fn malformed_json_and_html_bodies_are_decode_errors_naming_the_endpoint() {
    // Bodies that are not JSON at all are asked for again (they may be cut off in transit);
    // well-formed bodies with the wrong content fail at once.
    for (body, content_type, expect, fetches) in [
        ("[{\"id\": \"00u1\", ", "application/json", "cut off", 3),
        (
            "<html><body>Sign in</body></html>",
            "text/html",
            "text/html",
            3,
        ),
        (
            "{\"id\": \"00u1\"}",
            "application/json",
            "expected a JSON array",
            1,
        ),
        (
            "[{\"status\": \"ACTIVE\"}]",
            "application/json",
            "without an id",
            1,
        ),
        ("[1, }", "application/json", "malformed JSON", 3),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(USERS))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, content_type))
            .expect(fetches)
            .mount(&server)
            .await;
        let (okta, _) = client(&server);
        let partial = okta
            .read_app_users(&AttributeMapping::default())
            .await
            .expect_err("undecodable body");
        let err = partial.error;
        assert!(matches!(err, OktaError::Decode { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains(USERS) && text.contains(expect), "{text}");
    }
}

#[tokio::test]
async fn a_page_cut_off_in_transit_is_fetched_again() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("[{\"id\": \"00u1\", ", "application/json"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(json!([app_user(
            "00u1",
            "ada@example.com",
            "ACTIVE",
            "ACTIVE"
        )])))
        .mount(&server)
        .await;
    let (okta, metrics) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("the second answer is whole");
    assert_eq!(read.users.len(), 1);
    assert!(read.complete);
    assert!(metrics
        .encode()
        .contains("okta_postman_sync_retries_total{api=\"okta\"} 1"));
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_and_never_receives_the_token() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(
            ok_json(json!([app_user(
                "00u1",
                "ada@example.com",
                "ACTIVE",
                "ACTIVE"
            )]))
            .insert_header(
                "Link",
                format!("<{}{USERS}?after=x>; rel=\"next\"", elsewhere.uri()).as_str(),
            ),
        )
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let partial = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect_err("foreign link");
    assert!(matches!(partial.error, OktaError::ForeignNextLink { .. }));
    assert_eq!(partial.read.users.len(), 1);
    let seen = elsewhere.received_requests().await.expect("recording on");
    assert!(seen.is_empty());
}

#[tokio::test]
async fn app_groups_and_group_members_are_paged_and_named() {
    let server = MockServer::start().await;
    let groups = "/api/v1/apps/0oaPOSTMAN/groups";
    Mock::given(method("GET"))
        .and(path(groups))
        .and(query_param("limit", "200"))
        .and(query_param("expand", "group"))
        .and(query_param_is_missing("after"))
        .respond_with(
            ok_json(json!([
                {"id": "00gB", "priority": 0, "profile": {"role": "x"},
                 "_embedded": {"group": {"id": "00gB", "type": "OKTA_GROUP",
                    "profile": {"name": "Engineering", "description": null}}}}
            ]))
            .insert_header(
                "Link",
                format!(
                    "<{}{groups}?after=00gB&limit=200&expand=group>; rel=\"next\"",
                    server.uri()
                )
                .as_str(),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(groups))
        .and(query_param("after", "00gB"))
        .respond_with(ok_json(json!([{"id": "00gA"}])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/groups/00gB/users"))
        .and(query_param("limit", "200"))
        .respond_with(ok_json(json!([
            {"id": "00u2", "status": "ACTIVE", "profile": {"login": "b@example.com"}},
            {"id": "00u1", "status": "SUSPENDED"}
        ])))
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let listed = okta.list_app_groups().await.expect("groups");
    assert_eq!(
        listed,
        vec![
            (OktaGroupId::new("00gA"), "00gA".to_string()),
            (OktaGroupId::new("00gB"), "Engineering".to_string()),
        ]
    );
    let members = okta
        .list_group_members(&OktaGroupId::new("00gB"))
        .await
        .expect("members");
    let ids: Vec<&str> = members.iter().map(OktaUserId::as_str).collect();
    assert_eq!(ids, ["00u1", "00u2"]);
}

#[tokio::test]
async fn check_reads_the_app_and_one_item_of_users_and_groups() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/apps/0oaPOSTMAN"))
        .respond_with(ok_json(
            json!({"id": "0oaPOSTMAN", "name": "postman", "label": "Postman",
            "status": "ACTIVE", "signOnMode": "SAML_2_0", "settings": {}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .and(query_param("limit", "1"))
        .respond_with(
            ok_json(json!([])).insert_header(
                "Link",
                format!(
                    "<{}>; rel=\"next\"",
                    next_url(&server, USERS, "never-followed")
                )
                .as_str(),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/apps/0oaPOSTMAN/groups"))
        .and(query_param("limit", "20"))
        .respond_with(ok_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    assert_eq!(okta.check().await.expect("check passes"), "Postman");
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(method("GET"))
        .and(path("/api/v1/groups/00gA/users"))
        .respond_with(move |_: &Request| {
            if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                ResponseTemplate::new(500)
            } else {
                ok_json(json!([{"id": "00u1"}]))
            }
        })
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let members = okta
        .list_group_members(&OktaGroupId::new("00gA"))
        .await
        .expect("third attempt succeeds");
    assert_eq!(members.len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let cfg = OktaClientConfig::with_defaults(
        "https://acme.okta.com".parse().expect("url"),
        APP,
        OktaAuth::ApiToken(TOKEN.into()),
    );
    assert!(!format!("{cfg:?}").contains(TOKEN));
    let (okta, _) = client_with(cfg);
    assert!(!format!("{okta:?}").contains(TOKEN));
}

#[test]
fn configs_that_cannot_work_are_refused() {
    let base = || {
        OktaClientConfig::with_defaults(
            "https://acme.okta.com".parse().expect("url"),
            APP,
            OktaAuth::ApiToken(TOKEN.into()),
        )
    };
    let bad = [
        OktaClientConfig {
            org_url: "http://acme.okta.com".parse().expect("url"),
            ..base()
        },
        OktaClientConfig {
            org_url: "https://acme.okta.com/api/v1".parse().expect("url"),
            ..base()
        },
        OktaClientConfig {
            app_id: "0oa/../users".into(),
            ..base()
        },
        OktaClientConfig {
            page_limit: 501,
            ..base()
        },
        OktaClientConfig {
            max_rate_share: 0.0,
            ..base()
        },
        OktaClientConfig {
            auth: OktaAuth::ApiToken(" ".into()),
            ..base()
        },
    ];
    for cfg in bad {
        let shown = format!("{:?} {}", cfg.org_url, cfg.app_id);
        assert!(
            matches!(
                OktaClient::new(cfg, Arc::new(Metrics::new())),
                Err(OktaError::Config { .. })
            ),
            "{shown}"
        );
    }
    let loopback = OktaClientConfig {
        org_url: "http://127.0.0.1:8080".parse().expect("url"),
        ..base()
    };
    assert!(OktaClient::new(loopback, Arc::new(Metrics::new())).is_ok());
}

#[test]
fn link_headers_are_parsed_line_by_line_and_value_by_value() {
    let mut h = HeaderMap::new();
    h.append(
        LINK,
        HeaderValue::from_static("<https://a/x?limit=2>; rel=\"self\""),
    );
    h.append(
        LINK,
        HeaderValue::from_static(
            "<https://a/x?a=1,2>; rel=\"prev\", <https://a/x?after=q>; rel=next",
        ),
    );
    assert_eq!(next_link(&h).as_deref(), Some("https://a/x?after=q"));
    let mut h = HeaderMap::new();
    h.append(
        LINK,
        HeaderValue::from_static("<https://a/x>; rel=\"self\""),
    );
    assert_eq!(next_link(&h), None);
    assert_eq!(
        www_authenticate_error("DPoP algs=\"RS256\", error=\"invalid_dpop_proof\"").as_deref(),
        Some("invalid_dpop_proof")
    );
    assert_eq!(
        www_authenticate_error("Bearer error_description=\"x\"").as_deref(),
        None
    );
}

// --- Hostile upstreams (issue 11): bodies that never end, lie about their size, headers and
// token lifetimes at the ends of their types. Behaviour only: what was read, what failed, how
// many requests were sent; never how long anything took.

/// What [`HostileServer`] sends after the status line and headers.
#[derive(Clone, Copy)]
enum HostileBody {
    /// `Content-Length: <n>`, and then nothing at all: a client that started reading would
    /// wait for the body until its timeout, so a `TooLarge` proves it never tried.
    Declares(u64),
    /// `Transfer-Encoding: chunked`, a `[` and then whitespace, 16 KiB a chunk, until the
    /// client goes away.
    Endless,
}

/// A hand-written HTTP/1.1 server on 127.0.0.1:0 for answers wiremock cannot give: a lying
/// `Content-Length`, a chunked body without end. Every request gets the same answer; the
/// number of requests is counted.
struct HostileServer {
    uri: String,
    requests: Arc<AtomicUsize>,
}

impl HostileServer {
    async fn start(body: HostileBody) -> HostileServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    // Read the request head (these GETs have no body).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let framing = match body {
                        HostileBody::Declares(n) => format!("Content-Length: {n}"),
                        HostileBody::Endless => "Transfer-Encoding: chunked".to_string(),
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
                    );
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    match body {
                        HostileBody::Declares(_) => {
                            // Hold the connection open, sending nothing, until the client
                            // drops it.
                            let _ = conn.read(&mut buf).await;
                        }
                        HostileBody::Endless => {
                            let mut chunk = format!("{:x}\r\n[", 16 * 1024).into_bytes();
                            chunk.extend(std::iter::repeat_n(b' ', 16 * 1024 - 1));
                            chunk.extend_from_slice(b"\r\n");
                            if conn.write_all(&chunk).await.is_err() {
                                return;
                            }
                            let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
                            chunk.extend(std::iter::repeat_n(b' ', 16 * 1024));
                            chunk.extend_from_slice(b"\r\n");
                            while conn.write_all(&chunk).await.is_ok() {}
                        }
                    }
                });
            }
        });
        HostileServer { uri, requests }
    }

    fn config(&self) -> OktaClientConfig {
        OktaClientConfig {
            retry: RetryPolicy::fast(),
            timeout: Duration::from_secs(20),
            ..OktaClientConfig::with_defaults(
                self.uri.parse().expect("server URI"),
                APP,
                OktaAuth::ApiToken(TOKEN.into()),
            )
        }
    }
}

#[tokio::test]
async fn a_page_declaring_200_mb_is_refused_before_reading_and_not_retried() {
    let server = HostileServer::start(HostileBody::Declares(200 * 1024 * 1024)).await;
    let (okta, _) = client_with(server.config());
    let partial = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect_err("an oversized page fails the read");
    assert!(!partial.read.complete, "a partial read: no deactivations");
    match &partial.error {
        OktaError::TooLarge { declared, cap, .. } => {
            assert_eq!(*declared, Some(200 * 1024 * 1024));
            assert_eq!(*cap, limits::MAX_BODY_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let text = partial.error.to_string();
    assert!(
        text.contains("32 MiB limit on a response body") && text.contains(USERS),
        "{text}"
    );
    assert!(text.contains("page_size"), "says what to check: {text}");
    assert!(!partial.error.is_retryable());
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "never retried");
}

#[tokio::test]
async fn an_endless_chunked_page_is_stopped_at_the_cap_and_not_retried() {
    let server = HostileServer::start(HostileBody::Endless).await;
    let (okta, _) = client_with(OktaClientConfig {
        max_body_bytes: 256 * 1024,
        ..server.config()
    });
    let partial = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect_err("an endless page fails the read");
    assert!(!partial.read.complete);
    assert!(
        matches!(
            partial.error,
            OktaError::TooLarge {
                declared: None,
                cap: 262_144,
                ..
            }
        ),
        "{:?}",
        partial.error
    );
    assert!(
        partial.error.to_string().contains("reading stopped"),
        "{}",
        partial.error
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "never retried");
}

#[tokio::test]
async fn check_and_group_reads_are_capped_too() {
    let server = HostileServer::start(HostileBody::Endless).await;
    let (okta, _) = client_with(OktaClientConfig {
        max_body_bytes: 64 * 1024,
        ..server.config()
    });
    let e = okta.check().await.expect_err("capped");
    assert!(matches!(e, OktaError::TooLarge { .. }), "{e:?}");
    let e = okta.list_app_groups().await.expect_err("capped");
    assert!(matches!(e, OktaError::TooLarge { .. }), "{e:?}");
    let e = okta
        .list_group_members(&OktaGroupId::new("00g1"))
        .await
        .expect_err("capped");
    assert!(matches!(e, OktaError::TooLarge { .. }), "{e:?}");
}

#[tokio::test]
async fn an_oversized_error_body_still_reports_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/apps/{APP}")))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_string(format!("{{\"errorCode\":\"{}\"}}", "E".repeat(1 << 20))),
        )
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let e = okta.check().await.expect_err("404");
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.hint(), Some("check [okta] app_id"), "{e}");
}

#[tokio::test]
async fn a_page_of_items_of_the_wrong_shape_midway_is_reported_by_the_general_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(json!([
            app_user("00u1", "ada@example.com", "ACTIVE", "ACTIVE"),
            {"id": "00u2", "status": 7},
            app_user("00u3", "cy@example.com", "ACTIVE", "ACTIVE"),
        ])))
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let read = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect("a bad item is skipped, not fatal");
    assert_eq!(read.users.len(), 2, "{:?}", read.users);
    assert!(read.skipped.contains_key(&OktaUserId::new("00u2")));
}

/// A `[okta] auth = "oauth"` client against `server`, with a fresh EC key.
fn oauth_config(server: &MockServer) -> OktaClientConfig {
    let key = okta_postman_sync_sim::okta_oauth::TestKeyPair::generate_ec();
    OktaClientConfig {
        auth: OktaAuth::OAuth(OAuthSettings {
            client_id: "0oaservice".into(),
            private_key_pem: key.private_pem.into(),
            key_id: Some("kid1".into()),
            scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            force_dpop: false,
        }),
        ..config(server)
    }
}

/// Mounts a token endpoint answering `body`, expected `times` times, and an app-user page
/// that needs its token.
async fn mount_token_and_users(server: &MockServer, body: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "application/json"),
        )
        .expect(times)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(USERS))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ok_json(json!([app_user(
            "00u1",
            "ada@example.com",
            "ACTIVE",
            "ACTIVE"
        )])))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_token_that_claims_to_live_forever_works_and_does_not_panic() {
    let server = MockServer::start().await;
    mount_token_and_users(
        &server,
        r#"{"token_type":"Bearer","expires_in":18446744073709551615,"access_token":"tok-1"}"#,
        1,
    )
    .await;
    let (okta, _) = client_with(oauth_config(&server));
    for _ in 0..2 {
        let read = okta
            .read_app_users(&AttributeMapping::default())
            .await
            .expect("the token works");
        assert_eq!(read.users.len(), 1);
    }
}

#[tokio::test]
async fn a_token_that_claims_to_expire_at_once_is_not_fetched_for_every_request() {
    let server = MockServer::start().await;
    mount_token_and_users(
        &server,
        r#"{"token_type":"Bearer","expires_in":0,"access_token":"tok-1"}"#,
        1,
    )
    .await;
    let (okta, _) = client_with(oauth_config(&server));
    for _ in 0..5 {
        okta.read_app_users(&AttributeMapping::default())
            .await
            .expect("the token works");
    }
    // `expect(1)` on the token endpoint is verified when the server drops.
}

#[tokio::test]
async fn an_endless_token_answer_is_refused_at_the_cap() {
    let server = HostileServer::start(HostileBody::Endless).await;
    let key = okta_postman_sync_sim::okta_oauth::TestKeyPair::generate_ec();
    let (okta, _) = client_with(OktaClientConfig {
        auth: OktaAuth::OAuth(OAuthSettings {
            client_id: "0oaservice".into(),
            private_key_pem: key.private_pem.into(),
            key_id: None,
            scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            force_dpop: false,
        }),
        ..server.config()
    });
    let e = okta.check().await.expect_err("no token");
    match &e {
        OktaError::TooLarge { endpoint, cap, .. } => {
            assert_eq!(endpoint, "/oauth2/v1/token");
            assert_eq!(
                *cap,
                1024 * 1024,
                "token answers have their own, smaller cap"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "never retried");
}

#[tokio::test]
async fn absurd_rate_limit_headers_never_panic_and_waits_stay_bounded() {
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("18446744073709551615", "0", "9223372036854775807", None),
        (
            "18446744073709551615",
            "18446744073709551615",
            "-9223372036854775808",
            None,
        ),
        (
            "1",
            "0",
            "9223372036854775807",
            Some("Fri, 31 Dec 9999 23:59:59 GMT"),
        ),
        ("600", "0", "-1", Some("Mon, 01 Jan 1900 00:00:00 GMT")),
        ("0", "0", "9223372036854775807", Some("not a date")),
        ("2", "1", "99999999999999999999", Some("")),
    ];
    for (limit, remaining, reset, date) in cases {
        let server = MockServer::start().await;
        let with_headers = |r: ResponseTemplate| {
            let r = r
                .insert_header("X-Rate-Limit-Limit", *limit)
                .insert_header("X-Rate-Limit-Remaining", *remaining)
                .insert_header("X-Rate-Limit-Reset", *reset);
            match date {
                Some(d) => r.insert_header("Date", *d),
                None => r,
            }
        };
        // A 429 first, then three pages with the same headers.
        Mock::given(method("GET"))
            .and(path(USERS))
            .respond_with(with_headers(ResponseTemplate::new(429)))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        for (i, after) in [None, Some("p1"), Some("p2")].into_iter().enumerate() {
            let mut r = with_headers(ok_json(json!([app_user(
                &format!("00u{i}"),
                &format!("u{i}@example.com"),
                "ACTIVE",
                "ACTIVE"
            )])));
            if i < 2 {
                r = r.insert_header(
                    "Link",
                    format!(
                        "<{}>; rel=\"next\"",
                        next_url(&server, USERS, &format!("p{}", i + 1))
                    )
                    .as_str(),
                );
            }
            let m = Mock::given(method("GET")).and(path(USERS));
            let m = match after {
                None => m.and(query_param_is_missing("after")),
                Some(a) => m.and(query_param("after", a)),
            };
            m.respond_with(r).with_priority(2).mount(&server).await;
        }
        // Every wait is capped by max_wait (200 ms in the fast policy): the read ends.
        let (okta, _) = client(&server);
        let read = okta
            .read_app_users(&AttributeMapping::default())
            .await
            .unwrap_or_else(|e| panic!("{limit}/{remaining}/{reset}/{date:?}: {e}"));
        assert_eq!(read.users.len(), 3, "{limit}/{remaining}/{reset}/{date:?}");
    }
}

#[tokio::test]
async fn an_absurd_retry_after_on_a_429_without_rate_headers_waits_a_bounded_time() {
    for value in [
        "1e30",
        "-5",
        "18446744073709551615",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "NaN",
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(USERS))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", value))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(USERS))
            .respond_with(ok_json(json!([])))
            .with_priority(2)
            .mount(&server)
            .await;
        let (okta, _) = client(&server);
        okta.read_app_users(&AttributeMapping::default())
            .await
            .unwrap_or_else(|e| panic!("Retry-After {value}: {e}"));
    }
}

#[tokio::test]
async fn a_page_with_far_more_items_than_asked_for_fails_the_read() {
    let server = MockServer::start().await;
    let items: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": format!("00u{i}")}))
        .collect();
    Mock::given(method("GET"))
        .and(path(USERS))
        .respond_with(ok_json(Value::Array(items)))
        .expect(1)
        .mount(&server)
        .await;
    let (okta, _) = client(&server);
    let partial = okta
        .read_app_users(&AttributeMapping::default())
        .await
        .expect_err("refused");
    assert!(!partial.read.complete);
    assert!(
        partial.error.to_string().contains("more than 10000 items"),
        "{}",
        partial.error
    );
}
