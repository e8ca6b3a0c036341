//! Bad configuration through the real binary: every invalid value is reported with its key,
//! the exit code is 2, and nothing panics or touches either API.

use crate::common;

use std::process::Command;

use common::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_value_is_reported_with_its_key_and_exit_code_2() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let base = w.config_text();
    // (key named in the error, line to replace by prefix, replacement)
    let cases: &[(&str, &str, &str)] = &[
        ("okta.org_url", "org_url =", "org_url = \"not a url\""),
        (
            "okta.org_url",
            "org_url =",
            "org_url = \"http://acme.okta.com\"",
        ),
        ("okta.app_id", "app_id =", "app_id = \"has spaces\""),
        ("okta.app_id", "app_id =", "app_id = \"\""),
        (
            "api_token_file",
            "api_token_file =",
            "api_token_file = \"/nonexistent/token\"",
        ),
        ("api_token_file", "api_token_file =", "api_token_file = 42"),
        ("postman.scim_url", "scim_url =", "scim_url = \"ftp://x\""),
        (
            "api_key_file",
            "api_key_file =",
            "api_key_file = \"/nonexistent/key\"",
        ),
        (
            "postman.writes_per_minute",
            "writes_per_minute =",
            "writes_per_minute = 0",
        ),
        (
            "writes_per_minute",
            "writes_per_minute =",
            "writes_per_minute = -5",
        ),
        (
            "reads_per_minute",
            "reads_per_minute =",
            "reads_per_minute = \"lots\"",
        ),
        ("postman.timeout", "timeout =", "timeout = \"soon\""),
        (
            "sync.quarantine_after",
            "[sync]",
            "[sync]\nquarantine_after = 0",
        ),
        (
            "sync.quarantine_for",
            "[sync]",
            "[sync]\nquarantine_for = \"forever\"",
        ),
        (
            "sync.schedule",
            "[sync]",
            "[sync]\nschedule = \"every tuesday\"",
        ),
        (
            "max_deactivations",
            "[sync]",
            "[sync]\nmax_deactivations = -1",
        ),
        ("sync.state_path", "state_path =", "state_path = \"\""),
        ("log.level", "level =", "level = \"info,[\""),
        (
            "log.format",
            "level =",
            "level = \"warn\"\nformat = \"xml\"",
        ),
        ("unknown_key", "[sync]", "[sync]\nunknown_key = 1"),
        ("okta.page_size", "[okta]", "[okta]\npage_size = 501"),
        (
            "okta.max_rate_share",
            "[okta]",
            "[okta]\nmax_rate_share = 1.5",
        ),
        (
            "server.listen",
            "[log]",
            "[server]\nlisten = \"everywhere\"\n\n[log]",
        ),
        (
            "postman.max_in_flight",
            "[postman]",
            "[postman]\nmax_in_flight = 0",
        ),
    ];
    let path = w.dir.path().join("bad.toml");
    for (key, prefix, replacement) in cases {
        let mut replaced = false;
        let text: String = base
            .lines()
            .map(|l| {
                if !replaced && l.trim_start().starts_with(prefix) {
                    replaced = true;
                    format!("{replacement}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert!(replaced, "{prefix} not in the test config");
        std::fs::write(&path, text).expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"))
            .arg("--config")
            .arg(&path)
            .args(["reconcile"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains(key),
            "the error for {key} names it: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(w.writes() + w.reads(), 0, "no config error reaches Postman");
    assert!(!w.state_path().exists(), "no state file is created");
}

#[test]
fn a_missing_or_empty_config_file_is_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    for path in [
        dir.path().join("missing.toml"),
        empty,
        dir.path().to_path_buf(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"))
            .arg("--config")
            .arg(&path)
            .arg("reconcile")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
