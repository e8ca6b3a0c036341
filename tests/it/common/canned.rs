//! A tiny HTTP server on 127.0.0.1:0 that answers every request with whatever the test put in
//! it: arbitrary status, content type and body, optionally an Okta `Link` header computed from
//! the request. Used to feed the API clients bad data directly.

use std::sync::{Arc, Mutex};

use okta_postman_sync::bootstrap::build_engine;
use okta_postman_sync::config::Config;
use okta_postman_sync::metrics::Metrics;
use okta_postman_sync::retry::RetryPolicy;
use okta_postman_sync::store::Store;
use okta_postman_sync::sync::Engine;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Okta paging: `Link` to `?after=<n+1 mod cycle>`, forming a cycle of this length.
    pub link_cycle: Option<u32>,
}

impl Default for Canned {
    fn default() -> Self {
        Canned {
            status: 200,
            content_type: "application/json".into(),
            body: b"[]".to_vec(),
            link_cycle: None,
        }
    }
}

pub struct CannedServer {
    pub base: String,
    pub answer: Arc<Mutex<Canned>>,
}

impl CannedServer {
    pub async fn start() -> CannedServer {
        let answer = Arc::new(Mutex::new(Canned::default()));
        let app = Router::new()
            .fallback(respond)
            .with_state(Arc::clone(&answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CannedServer { base, answer }
    }

    pub fn set(&self, c: Canned) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }
}

async fn respond(State(answer): State<Arc<Mutex<Canned>>>, req: Request) -> Response {
    let c = answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let status = StatusCode::from_u16(c.status).unwrap_or(StatusCode::OK);
    let mut response = (status, c.body).into_response();
    if let Ok(v) = HeaderValue::from_str(&c.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Some(cycle) = c.link_cycle {
        let after: u32 = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let next = format!(
            "<{}?limit=500&after={}>; rel=\"next\"",
            req.uri().path(),
            (after + 1) % cycle
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    response
}

/// An engine whose Okta and Postman are both the canned server; one attempt per request.
pub fn canned_engine(base: &str, dir: &std::path::Path) -> Engine {
    std::fs::write(dir.join("t"), "token").expect("token");
    let text = format!(
        "[okta]\norg_url = \"{base}\"\napp_id = \"0oa1app\"\napi_token_file = \"{d}/t\"\ntimeout = \"2s\"\n\
         [postman]\nscim_url = \"{base}/scim/v2\"\napi_key_file = \"{d}/t\"\ntimeout = \"2s\"\n\
         writes_per_minute = 60000\nreads_per_minute = 60000\n\
         [sync]\nstate_path = \"{d}/state.db\"\n",
        d = dir.display()
    );
    let config = Arc::new(Config::parse(&text).expect("config"));
    let policy = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::fast()
    };
    build_engine(
        config,
        okta_postman_sync::store::StoreHandle::new(Store::in_memory().expect("store")),
        true,
        Arc::new(Metrics::new()),
        policy,
    )
    .expect("engine")
}
