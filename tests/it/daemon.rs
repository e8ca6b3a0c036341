//! Tests of the daemon: in-process (shutdown is a parameter) for the scheduler and endpoints,
//! and as the real binary for signals and the single-writer lock.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::World;
use okta_postman_sync::daemon::run_with;
use okta_postman_sync::daemon::schedule::DaemonState;
use okta_postman_sync_sim::faults::FaultConfig;
use tokio_util::sync::CancellationToken;

/// Polls `cond` every 100 ms for up to `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

struct Daemon {
    cancel: CancellationToken,
    state: Arc<DaemonState>,
    url: String,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(w: &World) -> Daemon {
    start_engine(w.engine()).await
}

async fn start_engine(engine: okta_postman_sync::sync::Engine) -> Daemon {
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let state = Arc::new(DaemonState::default());
    let handle = tokio::spawn(run_with(
        engine,
        Some(listener),
        cancel.clone(),
        Arc::clone(&state),
    ));
    Daemon {
        cancel,
        state,
        url,
        handle,
    }
}

impl Daemon {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("stops promptly")
            .expect("join")
            .expect("clean stop");
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test]
async fn scheduled_runs_pick_up_okta_changes_and_endpoints_report_them() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    let d = start(&w).await;
    assert!(
        eventually(10, || w.member("ann.lee@example.com").is_some()).await,
        "first run at startup"
    );
    assert_eq!(get(&format!("{}/healthz", d.url)).await.0, 200);
    assert!(eventually(10, || d.state.last_success.lock().unwrap().is_some()).await);
    let (code, body) = get(&format!("{}/readyz", d.url)).await;
    assert_eq!(code, 200, "{body}");

    w.okta_user("Bob", "Ray");
    assert!(
        eventually(10, || w.member("bob.ray@example.com").is_some()).await,
        "a scheduled run picked up Bob"
    );

    let (code, metrics) = get(&format!("{}/metrics", d.url)).await;
    assert_eq!(code, 200);
    for name in [
        "okta_postman_sync_runs_total{outcome=\"ok\"}",
        "okta_postman_sync_run_duration_seconds",
        "okta_postman_sync_operations_total{kind=\"create\",result=\"done\"}",
        "okta_postman_sync_scim_requests_total",
        "okta_postman_sync_okta_requests_total",
        "okta_postman_sync_last_success_timestamp_seconds",
        "okta_postman_sync_managed_users{state=\"active\"}",
        "okta_postman_sync_unmanaged_members",
        "okta_postman_sync_quarantined_users",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    let (code, status) = get(&format!("{}/status", d.url)).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert!(v["runs"].as_array().is_some_and(|r| r.len() >= 2), "{v}");
    assert_eq!(v["managed_active"], 2);
    d.stop().await;
}

#[tokio::test]
async fn an_okta_outage_is_survived_and_the_next_run_succeeds() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    w.okta.set_faults(FaultConfig {
        seed: 1,
        rate_503: 1.0,
        ..FaultConfig::default()
    });
    let d = start(&w).await;
    // Runs fail while Okta is down, the daemon stays alive and unready.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(w.member("ann.lee@example.com").is_none());
    assert_eq!(get(&format!("{}/healthz", d.url)).await.0, 200);
    let (code, body) = get(&format!("{}/readyz", d.url)).await;
    assert_eq!(code, 503);
    assert!(body.contains("no successful run"), "{body}");
    w.okta.set_faults(FaultConfig::default());
    assert!(
        eventually(15, || w.member("ann.lee@example.com").is_some()).await,
        "recovered"
    );
    assert!(eventually(5, || d.state.last_success.lock().unwrap().is_some()).await);
    d.stop().await;
}

/// The runs recorded in the state file, oldest first, with how long each finished one took.
fn recorded_runs(w: &World) -> Vec<(okta_postman_sync::store::RunRecord, Option<Duration>)> {
    let Some(store) = okta_postman_sync::store::Store::open_read_only(&w.state_path())
        .ok()
        .flatten()
    else {
        return Vec::new();
    };
    let mut runs = store.last_runs(1000).unwrap_or_default();
    runs.reverse();
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("recorded time");
    runs.into_iter()
        .map(|r| {
            let took = r
                .finished_at
                .as_deref()
                .and_then(|f| (at(f) - at(&r.started_at)).to_std().ok());
            (r, took)
        })
        .collect()
}

