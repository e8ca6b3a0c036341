//! Saved plans end to end, through the real binary against the simulators: `reconcile --dry-run
//! --save-plan FILE` writes the plan, `apply FILE` carries out exactly that plan or refuses (and
//! writes nothing) when anything moved, when the file was altered, is too old, or was made for
//! another state file. Assertions are on Postman's final state and the state database.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::World;
use okta_postman_sync_sim::OktaUserId;

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
async fn run(config: &Path, args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("--config").arg(config).args(args);
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

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn plan_path(w: &World) -> PathBuf {
    w.dir.path().join("plan.json")
}

/// `reconcile --dry-run --save-plan plan.json [extra]`, which must succeed; returns the file.
async fn save_plan(w: &World, extra: &[&str]) -> serde_json::Value {
    let path = plan_path(w);
    let path_s = path.display().to_string();
    let mut args = vec!["reconcile", "--dry-run", "--save-plan", &path_s];
    args.extend_from_slice(extra);
    let writes = w.writes();
    let out = run(&w.config_path(), &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.writes(), writes, "a dry run writes nothing");
    serde_json::from_slice(&std::fs::read(&path).expect("plan written")).expect("plan is JSON")
}

async fn apply(w: &World, extra: &[&str]) -> Output {
    let path = plan_path(w).display().to_string();
    let mut args = vec!["apply", &path, "--output", "json"];
    args.extend_from_slice(extra);
    run(&w.config_path(), &args).await
}

/// Four people, provisioned by a first run.
async fn four(w: &World) -> Vec<OktaUserId> {
    let ids = [
        ("Ann", "Lee"),
        ("Bob", "Ray"),
        ("Cat", "Poe"),
        ("Dan", "Fox"),
    ]
    .iter()
    .map(|(f, l)| w.okta_user(f, l))
    .collect();
    let r = w.run().await;
    assert_eq!(r.counts.create, 4, "{:?}", r.errors);
    ids
}

fn active(w: &World, name: &str) -> bool {
    w.member(&format!("{name}@example.com"))
        .unwrap_or_else(|| panic!("{name} missing"))
        .active
}

/// (op, label) of every saved or reported operation.
fn ops(v: &serde_json::Value, key: &str, label: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|o| {
            (
                o["op"].as_str().unwrap_or_default().to_string(),
                o[label].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pair(op: &str, who: &str) -> (String, String) {
    (op.to_string(), format!("{who}@example.com"))
}

/// Asserts a refused apply: exit 3, outcome refused, no write since `writes`, and returns the
/// report.
fn assert_refused(w: &World, out: &Output, writes: u64) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(3), "{}", text(out));
    let v = json(out);
    assert_eq!(v["outcome"], "refused", "{v}");
    assert_eq!(w.writes(), writes, "a refused apply writes nothing");
    v
}

#[tokio::test]
async fn applying_a_saved_plan_writes_exactly_its_operations_and_names_the_plan() {
    let w = World::new().await;
    let ids = four(&w).await;
    w.okta.unassign_user(&ids[0]).expect("unassign");
    w.okta_user("Eve", "Kim");
    let plan = save_plan(&w, &[]).await;
    assert_eq!(plan["format"], 1);
    assert_eq!(plan["app_id"], w.okta.app_id());
    assert!(plan["fingerprint"].as_str().is_some_and(|f| f.len() == 64));
    assert!(plan["checksum"].as_str().is_some_and(|f| f.len() == 64));
    assert_eq!(plan["policy"]["max_deactivations"], 25);
    assert_eq!(
        ops(&plan, "operations", "label"),
        vec![pair("create", "eve.kim"), pair("deactivate", "ann.lee")]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(plan_path(&w))
            .expect("meta")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "the plan file is private");
    }

    let writes = w.writes();
    let out = apply(&w, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["plan_id"], plan["plan_id"]);
    assert_eq!(
        ops(&report, "operations", "user_name"),
        ops(&plan, "operations", "label")
    );
    assert!(report["operations"]
        .as_array()
        .expect("ops")
        .iter()
        .all(|o| o["status"] == "done"));
    assert_eq!(w.writes() - writes, 2, "exactly the two saved writes");
    assert!(!active(&w, "ann.lee"));
    assert!(active(&w, "eve.kim"));
    w.assert_snapshot_matches_postman();

    // Every journal entry the applied plan wrote names it; earlier runs' entries do not.
    let db = rusqlite::Connection::open(w.state_path()).expect("open state");
    let mut q = db
        .prepare("SELECT run_id, plan_id FROM journal")
        .expect("query");
    let rows: Vec<(String, Option<String>)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let run_id = report["run_id"].as_str().expect("run id");
    let applied: Vec<_> = rows.iter().filter(|(r, _)| r == run_id).collect();
    assert_eq!(applied.len(), 2);
    for (_, p) in &applied {
        assert_eq!(p.as_deref(), plan["plan_id"].as_str());
    }
    assert!(rows
        .iter()
        .filter(|(r, _)| r != run_id)
        .all(|(_, p)| p.is_none()));
}

#[tokio::test]
async fn one_more_unassignment_since_the_plan_refuses_and_lists_it() {
    let w = World::new().await;
    let ids = four(&w).await;
    w.okta.unassign_user(&ids[0]).expect("unassign");
    save_plan(&w, &[]).await;
    w.okta.unassign_user(&ids[1]).expect("unassign");
    let writes = w.writes();
    let v = assert_refused(&w, &apply(&w, &[]).await, writes);
    let diff = &v["plan_differences"];
    assert_eq!(diff["only_in_saved"], serde_json::json!([]));
    assert_eq!(
        ops(diff, "only_in_fresh", "label"),
        vec![pair("deactivate", "bob.ray")]
    );
    let refusal = v["refusal"].as_str().expect("refusal");
    assert!(
        refusal.contains("deactivate bob.ray@example.com") && refusal.contains("fresh plan"),
        "{refusal}"
    );
    assert!(active(&w, "ann.lee") && active(&w, "bob.ray"));
}

#[tokio::test]
async fn a_rename_in_okta_since_the_plan_refuses_and_lists_it() {
    let w = World::new().await;
    let ids = four(&w).await;
    w.okta.unassign_user(&ids[0]).expect("unassign");
    save_plan(&w, &["--output", "json"]).await;
    w.okta
        .set_name(&ids[2], "Catherine", "Poe")
        .expect("rename");
    let writes = w.writes();
    let v = assert_refused(&w, &apply(&w, &[]).await, writes);
    assert_eq!(
        ops(&v["plan_differences"], "only_in_fresh", "label"),
        vec![pair("update", "cat.poe")]
    );
    let cat = w.member("cat.poe@example.com").expect("cat");
    assert_eq!(cat.given_name, "Cat", "nothing was renamed");
    assert!(active(&w, "ann.lee"), "nor deactivated");
}

#[tokio::test]
async fn a_member_changed_by_hand_refuses_a_full_plan() {
    let w = World::new().await;
    four(&w).await;
    w.okta_user("Eve", "Kim");
    let plan = save_plan(&w, &["--full"]).await;
    assert_eq!(plan["full"], true);
    assert!(plan["inputs"]["postman_listing"].is_string());
    w.postman
        .deactivate_by_hand("dan.fox@example.com")
        .expect("by hand");
    let writes = w.writes();
    let v = assert_refused(&w, &apply(&w, &[]).await, writes);
    assert_eq!(
        ops(&v["plan_differences"], "only_in_fresh", "label"),
        vec![pair("reactivate", "dan.fox")]
    );
    assert!(w.member("eve.kim@example.com").is_none(), "nothing created");
}

#[tokio::test]
async fn a_plan_older_than_max_age_is_refused() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    save_plan(&w, &[]).await;
    let out = apply(&w, &["--max-age", "1ms"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("fresh plan"), "{}", text(&out));
    assert_eq!(w.writes(), 0);
    assert!(!w.state_path().exists(), "not even the state file was made");
}

#[tokio::test]
async fn an_altered_plan_file_exits_2_and_says_so() {
    let w = World::new().await;
    let ids = four(&w).await;
    w.okta.unassign_user(&ids[0]).expect("unassign");
    save_plan(&w, &[]).await;
    let path = plan_path(&w);
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replace("ann.lee@example.com", "bob.ray@example.com");
    std::fs::write(&path, edited).expect("edit");
    let writes = w.writes();
    let out = apply(&w, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("altered or damaged"), "{}", text(&out));
    assert_eq!(w.writes(), writes);
    assert!(active(&w, "ann.lee") && active(&w, "bob.ray"));
}

#[tokio::test]
async fn a_plan_made_for_another_state_file_is_refused() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    save_plan(&w, &[]).await;
    let other = w.dir.path().join("other.toml");
    let state = w.state_path().display().to_string();
    std::fs::write(
        &other,
        w.config_text().replace(
            &state,
            &format!("{}/other-state.db", w.dir.path().display()),
        ),
    )
    .expect("write");
    let path = plan_path(&w).display().to_string();
    let out = run(&other, &["apply", &path]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("state file"), "{}", text(&out));
    assert_eq!(w.writes(), 0);
}

