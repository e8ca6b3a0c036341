//! Bad data from either API: malformed JSON, wrong types, HTML pages, truncated bodies and
//! absurd values fail that request with a clear error and change nothing (no Postman write, no
//! snapshot change). Also the `okta` and `scim` clients fed directly by a canned server, and
//! the real binary against an Okta that answers with hundreds of megabytes (peak memory
//! measured with `wait4`).

use crate::common;

use std::time::Duration;

use common::canned::{canned_engine, Canned, CannedServer};
use common::World;
use okta_postman_sync::store::Store;
use okta_postman_sync::sync::Outcome;
use okta_postman_sync_sim::faults::FaultConfig;

fn malformed_only(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        rate_malformed: 1.0,
        ..FaultConfig::default()
    }
}

#[tokio::test]
async fn malformed_okta_answers_fail_the_run_and_change_nothing() {
    let w = World::new().await;
    for i in 0..5 {
        w.okta_user(&format!("User{i}"), "Bad");
    }
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let writes = w.writes();
    w.okta
        .unassign_user(&w.okta.app_user_ids()[0])
        .expect("unassign");
    w.okta_user("New", "Comer");
    // Truncated JSON, HTML pages and wrong types, every answer, several seeds.
    for seed in 0..6 {
        w.okta.set_faults(malformed_only(seed));
        let r = w.run().await;
        assert_eq!(r.outcome, Outcome::Failed, "seed {seed}: {:?}", r.errors);
        assert!(
            r.errors.iter().any(|e| e.contains("Okta")),
            "{:?}",
            r.errors
        );
        assert_eq!(
            w.writes(),
            writes,
            "no Postman write from a bad Okta answer"
        );
    }
    assert_eq!(w.assert_snapshot_matches_postman(), 5);
}

#[tokio::test]
async fn malformed_postman_answers_fail_the_request_and_change_nothing() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    for seed in 0..6 {
        w.postman.set_faults(malformed_only(seed));
        let r = w.run().await;
        assert_ne!(r.outcome, Outcome::Ok, "seed {seed}");
        assert!(
            r.errors.iter().any(|e| e.contains("Postman")),
            "{:?}",
            r.errors
        );
        assert_eq!(w.postman.stats().creates_succeeded, 0);
    }
    assert!(Store::open(&w.state_path())
        .expect("store")
        .snapshot()
        .expect("snapshot")
        .is_empty());
    w.postman.set_faults(FaultConfig::default());
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    assert!(w.member("ann.lee@example.com").expect("created").active);
}

#[tokio::test]
async fn okta_next_links_that_go_round_in_a_circle_are_an_error_not_a_hang() {
    let server = CannedServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = canned_engine(&server.base, dir.path());
    for cycle in [1, 2, 3] {
        server.set(Canned {
            link_cycle: Some(cycle),
            ..Canned::default()
        });
        let read = tokio::time::timeout(
            Duration::from_secs(20),
            engine.okta.read_app_users(&engine.mapping),
        )
        .await
        .expect("the read must end");
        let err = read.expect_err("a paging cycle is an error").error;
        assert!(err.to_string().contains("page"), "{err}");
    }
}

#[tokio::test]
async fn absurd_okta_and_scim_values_are_refused_clearly() {
    let server = CannedServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = canned_engine(&server.base, dir.path());
    let okta_cases: &[&str] = &[
        r#"{"not": "an array"}"#,
        r#"[{"id": 12, "status": "ACTIVE"}]"#,
        r#"[{"id": ""}]"#,
        r#"[null]"#,
        r#"[1e999]"#,
    ];
    for body in okta_cases {
        server.set(Canned {
            body: body.as_bytes().to_vec(),
            ..Canned::default()
        });
        let r = engine.okta.read_app_users(&engine.mapping).await;
        match r {
            Err(p) => assert!(!p.read.complete, "{body}"),
            Ok(read) => assert!(read.users.is_empty(), "{body}: {:?}", read.users),
        }
    }
    let scim_cases: &[&str] = &[
        r#"{"totalResults": -1, "Resources": [{"id": "u1", "userName": "a@b.c"}]}"#,
        r#"{"totalResults": 1, "Resources": [{"id": 5, "userName": "a@b.c", "active": "yes"}]}"#,
        r#"{"totalResults": 1, "Resources": {"0": {}}}"#,
        r#"{"Resources": [{"userName": "a@b.c"}]}"#,
        "<html><body>Bad gateway</body></html>",
        r#"{"totalResults": 3, "Resour"#,
    ];
    for body in scim_cases {
        server.set(Canned {
            body: body.as_bytes().to_vec(),
            ..Canned::default()
        });
        let r = engine.scim.list_users(|_| {}).await;
        let e = r.expect_err(body);
        assert!(e.to_string().contains("Postman"), "{body}: {e}");
    }
}

