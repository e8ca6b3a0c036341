//! Tests of the real binary: exit codes, the JSON output contract, the single-writer lock,
//! `check`, `status`, `demo`, and that no secret ever reaches the output or the logs.

use crate::common;

use std::process::{Command, Output};

use common::{World, OKTA_TOKEN, POSTMAN_KEY};
use okta_postman_sync_sim::okta::OktaSimConfig;
use okta_postman_sync_sim::postman::{AuthScheme, PostmanSimConfig};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"));
    c.env_remove("OKTA_API_TOKEN")
        .env_remove("POSTMAN_SCIM_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("RUST_LOG")
        .env_remove("OKTA_POSTMAN_SYNC_CONFIG");
    c
}

/// Runs the binary on a blocking thread so the simulators keep serving.
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run the binary"))
        .await
        .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn reconcile_json_output_follows_the_documented_contract() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    let mut cmd = bin();
    cmd.args(["--config"])
        .arg(w.config_path())
        .args(["reconcile", "--output", "json"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["outcome"], "ok");
    for k in [
        "create",
        "update",
        "deactivate",
        "reactivate",
        "adopt",
        "unchanged",
        "failed",
    ] {
        assert!(v["counts"][k].is_u64(), "counts.{k} missing");
    }
    assert_eq!(v["counts"]["create"], 2);
    let ops = v["operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 2);
    for op in ops {
        assert_eq!(op["op"], "create");
        assert_eq!(op["status"], "done");
        assert!(op["user_name"]
            .as_str()
            .is_some_and(|u| u.ends_with("@example.com")));
        assert!(op["okta_id"].as_str().is_some_and(|u| !u.is_empty()));
    }
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.config_path())
        .args(["reconcile", "--dry-run"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DRY RUN") && stdout.contains("ann.lee@example.com"),
        "{stdout}"
    );
    assert_eq!(w.writes(), 0);
    assert!(!w.state_path().exists());
}

#[tokio::test]
async fn configuration_errors_exit_2_and_name_the_key() {
    let w = World::new().await;
    let path = w.dir.path().join("bad.toml");
    std::fs::write(
        &path,
        w.config_text()
            .replace("writes_per_minute = 6000", "writes_per_minute = \"fast\""),
    )
    .expect("write");
    let mut cmd = bin();
    cmd.arg("--config").arg(&path).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("writes_per_minute"), "{}", text(&out));

    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.dir.path().join("missing.toml"))
        .arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("missing.toml"), "{}", text(&out));
}

#[tokio::test]
async fn a_refused_run_exits_3() {
    let mut w = World::new().await;
    w.extra_sync = "max_deactivations = 1".into();
    let a = w.okta_user("Ann", "Lee");
    let b = w.okta_user("Bob", "Ray");
    w.okta_user("Cat", "Poe");
    w.run().await;
    w.okta.unassign_user(&a).expect("unassign");
    w.okta.unassign_user(&b).expect("unassign");
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("--allow-deactivations 2"),
        "{}",
        text(&out)
    );
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.config_path())
        .args(["reconcile", "--allow-deactivations", "2"]);
    assert_eq!(run(cmd).await.status.code(), Some(0));
}

#[tokio::test]
async fn a_second_writer_on_the_same_state_is_refused() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let _held = okta_postman_sync::store::StateLock::acquire(&w.state_path()).expect("lock");
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("only one writer"), "{}", text(&out));
    assert_eq!(w.writes(), 0);
}

#[tokio::test]
async fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    std::fs::write(w.state_path(), vec![0x42u8; 8192]).expect("write garbage");
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("state.db") && text(&out).contains("corrupt"),
        "{}",
        text(&out)
    );
    assert_eq!(w.writes(), 0);
    assert_eq!(
        std::fs::read(w.state_path()).expect("read"),
        vec![0x42u8; 8192]
    );
}

