//! Fuzz-style property tests: `Config::parse` and the API response decoders (reached through
//! the real clients against a canned server returning arbitrary bodies) never panic, whatever
//! the input; a config with one bad value names that value's key.

use crate::common;

use std::sync::OnceLock;

use common::canned::{canned_engine, Canned, CannedServer};
use okta_postman_sync::config::{Config, ConfigError};
use okta_postman_sync::model::{ScimUserId, UserAttrs};
use okta_postman_sync::sync::Engine;
use proptest::prelude::*;

const VALID: &str = r#"
[okta]
org_url = "https://acme.okta.com"
app_id = "0oa1app"
api_token_file = "/run/okta"
max_rate_share = 0.5
page_size = 200
timeout = "30s"

[postman]
scim_url = "https://api.getpostman.com/scim/v2"
api_key_file = "/run/postman"
auth_scheme = "raw"
writes_per_minute = 180
reads_per_minute = 300
max_in_flight = 4
timeout = "30s"

[sync]
state_path = "/var/lib/x/state.db"
max_deactivations = 25
schedule = "0 */15 * * * *"
jitter = "30s"
full_every = "24h"
stale_after = "2h"
quarantine_after = 3
quarantine_for = "24h"

[server]
listen = "127.0.0.1:9464"

[log]
level = "info"
format = "json"
"#;

/// The `key = value` lines of VALID, with their dotted key.
fn keyed_lines() -> Vec<(usize, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, line) in VALID.lines().enumerate() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, _)) = t.split_once(" = ") {
            out.push((i, format!("{section}.{k}")));
        }
    }
    out
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9 :/._*-]{0,20}".prop_map(|s| format!("{s:?}")),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"-1s\"".to_string()),
        Just("\"http://evil.example.com\"".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn config_parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Config::parse(&text);
    }

    #[test]
    fn config_parse_never_panics_on_mangled_valid_configs(
        cut in 0..VALID.len(),
        insert in "[\\[\\]=\"a-z0-9 .\n]{0,12}",
    ) {
        let cut = (0..=cut).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{}{}", &VALID[..cut], insert, &VALID[cut..]);
        let _ = Config::parse(&text);
    }

    #[test]
    fn a_config_with_one_bad_value_names_its_key(index in any::<prop::sample::Index>(), value in toml_value()) {
        let lines = keyed_lines();
        let (line_no, key) = &lines[index.index(lines.len())];
        let text: String = VALID
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == *line_no {
                    let k = l.split_once(" = ").map(|(k, _)| k).unwrap_or(l);
                    format!("{k} = {value}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        if let Err(e) = Config::parse(&text) {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            let msg = e.to_string();
            match &e {
                ConfigError::Invalid { key: k, .. } => prop_assert_eq!(*k, key.as_str(), "{}", msg),
                _ => prop_assert!(msg.contains(leaf), "{} does not name {}", msg, key),
            }
        }
    }
}

/// One runtime, server and pair of clients for all the decoder cases.
struct Rig {
    rt: tokio::runtime::Runtime,
    server: CannedServer,
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let server = rt.block_on(CannedServer::start());
        let engine = {
            let _guard = rt.enter();
            canned_engine(&server.base, dir.path())
        };
        Rig {
            rt,
            server,
            engine,
            _dir: dir,
        }
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        // Near-valid JSON: fragments of real shapes, cut anywhere.
        (
            prop_oneof![
                Just(r#"[{"id":"00u1","status":"ACTIVE","scope":"USER","credentials":{"userName":"a@b.c"},"profile":{"firstName":"A","lastName":"B"},"_embedded":{"user":{"id":"00u1","status":"ACTIVE","profile":{"login":"a@b.c","email":"a@b.c","firstName":"A","lastName":"B"}}}}]"#),
                Just(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":1,"startIndex":1,"itemsPerPage":1,"Resources":[{"id":"u1","userName":"a@b.c","name":{"givenName":"A","familyName":"B"},"active":true}]}"#),
                Just(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"x"}"#),
            ],
            any::<prop::sample::Index>(),
        )
            .prop_map(|(s, i)| s.as_bytes()[..i.index(s.len() + 1)].to_vec()),
        "[\\[\\]{}\",:0-9a-z -]{0,64}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_api_clients_never_panic_on_arbitrary_answers(
        status in prop::sample::select(vec![200u16, 201, 204, 400, 401, 403, 404, 409, 429, 500]),
        content_type in prop::sample::select(vec!["application/json", "application/scim+json", "text/html", ""]),
        body in body(),
    ) {
        let rig = rig();
        rig.server.set(Canned { status, content_type: content_type.to_string(), body, link_cycle: None });
        let attrs = UserAttrs {
            user_name: "a@b.c".into(),
            given_name: "A".into(),
            family_name: "B".into(),
        };
        rig.rt.block_on(async {
            let _ = rig.engine.okta.read_app_users(&rig.engine.mapping).await;
            let _ = rig.engine.scim.list_users(|_| {}).await;
            let _ = rig.engine.scim.find_user_by_name("a@b.c").await;
            let _ = rig.engine.scim.create_user(&attrs, "00u1").await;
            let _ = rig.engine.scim.set_active(&ScimUserId::new("u1"), false).await;
        });
    }
}