#[tokio::test]
async fn an_html_page_in_answer_to_a_write_is_not_taken_for_success() {
    let server = CannedServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = canned_engine(&server.base, dir.path());
    let id = okta_postman_sync::model::ScimUserId::new("u1");
    for (content_type, body) in [
        ("text/html", "<html><body>We'll be right back</body></html>"),
        ("application/json", r#"{"schemas": ["urn:ietf"#),
        ("application/json", "[1, 2]"),
    ] {
        server.set(Canned {
            content_type: content_type.into(),
            body: body.as_bytes().to_vec(),
            ..Canned::default()
        });
        let e = engine
            .scim
            .set_active(&id, false)
            .await
            .expect_err("not a success");
        assert!(e.to_string().contains("PATCH"), "{e}");
    }
    // An empty 204-style answer is a success.
    server.set(Canned {
        status: 204,
        body: Vec::new(),
        ..Canned::default()
    });
    engine
        .scim
        .set_active(&id, false)
        .await
        .expect("204 is success");
}

/// Bytes the hostile Okta streams as the first app-user page: far beyond the client's 32 MiB
/// body cap, and enough to take the unbounded client of before to gigabytes.
const HOSTILE_PAGE_BYTES: u64 = 300 * 1024 * 1024;
/// Peak RSS the binary may reach against that page. The cap holds at most 32 MiB of body (the
/// buffer's last doubling briefly holds 16 + 32 MiB); the rest of the process (runtime, TLS
/// roots, SQLite, the plan) stays under 30 MiB in the runs of benches/scale.rs. 128 MiB leaves
/// room for allocator slack while failing clearly for anything that reads the page whole
/// (the unbounded client reached 1.8 GB on a 200 MB page).
const PEAK_RSS_LIMIT_KIB: u64 = 128 * 1024;

/// An Okta on 127.0.0.1:0 whose every answer is a chunked, syntactically valid page of
/// copies of `item`, `total` bytes long, generated on the fly (never held in memory here).
async fn start_hostile_okta(total: u64, item: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // 64 KiB chunks of items.
                let mut payload = b"[".to_vec();
                while payload.len() + item.len() <= 64 * 1024 {
                    payload.extend_from_slice(item);
                }
                let frame = |data: &[u8]| {
                    let mut f = format!("{:x}\r\n", data.len()).into_bytes();
                    f.extend_from_slice(data);
                    f.extend_from_slice(b"\r\n");
                    f
                };
                let first = frame(&payload);
                let rest = frame(&payload[1..]);
                let mut sent = first.len() as u64;
                if conn.write_all(&first).await.is_err() {
                    return;
                }
                while sent < total {
                    if conn.write_all(&rest).await.is_err() {
                        return;
                    }
                    sent += rest.len() as u64;
                }
                let end = frame(br#"{"id":"00uhostilelast"}]"#);
                let _ = conn.write_all(&end).await;
                let _ = conn.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    base
}

/// Runs `program args...` and returns (exit code, peak RSS in KiB) from `wait4`, measured by a
/// fresh copy of this test executable (the `rss_probe` test below): Linux folds the memory
/// high-water mark of the process that spawns a program into the program's `ru_maxrss`, so
/// spawning the binary from this process (the harness, the simulators) would report their
/// memory as its own. The same indirection as benches/scale.rs.
fn run_measured(program: &str, args: &[String], out: &std::path::Path) -> (i32, u64) {
    let usage = out.with_extension("usage");
    let mut spec = vec![
        usage.display().to_string(),
        out.display().to_string(),
        program.to_string(),
    ];
    spec.extend(args.iter().cloned());
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        // The probe's full name in the one integration-test binary (`tests/it/main.rs`).
        .args([
            "bad_data::rss_probe",
            "--exact",
            "--test-threads=1",
            "--quiet",
        ])
        .env(
            "OKTA_POSTMAN_SYNC_RSS_PROBE",
            serde_json::to_string(&spec).expect("json"),
        )
        .stdout(std::process::Stdio::null())
        .status()
        .expect("start the probe");
    assert!(status.success(), "the probe failed: {status}");
    let text = std::fs::read_to_string(&usage).expect("usage file");
    let nums: Vec<i64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [code, rss] => (code as i32, rss as u64),
        _ => panic!("bad usage file: {text:?}"),
    }
}

/// Not a test of its own: with `OKTA_POSTMAN_SYNC_RSS_PROBE` set (by [`run_measured`]) it runs
/// the program given there, output to a file, reaps it with `wait4` and writes
/// "exit-code max-rss-KiB". Without it, it does nothing.
#[test]
fn rss_probe() {
    let Ok(spec) = std::env::var("OKTA_POSTMAN_SYNC_RSS_PROBE") else {
        return;
    };
    let spec: Vec<String> = serde_json::from_str(&spec).expect("probe spec");
    let [usage, out, program, args @ ..] = &spec[..] else {
        panic!("probe spec too short: {spec:?}");
    };
    let log = std::fs::File::create(out).expect("output file");
    let child = std::process::Command::new(program)
        .args(args)
        .env_remove("OKTA_POSTMAN_SYNC_RSS_PROBE")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start the program");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped (`Child::wait` is never called on it).
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid, "wait4 failed");
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports ru_maxrss in KiB.
    std::fs::write(usage, format!("{code} {}\n", ru.ru_maxrss)).expect("usage file");
}