/// Issue 14, fast recovery. The engine keeps the one-shot retry policy (each request may back
/// off for about 30 s, up to 5 minutes), so only the run's own budget (one period, at least 5 s,
/// for a 2 s schedule) can end a run quickly while Okta answers every request with 503.
#[tokio::test]
async fn during_an_okta_outage_each_scheduled_run_gives_up_after_its_retry_budget_and_a_change_made_after_it_arrives(
) {
    use okta_postman_sync::metrics::Metrics;
    use okta_postman_sync::retry::RetryPolicy;
    use okta_postman_sync::store::{Store, StoreHandle};

    let mut w = World::new().await;
    w.extra_sync = "schedule = \"*/2 * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    w.okta.set_faults(FaultConfig {
        seed: 1,
        rate_503: 1.0,
        ..FaultConfig::default()
    });
    let engine = okta_postman_sync::bootstrap::build_engine(
        w.config(),
        StoreHandle::new(Store::open(&w.state_path()).expect("store")),
        true,
        Arc::new(Metrics::new()),
        RetryPolicy::default(),
    )
    .expect("engine");
    let d = start_engine(engine).await;
    let failed = |w: &World| {
        recorded_runs(w)
            .into_iter()
            .filter(|(r, _)| r.outcome.as_deref() == Some("failed"))
            .collect::<Vec<_>>()
    };
    // A single request under the one-shot policy backs off for 16 s at the very least: two runs
    // could not both fail inside 25 s without the run budget.
    assert!(
        eventually(25, || failed(&w).len() >= 2).await,
        "runs fail within their budget and the next ticks run again: {:?}",
        recorded_runs(&w)
    );
    for (run, took) in failed(&w) {
        let took = took.expect("a failed run is finished");
        assert!(
            took < Duration::from_secs(12),
            "a run spent {took:?} retrying, not about its 5 s budget: {run:?}"
        );
        let errors = run
            .errors
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(errors.contains("503"), "{errors}");
    }
    assert!(w.member("ann.lee@example.com").is_none());

    // Okta comes back; a change made right after it reaches Postman at a following tick.
    w.okta.set_faults(FaultConfig::default());
    w.okta_user("Bob", "Ray");
    assert!(
        eventually(30, || w.member("bob.ray@example.com").is_some()
            && w.member("ann.lee@example.com").is_some())
        .await,
        "the change made after the outage arrived: {:?}",
        recorded_runs(&w)
    );
    d.stop().await;
}