#[tokio::test]
async fn check_passes_with_good_credentials_and_explains_failures() {
    let w = World::new().await;
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("check");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Both sides pass"), "{}", text(&out));
    assert_eq!(w.writes(), 0, "check never writes");

    std::fs::write(w.dir.path().join("postman-key"), "wrong-key").expect("write");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.config_path())
        .args(["check", "--output", "json"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    let detail = v["items"][1]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("ACTIVE"),
        "the product document's advice: {detail}"
    );
    assert!(!text(&out).contains("wrong-key"));

    std::fs::write(w.dir.path().join("okta-token"), "expired-token").expect("write");
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("check");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("[FAIL] okta"), "{}", text(&out));
}

#[tokio::test]
async fn check_says_which_auth_scheme_works() {
    let w = World::with(
        OktaSimConfig::default(),
        PostmanSimConfig {
            auth_scheme: AuthScheme::Bearer,
            ..PostmanSimConfig::default()
        },
    )
    .await;
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("check");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("auth_scheme = \"bearer\""),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn status_reports_managed_users_and_the_last_runs() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    w.postman
        .add_member("root@example.com", "Root", "Admin", true)
        .expect("seed");
    w.run().await;
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.config_path())
        .args(["status", "--output", "json"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["managed_active"], 1);
    assert_eq!(v["unmanaged"][0]["user_name"], "root@example.com");
    assert_eq!(v["runs"][0]["outcome"], "ok");
}

#[tokio::test]
async fn no_secret_appears_in_output_or_logs_even_at_trace_level() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let path = w.dir.path().join("trace.toml");
    std::fs::write(
        &path,
        w.config_text()
            .replace("level = \"warn\"", "level = \"trace\"\nformat = \"json\""),
    )
    .expect("write");
    for args in [
        vec!["reconcile", "--output", "json"],
        vec!["check"],
        vec!["reconcile", "--dry-run"],
    ] {
        let mut cmd = bin();
        cmd.arg("--config").arg(&path).args(&args);
        let out = run(cmd).await;
        let all = text(&out);
        assert!(
            all.len() > 1000,
            "trace logging produced output for {args:?}"
        );
        assert!(!all.contains(OKTA_TOKEN), "Okta token leaked by {args:?}");
        assert!(!all.contains(POSTMAN_KEY), "Postman key leaked by {args:?}");
    }
    // And not in the database either.
    let db = std::fs::read(w.state_path()).expect("state");
    let wal = std::fs::read(format!("{}-wal", w.state_path().display())).unwrap_or_default();
    for bytes in [db, wal] {
        let s = String::from_utf8_lossy(&bytes);
        assert!(!s.contains(OKTA_TOKEN) && !s.contains(POSTMAN_KEY));
    }
}