/// Runs `reconcile` of `w`'s config pointed at `hostile`; returns the exit code, the peak RSS
/// in KiB and the output.
async fn reconcile_against(w: &World, hostile: &str, name: &str) -> (i32, u64, String) {
    let text = w.config_text().replace(&w.okta.base_url(), hostile);
    assert!(
        text.contains(hostile),
        "the config points at the hostile Okta"
    );
    let config = w.dir.path().join(format!("{name}.toml"));
    std::fs::write(&config, text).expect("write config");
    let out = w.dir.path().join(format!("{name}.log"));
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "reconcile".into(),
    ];
    let out2 = out.clone();
    let (code, peak_kib) = tokio::task::spawn_blocking(move || {
        run_measured(env!("CARGO_BIN_EXE_okta-postman-sync"), &args, &out2)
    })
    .await
    .expect("join");
    eprintln!("peak RSS of reconcile against {name}: {peak_kib} KiB");
    (
        code,
        peak_kib,
        std::fs::read_to_string(&out).unwrap_or_default(),
    )
}

#[tokio::test]
async fn hostile_okta_pages_fail_the_run_with_bounded_memory_and_no_deactivation() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let writes = w.writes();

    // 300 MB of well-formed app users: stopped at the body cap.
    let hostile = start_hostile_okta(
        HOSTILE_PAGE_BYTES,
        br#"{"id":"00uhostile000000000","status":"ACTIVE"},"#,
    )
    .await;
    let (code, peak_kib, log) = reconcile_against(&w, &hostile, "a-300-mb-page").await;
    assert_eq!(code, 1, "a failed Okta read exits 1: {log}");
    assert!(
        log.contains("limit on a response body"),
        "the error names the size limit: {log}"
    );
    assert!(
        peak_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak_kib} KiB, limit {PEAK_RSS_LIMIT_KIB} KiB"
    );

    // Just under the cap, but millions of tiny items: refused by count, not decoded whole.
    let hostile = start_hostile_okta(30 * 1024 * 1024, br#"{"id":"00u1"},"#).await;
    let (code, peak_kib, log) = reconcile_against(&w, &hostile, "a-page-of-tiny-items").await;
    assert_eq!(code, 1, "a failed Okta read exits 1: {log}");
    assert!(log.contains("more than 10000 items"), "{log}");
    assert!(
        peak_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak_kib} KiB, limit {PEAK_RSS_LIMIT_KIB} KiB"
    );

    assert_eq!(w.writes(), writes, "no Postman write, no deactivation");
    assert!(w.member("ann.lee@example.com").is_some_and(|u| u.active));
    assert!(w.member("bob.ray@example.com").is_some_and(|u| u.active));
}
