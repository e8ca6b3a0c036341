//! Kill test: the real binary is `kill -9`ed (SIGKILL) at random points of a large first sync,
//! many times in a row, against the Okta and Postman simulators hosted in this test process.
//! Then it is left to finish, and Postman must equal the desired state exactly: no duplicate
//! account, no lost or extra write, and a snapshot that matches Postman.
//!
//! Seeded: the seed is printed, and `KILL_SEED` replays it. `KILL_USERS` (default 400) and
//! `KILL_COUNT` (default 30) make the soak setting (see README.md, "Soak settings").

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::World;
use okta_postman_sync_sim::{OktaSimConfig, PostmanSimConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"))
        .arg("--config")
        .arg(config)
        .args(["reconcile", "--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the binary")
}

/// How a kill was aimed.
#[derive(Clone, Copy, Debug)]
enum Aim {
    /// At a random instant after start: start-up, recovery, the Okta and Postman reads.
    Time(Duration),
    /// After the n-th further SCIM write reached Postman, plus a random delay.
    Writes(u64, Duration),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_of_a_large_first_sync_loses_and_duplicates_nothing() {
    let seed: u64 = env_or("KILL_SEED", rand::random::<u64>() % 1_000_000);
    let users: usize = env_or("KILL_USERS", 400);
    let kills_wanted: usize = env_or("KILL_COUNT", 30);
    eprintln!("kill test: KILL_SEED={seed} KILL_USERS={users} KILL_COUNT={kills_wanted}");
    let mut rng = SmallRng::seed_from_u64(seed);

    // Generous rate limits: this test is about kills, not pacing (tests/it/faults.rs has 429s).
    let mut w = World::with(
        OktaSimConfig {
            apps_limit_per_minute: 100_000,
            ..OktaSimConfig::default()
        },
        PostmanSimConfig {
            writes_per_minute: 100_000,
            reads_per_minute: 100_000,
            ..PostmanSimConfig::default()
        },
    )
    .await;
    w.extra_sync = "max_deactivations = 1000".into();
    // Latency on every Postman request, so that kills land while writes are in flight.
    w.postman.set_latency(Duration::from_millis(8));
    let mut desired = Vec::new();
    for i in 0..users {
        let (first, last) = (format!("User{i}"), "Kill".to_string());
        w.okta_user(&first, &last);
        desired.push((
            format!("user{i}.kill@example.com"),
            first.clone(),
            last.clone(),
        ));
    }
    // Some people are already members: one deactivated by hand, one with an old name, plus an
    // unmanaged admin who must be left alone.
    w.postman
        .add_member("user0.kill@example.com", "User0", "Kill", false)
        .expect("seed");
    w.postman
        .add_member("user1.kill@example.com", "Old", "Name", true)
        .expect("seed");
    w.postman
        .add_member("root@example.com", "Root", "Admin", true)
        .expect("seed");
    // Creates for everyone else, one reactivation, one update.
    let minimum_writes = (users - 2) as u64 + 1 + 1;
    let config = w.config_path();
    let log = w.dir.path().join("binary.log");

    let started = Instant::now();
    let mut kills = 0usize;
    let mut pending_after_kill = 0usize;
    let mut finished_early = 0usize;
    while kills < kills_wanted {
        let aim = if rng.gen_bool(0.3) {
            Aim::Time(Duration::from_millis(rng.gen_range(0..150)))
        } else {
            Aim::Writes(
                rng.gen_range(1..12),
                Duration::from_micros(rng.gen_range(0..12_000)),
            )
        };
        let writes_at_start = w.writes();
        let spawned = Instant::now();
        let mut child = spawn(&config, &log);
        let exited = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            let due = match aim {
                Aim::Time(d) => spawned.elapsed() >= d,
                Aim::Writes(n, _) => w.writes() >= writes_at_start + n,
            };
            if due {
                if let Aim::Writes(_, extra) = aim {
                    tokio::time::sleep(extra).await;
                }
                break None;
            }
            assert!(
                spawned.elapsed() < Duration::from_secs(60),
                "the binary neither progressed nor exited"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        match exited {
            Some(status) => {
                // It finished before the kill was due: the first sync is over.
                finished_early += 1;
                assert_eq!(
                    status.code(),
                    Some(0),
                    "a run exited with {status}; see {}",
                    log.display()
                );
                break;
            }
            None => {
                // std's Child::kill sends SIGKILL on Unix: no handler, no clean-up runs.
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                kills += 1;
                if let Ok(Some(store)) =
                    okta_postman_sync::store::Store::open_read_only(&w.state_path())
                {
                    if let Ok(counts) = store.journal_counts() {
                        if counts.get("intended").copied().unwrap_or(0) > 0 {
                            pending_after_kill += 1;
                        }
                    }
                }
            }
        }
    }

    let created_under_kills = w.postman.stats().creates_succeeded;
    // Let it finish: one run must converge (a few are allowed in case of a slow machine).
    let mut converged = false;
    for _ in 0..3 {
        let status = spawn(&config, &log).wait().expect("run to the end");
        if status.code() == Some(0) {
            converged = true;
            break;
        }
    }
    assert!(
        converged,
        "no run converged after the kills; see {}",
        log.display()
    );

    let stats = w.postman.stats();
    let duplicate_creates = stats.requests.by_status.get(&409).copied().unwrap_or(0);
    let writes = stats.writes;
    eprintln!(
        "kill test: seed {seed}: {kills} kills ({pending_after_kill} left a write open in the \
         journal), {finished_early} run finished before its kill, {users} users \
         ({created_under_kills} created while being killed), {} creates succeeded, {duplicate_creates} creates answered 409, {writes} SCIM writes \
         for a minimum of {minimum_writes} ({} above), {:.1}s",
        stats.creates_succeeded,
        writes.saturating_sub(minimum_writes),
        started.elapsed().as_secs_f64()
    );

    assert!(
        kills >= kills_wanted.min(30),
        "only {kills} kills landed before the first sync finished: raise KILL_USERS"
    );
    w.assert_postman_is(&desired, &["root@example.com"]);
    assert_eq!(w.assert_snapshot_matches_postman(), users);
    assert_eq!(
        stats.creates_succeeded,
        (users - 2) as u64,
        "every missing person was created exactly once"
    );
    assert_eq!(stats.user_deletes_attempted, 0);
    // Each kill can interrupt at most `max_in_flight` (4) writes, each repeated at most once.
    assert!(
        writes <= minimum_writes + 4 * kills as u64,
        "{writes} writes for a minimum of {minimum_writes} after {kills} kills"
    );
    // The next run has nothing to do.
    let before = w.writes();
    assert_eq!(spawn(&config, &log).wait().expect("run").code(), Some(0));
    assert_eq!(w.writes(), before, "a converged state needs no write");
}