#[tokio::test]
async fn save_plan_without_dry_run_is_a_usage_error() {
    let w = World::new().await;
    let path = plan_path(&w).display().to_string();
    let out = run(&w.config_path(), &["reconcile", "--save-plan", &path]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--dry-run"), "{}", text(&out));
    assert!(!plan_path(&w).exists());
}

#[tokio::test]
async fn a_reviewed_mass_deactivation_goes_through_only_as_approved_and_only_for_the_listed_people()
{
    let mut w = World::new().await;
    w.extra_sync = "max_deactivations = 1".into();
    let ids = four(&w).await;
    for id in &ids[..3] {
        w.okta.unassign_user(id).expect("unassign");
    }
    // The guard fires, and a refused plan is not saved.
    let path = plan_path(&w).display().to_string();
    let out = run(
        &w.config_path(),
        &["reconcile", "--dry-run", "--save-plan", &path],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no plan was saved"), "{}", text(&out));
    assert!(!plan_path(&w).exists());

    // Reviewed and approved: the approval is recorded in the plan.
    let plan = save_plan(&w, &["--allow-deactivations", "3"]).await;
    assert_eq!(plan["policy"]["allow_deactivations"], 3);
    assert_eq!(
        ops(&plan, "operations", "label"),
        vec![
            pair("deactivate", "ann.lee"),
            pair("deactivate", "bob.ray"),
            pair("deactivate", "cat.poe"),
        ]
    );

    // Dan leaves too after the review: the plan no longer holds, and nobody is deactivated.
    w.okta.unassign_user(&ids[3]).expect("unassign");
    let writes = w.writes();
    let v = assert_refused(&w, &apply(&w, &[]).await, writes);
    assert_eq!(
        ops(&v["plan_differences"], "only_in_fresh", "label"),
        vec![pair("deactivate", "dan.fox")]
    );
    for who in ["ann.lee", "bob.ray", "cat.poe", "dan.fox"] {
        assert!(active(&w, who), "{who} was deactivated by a refused apply");
    }

    // Dan is back: the reviewed plan holds again and deactivates exactly the listed people.
    w.okta.assign_user(&ids[3]).expect("assign");
    let out = apply(&w, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["counts"]["deactivate"], 3);
    assert_eq!(report["plan_id"], plan["plan_id"]);
    for who in ["ann.lee", "bob.ray", "cat.poe"] {
        assert!(!active(&w, who), "{who} should be deactivated");
    }
    assert!(active(&w, "dan.fox"), "nobody beyond the list");
    assert_eq!(w.writes() - writes, 3);
}