#[tokio::test]
async fn demo_runs_with_no_accounts_and_converges() {
    let mut cmd = bin();
    cmd.args(["demo", "--users", "60"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 SCIM writes"), "{}", text(&out));
}

#[tokio::test]
async fn demo_output_piped_to_a_log_file_has_no_carriage_return_frames() {
    // `output()` pipes stdout and stderr: neither is a terminal, so no progress bar is drawn.
    let mut cmd = bin();
    cmd.args(["demo", "--users", "60"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !out.stdout.contains(&b'\r') && !out.stderr.contains(&b'\r'),
        "a progress frame reached a pipe: {:?}",
        text(&out)
    );
    assert!(text(&out).contains("First reconcile"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reconcile_off_a_terminal_logs_progress_lines_and_draws_no_frames() {
    let w = World::new().await;
    for i in 0..120 {
        w.okta_user(&format!("Ann{i}"), "Lee");
    }
    let path = w.dir.path().join("info.toml");
    std::fs::write(
        &path,
        w.config_text()
            .replace("level = \"warn\"", "level = \"info\""),
    )
    .expect("write");
    let mut cmd = bin();
    cmd.arg("--config").arg(&path).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("progress: 6/120 operations") && log.contains("progress: 120/120 operations"),
        "{log}"
    );
    assert!(!log.contains('\r') && !out.stdout.contains(&b'\r'), "{log}");
}

#[tokio::test]
async fn every_log_line_of_a_run_carries_its_run_id() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    let path = w.dir.path().join("json.toml");
    std::fs::write(
        &path,
        w.config_text()
            .replace("level = \"warn\"", "level = \"info\"\nformat = \"json\""),
    )
    .expect("write");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(&path)
        .args(["reconcile", "--output", "json"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 4,
        "plan lines, operation lines and a summary: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let run_id = report["run_id"].as_str().expect("run id").to_string();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("each log line is JSON");
        assert!(line.contains(&run_id), "line without run_id: {v}");
    }
    assert!(
        lines.iter().any(|l| l.contains("run finished")),
        "one summary line per run"
    );
}

#[tokio::test]
async fn check_explains_a_key_whose_creator_left_the_team() {
    let w = World::with(
        OktaSimConfig::default(),
        PostmanSimConfig {
            orphaned_key: true,
            ..PostmanSimConfig::default()
        },
    )
    .await;
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("check");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out);
    assert!(
        all.contains("no longer on the team") && all.contains("Super Admin"),
        "{all}"
    );
    assert_eq!(
        all.matches("no longer on the team").count(),
        1,
        "the advice is given once: {all}"
    );
}

/// Polls `cond` every 20 ms for at most `secs` seconds.
async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}

/// Sends SIGTERM and waits for the child for at most `limit`: its exit code, or `None` when it
/// was still running (it is then killed, so the test cannot hang).
async fn terminate(mut child: std::process::Child, limit: std::time::Duration) -> Option<i32> {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn sigterm_during_a_slow_okta_read_stops_reconcile_within_ten_seconds() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    // Every Okta answer takes two minutes: the run is stuck in its first read.
    w.okta.set_latency(std::time::Duration::from_secs(120));
    let child = bin()
        .arg("--config")
        .arg(w.config_path())
        .arg("reconcile")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for(20, || w
            .okta
            .stats()
            .requests
            .by_method
            .get("GET")
            .is_some_and(|n| *n >= 1))
        .await,
        "the read started"
    );
    let code = terminate(child, std::time::Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(1),
        "exits 1 (not converged) within 10 s of SIGTERM"
    );
    assert_eq!(w.postman.stats().writes, 0);
}

#[tokio::test]
async fn sigterm_during_a_slow_postman_write_stops_within_ten_seconds_and_the_journal_finishes_it()
{
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    assert_eq!(w.run().await.outcome, okta_postman_sync::sync::Outcome::Ok);
    w.okta_user("Bob", "Ray");
    // Postman holds every answer for two minutes: the create of Bob is on the wire.
    w.postman.set_latency(std::time::Duration::from_secs(120));
    let before = w.postman.stats().writes;
    let child = bin()
        .arg("--config")
        .arg(w.config_path())
        .arg("reconcile")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for(20, || w.postman.stats().writes > before).await,
        "the write started"
    );
    let code = terminate(child, std::time::Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "exits 1 within 10 s of SIGTERM");
    // The interrupted create is resolved by the next run: Bob exists exactly once.
    w.postman.set_latency(std::time::Duration::ZERO);
    let r = w.run().await;
    assert_eq!(
        r.outcome,
        okta_postman_sync::sync::Outcome::Ok,
        "{:?}",
        r.errors
    );
    let members = w.members_without_duplicates();
    assert!(members.contains_key("bob.ray@example.com"), "{members:?}");
    assert_eq!(members.len(), 2);
}

#[tokio::test]
async fn the_state_and_lock_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    // A permissive umask, as a shell or a unit without UMask= leaves it.
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("reconcile");
    let cmd = {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask in the forked child before exec touches no shared state.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        cmd
    };
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state = w.state_path().display().to_string();
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let path = format!("{state}{suffix}");
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // -wal/-shm may have been checkpointed away
        };
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}");
        checked += 1;
    }
    assert!(checked >= 2, "the database and the lock file exist");
}

#[tokio::test]
async fn a_lock_file_planted_as_a_symlink_is_refused_and_its_target_untouched() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let victim = w.dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").expect("victim");
    let lock = format!("{}.lock", w.state_path().display());
    std::os::unix::fs::symlink(&victim, &lock).expect("plant the link");
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    // A hard link is refused too.
    std::fs::remove_file(&lock).expect("unlink");
    std::fs::hard_link(&victim, &lock).expect("hard link");
    let mut cmd = bin();
    cmd.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
}
