//! Database faults, through the real binary: a state file that is unreadable, read-only,
//! locked, held by another instance, corrupt, half-written or from a newer version gives a clear
//! error naming the file and a non-zero exit, leaves the file untouched and changes nothing in
//! Postman. Never a silent fresh start. A failed migration leaves the database as it was.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::World;
use okta_postman_sync::store::{StateLock, Store, StoreError};
use okta_postman_sync_sim::{OktaSimConfig, PostmanSimConfig};

struct Ran {
    code: Option<i32>,
    stderr: String,
}

fn reconcile(config: &Path, as_nobody: bool) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"));
    cmd.arg("--config")
        .arg(config)
        .args(["reconcile", "--output", "json"]);
    if as_nobody {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("run the binary");
    Ran {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn is_root() -> bool {
    // Root ignores permission bits, so chmod cannot make a file unreadable or read-only for it.
    Path::new("/proc/self/status").exists()
        && std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

/// A world with a converged state file (3 users), closed and checkpointed.
async fn synced_world() -> World {
    let w = World::with(
        OktaSimConfig::default(),
        PostmanSimConfig {
            writes_per_minute: 100_000,
            reads_per_minute: 100_000,
            ..PostmanSimConfig::default()
        },
    )
    .await;
    for i in 0..3 {
        w.okta_user(&format!("User{i}"), "Store");
    }
    let r = reconcile(&w.config_path(), false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    w
}

/// Asserts a failed run: exit 1, the message names the state file and says `what`, no Postman
/// write was made, and the file's bytes are those given.
fn assert_refused(w: &World, r: &Ran, what: &str, writes_before: u64, bytes: Option<&[u8]>) {
    eprintln!("binary stderr ({what}): {}", r.stderr);
    assert_eq!(r.code, Some(1), "exit code; stderr: {}", r.stderr);
    assert!(
        r.stderr.contains(&w.state_path().display().to_string()),
        "the error names the file: {}",
        r.stderr
    );
    assert!(
        r.stderr.to_lowercase().contains(what),
        "the error says {what:?}: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(w.writes(), writes_before, "no Postman write");
    if let Some(bytes) = bytes {
        assert_eq!(
            std::fs::read(w.state_path()).expect("read state"),
            bytes,
            "the state file is untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_place_of_the_state_file_is_an_error_not_a_fresh_start() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    std::fs::create_dir(w.state_path()).expect("mkdir");
    let r = reconcile(&w.config_path(), false);
    assert_refused(&w, &r, "cannot be opened", 0, None);
    assert!(w.state_path().is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_is_an_error_and_is_left_untouched() {
    let w = synced_world().await;
    let bytes = std::fs::read(w.state_path()).expect("read");
    let writes = w.writes();
    // Root reads anything: run the binary as `nobody` then, with the files it needs readable.
    let as_nobody = is_root();
    if as_nobody {
        open_up_for_nobody(&w);
    }
    std::fs::set_permissions(w.state_path(), std::fs::Permissions::from_mode(0o000))
        .expect("chmod");
    let r = reconcile(&w.config_path(), as_nobody);
    std::fs::set_permissions(w.state_path(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod back");
    assert_refused(&w, &r, "cannot be opened", writes, Some(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_file_is_an_error_and_is_left_untouched() {
    let w = synced_world().await;
    w.okta_user("New", "Comer");
    let bytes = std::fs::read(w.state_path()).expect("read");
    let writes = w.writes();
    let as_nobody = is_root();
    if as_nobody {
        open_up_for_nobody(&w);
        // Owned by root with mode 644: readable, not writable, for nobody. The directory is
        // not writable either, as with a read-only mount.
        std::fs::set_permissions(w.state_path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    } else {
        std::fs::set_permissions(w.state_path(), std::fs::Permissions::from_mode(0o444))
            .expect("chmod");
    }
    let r = reconcile(&w.config_path(), as_nobody);
    std::fs::set_permissions(w.state_path(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod back");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("read-only") || r.stderr.contains("cannot be opened"),
        "{}",
        r.stderr
    );
    assert_refused(&w, &r, "state database", writes, Some(&bytes));
    assert!(w.member("new.comer@example.com").is_none());
}

/// Lets uid 65534 reach the config, the secrets and the state lock, not write the directory.
fn open_up_for_nobody(w: &World) {
    let config = w.config_path();
    for p in [
        w.dir.path().to_path_buf(),
        config,
        w.dir.path().join("okta-token"),
        w.dir.path().join("postman-key"),
    ] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let lock = format!("{}.lock", w.state_path().display());
    std::fs::write(&lock, "").expect("lock file");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for suffix in ["-wal", "-shm"] {
        let p = format!("{}{suffix}", w.state_path().display());
        if Path::new(&p).exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_locked_by_another_connection_is_a_clear_error() {
    let w = synced_world().await;
    w.okta_user("New", "Comer");
    let writes = w.writes();
    let holder = rusqlite::Connection::open(w.state_path()).expect("open");
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; DELETE FROM unmanaged;")
        .expect("hold an exclusive transaction");
    let r = reconcile(&w.config_path(), false);
    holder.execute_batch("ROLLBACK").expect("rollback");
    drop(holder);
    assert_refused(&w, &r, "locked", writes, None);
    let store = Store::open(&w.state_path()).expect("usable afterwards");
    assert_eq!(store.snapshot().expect("snapshot").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_state_is_refused() {
    let w = synced_world().await;
    let _held = StateLock::acquire(&w.state_path()).expect("lock");
    let r = reconcile(&w.config_path(), false);
    assert_refused(&w, &r, "another okta-postman-sync", w.writes(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_an_error_and_is_left_untouched() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let garbage: Vec<u8> = (0..65_536u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(w.state_path(), &garbage).expect("write");
    let r = reconcile(&w.config_path(), false);
    assert_refused(&w, &r, "corrupt", 0, Some(&garbage));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_state_file_is_an_error_and_is_left_untouched() {
    let w = synced_world().await;
    w.okta_user("New", "Comer");
    for i in 0..200 {
        w.okta_user(&format!("Filler{i}"), "Store");
    }
    // A bigger file, so that half of it cuts through the tables.
    let r = reconcile(&w.config_path(), false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut bytes = std::fs::read(w.state_path()).expect("read");
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    bytes.truncate(bytes.len() / 2);
    std::fs::write(w.state_path(), &bytes).expect("truncate");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", w.state_path().display()));
    }
    let writes = w.writes();
    w.okta_user("Late", "Comer");
    let r = reconcile(&w.config_path(), false);
    assert_refused(&w, &r, "corrupt", writes, Some(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_a_newer_version_is_refused() {
    let w = synced_world().await;
    {
        let c = rusqlite::Connection::open(w.state_path()).expect("open");
        c.execute_batch("PRAGMA user_version = 99").expect("bump");
    }
    let bytes = std::fs::read(w.state_path()).expect("read");
    let r = reconcile(&w.config_path(), false);
    assert_refused(&w, &r, "newer", w.writes(), Some(&bytes));
}

#[test]
fn a_failed_migration_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    {
        // Version 0 with a table in the way: migration 1 fails half-way through its batch.
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch("CREATE TABLE runs (x INTEGER); INSERT INTO runs VALUES (1);")
            .expect("seed");
    }
    let err = Store::open(&path).err().expect("the migration must fail");
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    let c = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 0, "not marked migrated");
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(tables, vec!["runs".to_string()], "no half-created tables");
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 1);
}