#[tokio::test]
async fn a_tick_that_finds_a_run_still_going_is_skipped() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"".into();
    w.extra_postman = "max_in_flight = 1".into();
    for i in 0..6 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.postman.set_latency(Duration::from_millis(400));
    let d = start(&w).await;
    assert!(eventually(15, || d.state.skipped_ticks.load(Ordering::Relaxed) > 0).await);
    w.postman.set_latency(Duration::ZERO);
    d.stop().await;
    // Never two runs at once: no duplicate creates.
    assert!(w.postman.stats().creates_succeeded <= 6);
    w.members_without_duplicates();
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_daemon_promptly_with_exit_0_and_a_consistent_store() {
    use okta_postman_sync::store::Store;
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"".into();
    w.extra_postman = "max_in_flight = 2".into();
    for i in 0..40 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.postman.set_latency(Duration::from_millis(50));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"))
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn daemon");
    assert!(
        eventually(10, || w.postman.stats().creates_succeeded >= 5).await,
        "daemon is working"
    );

    // While it runs, a one-shot reconcile on the same state is refused.
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"));
    second.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = tokio::task::spawn_blocking(move || second.output().expect("run"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only one writer"));

    let started = Instant::now();
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "stopped within the documented bound"
    );

    // The store is consistent: every snapshot row matches a Postman account, nothing half-done
    // is left unresolved except what the journal records for the next run.
    let store = Store::open(&w.state_path()).expect("store opens");
    for m in store.snapshot().expect("snapshot").values() {
        let p = w
            .member(&m.attrs.user_name)
            .expect("snapshot row has a Postman account");
        // The simulator's ids are its own type: compare the strings.
        assert_eq!(p.id.as_str(), m.scim_id.as_str());
    }
    assert!(store.journal_pending().expect("pending").len() <= 2);
    drop(store);
    // And it finishes the job on the next run.
    w.postman.set_latency(Duration::ZERO);
    let r = w.run().await;
    assert_eq!(
        r.outcome,
        okta_postman_sync::sync::Outcome::Ok,
        "{:?}",
        r.errors
    );
    assert_eq!(w.members_without_duplicates().len(), 40);
}

// ---- issue 11: a safe HTTP surface, supervised runs ------------------------------------------

/// Every string that names a person in the test world below (plus their Okta ids).
fn personal_data(ids: &[String]) -> Vec<String> {
    let mut v = vec![
        "ann.lee".to_string(),
        "bad.user".to_string(),
        "example.com".to_string(),
        "Nope, not this one".to_string(),
    ];
    v.extend(ids.iter().cloned());
    v
}

fn assert_no_personal_data(what: &str, body: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!body.contains(s.as_str()), "{what} leaks {s:?}:\n{body}");
    }
}

/// A world with one user that syncs and one that Postman keeps refusing (a failure with an
/// error text that names them).
fn world_with_a_failing_user(w: &World) -> Vec<String> {
    let ann = w.okta_user("Ann", "Lee");
    let bad = w.okta_user("Bad", "User");
    w.postman.fail_user(
        "bad.user@example.com",
        400,
        Some("invalidValue"),
        "Nope, not this one",
    );
    vec![ann.to_string(), bad.to_string()]
}

async fn get_with(url: &str, auth: Option<&str>) -> (u16, String, reqwest::header::HeaderMap) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut req = client.get(url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.expect("body"), headers)
}

#[tokio::test]
async fn without_a_token_status_shows_counts_only_and_no_open_endpoint_names_anyone() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    let ids = world_with_a_failing_user(&w);
    let d = start(&w).await;
    assert!(eventually(15, || w.member("ann.lee@example.com").is_some()).await);
    // Wait until the failure is in the store, so there is something to leak.
    let url = format!("{}/status", d.url);
    let mut status = serde_json::Value::Null;
    for _ in 0..150 {
        let (code, body, _) = get_with(&url, None).await;
        assert_eq!(code, 200, "{body}");
        status = serde_json::from_str(&body).expect("json");
        if status["failing_users"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["details"], false, "{status}");
    assert_eq!(status["failing_users"], 1, "{status}");
    assert_eq!(status["managed_active"], 1, "{status}");
    assert!(status["runs"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(status.get("failures").is_none(), "{status}");
    // Even a bearer token is no key when none is configured.
    let (_, with_auth, _) = get_with(&url, Some("Bearer whatever-0123456789")).await;
    let secrets = personal_data(&ids);
    assert_no_personal_data("/status", &status.to_string(), &secrets);
    assert_no_personal_data("/status with a header", &with_auth, &secrets);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (_, body, _) = get_with(&format!("{}{path}", d.url), None).await;
        assert_no_personal_data(path, &body, &secrets);
    }
    d.stop().await;
}

#[tokio::test]
async fn status_details_need_the_bearer_token_and_a_wrong_one_gets_401() {
    let mut w = World::new().await;
    let token_path = w.dir.path().join("status-token");
    std::fs::write(&token_path, "correct-horse-battery-staple-42\n").expect("write token");
    w.extra_sync = format!(
        "schedule = \"* * * * * *\"\nstale_after = \"1h\"\n[server]\nstatus_token_file = {:?}",
        token_path.display().to_string()
    );
    let ids = world_with_a_failing_user(&w);
    let d = start(&w).await;
    let url = format!("{}/status", d.url);
    let good = "Bearer correct-horse-battery-staple-42";
    let mut details = serde_json::Value::Null;
    for _ in 0..150 {
        let (code, body, _) = get_with(&url, Some(good)).await;
        assert_eq!(code, 200, "{body}");
        details = serde_json::from_str(&body).expect("json");
        if details["failing_users"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With the token: today's details, failing users by name and their error text.
    assert_eq!(details["details"], true, "{details}");
    let failures = details["failures"].to_string();
    assert!(failures.contains("bad.user@example.com"), "{details}");
    assert!(failures.contains("Nope, not this one"), "{details}");
    // Without it, or with a wrong one: 401 and nothing else.
    let secrets = personal_data(&ids);
    for auth in [
        None,
        Some("Bearer correct-horse-battery-staple-43"),
        Some("Bearer correct-horse-battery-staple-42-and-more"),
        Some("Basic correct-horse-battery-staple-42"),
        Some("correct-horse-battery-staple-42"),
    ] {
        let (code, body, headers) = get_with(&url, auth).await;
        assert_eq!(code, 401, "{auth:?}: {body}");
        assert!(headers.contains_key("www-authenticate"), "{auth:?}");
        assert!(body.contains("status_token_file"), "{body}");
        assert_no_personal_data("a refused /status", &body, &secrets);
        assert!(!body.contains("managed_active"), "{body}");
    }
    // The open endpoints stay open.
    for path in ["/healthz", "/metrics"] {
        let (code, _, _) = get_with(&format!("{}{path}", d.url), None).await;
        assert_eq!(code, 200, "{path}");
    }
    d.stop().await;
}

#[tokio::test]
async fn a_panicking_run_is_recorded_as_failed_and_the_schedule_goes_on() {
    use okta_postman_sync::daemon::run_with_runner;
    use okta_postman_sync::daemon::schedule::{engine_runner, Runner};
    use std::sync::atomic::AtomicUsize;

    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    let engine = Arc::new(w.engine());
    let real = engine_runner(Arc::clone(&engine));
    let calls = Arc::new(AtomicUsize::new(0));
    // The first run records itself as started, like Engine::run, and then panics.
    let runner: Runner = {
        let (calls, store) = (Arc::clone(&calls), engine.store.clone());
        Arc::new(move |opts, cancel, progress| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let (real, store) = (Arc::clone(&real), store.clone());
            Box::pin(async move {
                if n == 0 {
                    store
                        .call(|s| s.run_started("panicking-run", chrono::Utc::now(), false))
                        .await
                        .expect("run row");
                    panic!("injected panic for the test");
                }
                real(opts, cancel, progress).await
            })
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let state = Arc::new(DaemonState::default());
    let handle = tokio::spawn(run_with_runner(
        Arc::clone(&engine),
        runner,
        None,
        Some(listener),
        cancel.clone(),
        Arc::clone(&state),
    ));
    // The panic did not stop the schedule: a later run provisions Ann.
    assert!(
        eventually(15, || w.member("ann.lee@example.com").is_some()).await,
        "a run after the panic synced"
    );
    assert!(calls.load(Ordering::SeqCst) >= 2);
    assert!(eventually(10, || state.last_success.lock().unwrap().is_some()).await);
    let (code, body, _) = get_with(&format!("{url}/healthz"), None).await;
    assert_eq!(code, 200, "{body}");
    let (_, metrics, _) = get_with(&format!("{url}/metrics"), None).await;
    assert!(
        metrics.contains("okta_postman_sync_run_panics_total 1"),
        "{metrics}"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("stops promptly")
        .expect("join")
        .expect("clean stop");
    // The panicked run is in the history as failed, with the reason.
    let runs = engine.store.call(|s| s.last_runs(50)).await.expect("runs");
    let panicked = runs
        .iter()
        .find(|r| r.run_id == "panicking-run")
        .expect("the panicked run is recorded");
    assert_eq!(panicked.outcome.as_deref(), Some("failed"));
    assert!(panicked.finished_at.is_some());
    assert!(
        panicked
            .errors
            .as_ref()
            .is_some_and(|e| e.to_string().contains("injected panic")),
        "{panicked:?}"
    );
}

/// The daemon binary with at most 128 open files (the limit under which 240 half-sent requests
/// made /healthz unreachable), 240 of them held from another address: /healthz still answers,
/// the /status token works, and the token appears nowhere in the (debug-level) log.
#[cfg(unix)]
#[tokio::test]
async fn the_binary_with_128_files_answers_healthz_under_a_flood_and_never_logs_the_token() {
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncWriteExt;

    let mut w = World::new().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    w.extra_sync = format!(
        "schedule = \"* * * * * *\"\nstale_after = \"1h\"\n[server]\nlisten = \"127.0.0.1:{port}\""
    );
    w.okta_user("Ann", "Lee");
    let token = "flood-test-token-7f3a9c1e5b";
    let stderr_path = w.dir.path().join("daemon.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"));
    cmd.arg("--config")
        .arg(w.config_path())
        .arg("run")
        .env("OKTA_POSTMAN_SYNC_STATUS_TOKEN", token)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn daemon");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the daemon came up");

    let mut held = Vec::new();
    for _ in 0..240 {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            continue;
        };
        if socket.bind("127.0.0.2:0".parse().expect("addr")).is_err() {
            continue;
        }
        if let Ok(mut s) = socket
            .connect(format!("127.0.0.1:{port}").parse().expect("addr"))
            .await
        {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            held.push(s);
        }
    }
    assert!(
        held.len() >= 200,
        "attack connections opened: {}",
        held.len()
    );
    let healthz = client.get(format!("{base}/healthz")).send().await;
    let status_ok = client
        .get(format!("{base}/status"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await;
    let status_bad = client
        .get(format!("{base}/status"))
        .header("Authorization", "Bearer not-the-token-at-all")
        .send()
        .await;
    drop(held);
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let exit = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert_eq!(
        healthz.expect("/healthz answers under the flood").status(),
        200
    );
    let ok = status_ok.expect("/status answers");
    assert_eq!(ok.status(), 200);
    let body = ok.text().await.expect("body");
    assert!(body.contains("\"details\":true"), "{body}");
    assert_eq!(status_bad.expect("/status answers").status(), 401);
    assert_eq!(exit.code(), Some(0));
    let log = std::fs::read_to_string(&stderr_path).expect("log");
    assert!(!log.is_empty(), "the debug log was captured");
    assert!(!log.contains(token), "the token leaked into the log");
}

/// The clock ran a day ahead while a full run succeeded, then came back; now every run fails.
/// The success recorded "tomorrow" must not make the daemon ready, and the full run recorded
/// "tomorrow" must not stop full runs.
#[tokio::test]
async fn a_success_recorded_in_the_future_neither_makes_the_daemon_ready_nor_stops_full_runs() {
    use okta_postman_sync::store::Store;
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    {
        let mut store = Store::open(&w.state_path()).expect("store");
        let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
        store
            .run_started("from-the-future", tomorrow, true)
            .expect("run row");
        store
            .run_finished(
                "from-the-future",
                tomorrow + chrono::Duration::minutes(1),
                "ok",
                &serde_json::json!({}),
                &serde_json::json!([]),
            )
            .expect("finish");
    }
    w.okta.set_faults(FaultConfig {
        seed: 1,
        rate_503: 1.0,
        ..FaultConfig::default()
    });
    let d = start(&w).await;
    let state_path = w.state_path();
    let finished_run = || {
        Store::open_read_only(&state_path)
            .ok()
            .flatten()
            .and_then(|s| s.last_runs(10).ok())
            .and_then(|runs| {
                runs.into_iter()
                    .find(|r| r.run_id != "from-the-future" && r.finished_at.is_some())
            })
    };
    assert!(
        eventually(15, || finished_run().is_some()).await,
        "a run finished"
    );
    let run = finished_run().expect("a finished run");
    assert!(
        run.full,
        "a full run was due despite the 'last full run' of tomorrow"
    );
    assert_eq!(run.outcome.as_deref(), Some("failed"));
    let (code, body, _) = get_with(&format!("{}/readyz", d.url), None).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("future"), "{body}");
    d.stop().await;
}
