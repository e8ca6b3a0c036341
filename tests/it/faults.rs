//! Network faults on both simulators at configurable rates: 429 with and without `Retry-After`,
//! 500, 502, 503, held responses (timeouts), connection resets, slow answers and malformed 200s,
//! some of them after the write was applied (the ambiguous case). The sync must converge within
//! a few runs, with no duplicate, a snapshot that matches Postman, and a number of SCIM writes
//! within a small bound of the minimum.
//!
//! `FAULT_SEED`, `FAULT_RATE` (per fault kind, default 0.02) and `FAULT_USERS` (default 60) set
//! the mix; the seed is printed so a failure replays.

use crate::common;

use std::time::Duration;

use common::World;
use okta_postman_sync::sync::Outcome;
use okta_postman_sync_sim::faults::FaultConfig;
use okta_postman_sync_sim::{OktaSimConfig, PostmanSimConfig};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A world whose clients time out after 1 s, with the fakes' rate limits out of the way (the
/// injected 429s are the point here, not the real limiter).
async fn world() -> World {
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
    w.postman_timeout = "1s".into();
    w.extra_okta = "timeout = \"1s\"\npage_size = 10".into();
    w
}

fn mix(seed: u64, rate: f64) -> FaultConfig {
    FaultConfig {
        slow: Duration::from_millis(100),
        timeout_hold: Duration::from_millis(1500),
        ..FaultConfig::uniform(seed, rate)
    }
}

fn desired_users(w: &World, n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let first = format!("User{i}");
            w.okta_user(&first, "Fault");
            (
                format!("user{i}.fault@example.com"),
                first,
                "Fault".to_string(),
            )
        })
        .collect()
}

/// Runs until a run converges; returns how many runs it took.
async fn converge(w: &World, max_runs: usize) -> usize {
    for run in 1..=max_runs {
        let r = w.run().await;
        if r.outcome == Outcome::Ok {
            return run;
        }
        eprintln!("run {run}: {:?}: {:?}", r.outcome, r.errors);
    }
    panic!("did not converge in {max_runs} runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_on_both_apis_converges_without_duplicates_or_wasted_writes() {
    let seed: u64 = env_or("FAULT_SEED", rand::random::<u64>() % 1_000_000);
    let rate: f64 = env_or("FAULT_RATE", 0.02);
    let users: usize = env_or("FAULT_USERS", 60);
    eprintln!("fault test: FAULT_SEED={seed} FAULT_RATE={rate} FAULT_USERS={users}");
    let w = world().await;
    let desired = desired_users(&w, users);
    w.postman.set_faults(mix(seed, rate));
    w.okta.set_faults(mix(seed.wrapping_add(1), rate));

    let runs = converge(&w, 6).await;
    // Converged: the faults stop, and the next (full) run must find nothing left to do.
    w.postman.set_faults(FaultConfig::default());
    w.okta.set_faults(FaultConfig::default());
    let stats = w.postman.stats();
    let postman_faults: u64 = stats.requests.faults.values().sum();
    let okta_faults: u64 = w.okta.stats().requests.faults.values().sum();
    let minimum = users as u64;
    let extra = stats.writes.saturating_sub(minimum);
    eprintln!(
        "fault test: seed {seed}: converged in {runs} run(s); faults injected: Postman \
         {postman_faults} {:?}, Okta {okta_faults} {:?}; {} SCIM writes for a minimum of \
         {minimum} ({extra} above); {} creates succeeded; {} answered 409",
        stats.requests.faults,
        w.okta.stats().requests.faults,
        stats.writes,
        stats.creates_succeeded,
        stats.requests.by_status.get(&409).copied().unwrap_or(0),
    );
    w.assert_postman_is(&desired, &[]);
    assert_eq!(w.assert_snapshot_matches_postman(), users);
    assert_eq!(stats.creates_succeeded, minimum, "one create per person");
    assert_eq!(stats.user_deletes_attempted, 0);
    // Each extra write answers one injected fault; never more.
    assert!(
        extra <= postman_faults,
        "{extra} writes above the minimum for {postman_faults} Postman faults"
    );
    let before = w.writes();
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.writes(), before, "nothing left to repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_time_out_or_reset_after_being_applied_are_looked_up_not_repeated() {
    let seed: u64 = env_or("FAULT_SEED", rand::random::<u64>() % 1_000_000);
    eprintln!("ambiguous-write test: FAULT_SEED={seed}");
    let w = world().await;
    let desired = desired_users(&w, 30);
    // A third of Postman's answers are lost on the way back; half of those were applied.
    w.postman.set_faults(FaultConfig {
        seed,
        rate_timeout: 0.1,
        rate_reset: 0.25,
        timeout_hold: Duration::from_millis(1500),
        ..FaultConfig::default()
    });
    let runs = converge(&w, 6).await;
    w.postman.set_faults(FaultConfig::default());
    let stats = w.postman.stats();
    eprintln!(
        "ambiguous-write test: seed {seed}: {runs} run(s), faults {:?}, {} writes, {} creates, {} answered 409",
        stats.requests.faults,
        stats.writes,
        stats.creates_succeeded,
        stats.requests.by_status.get(&409).copied().unwrap_or(0)
    );
    w.assert_postman_is(&desired, &[]);
    w.assert_snapshot_matches_postman();
    assert_eq!(stats.creates_succeeded, 30, "no create was blindly re-sent");
    assert_eq!(
        stats.requests.by_status.get(&409).copied().unwrap_or(0),
        0,
        "no POST was sent for an account that already existed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_deactivation_under_faults_is_done_once_and_nobody_else_is_touched() {
    let seed: u64 = env_or("FAULT_SEED", rand::random::<u64>() % 1_000_000);
    eprintln!("deactivation test: FAULT_SEED={seed}");
    let w = world().await;
    let ids: Vec<_> = (0..12)
        .map(|i| w.okta_user(&format!("User{i}"), "Fault"))
        .collect();
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    for id in &ids[..3] {
        w.okta.unassign_user(id).expect("unassign");
    }
    w.okta.suspend(&ids[3]).expect("suspend");
    w.postman.set_faults(mix(seed, 0.04));
    w.okta.set_faults(mix(seed.wrapping_add(1), 0.04));
    converge(&w, 6).await;
    w.postman.set_faults(FaultConfig::default());
    let members = w.members_without_duplicates();
    assert_eq!(members.len(), 12);
    for (i, email) in (0..12).map(|i| (i, format!("user{i}.fault@example.com"))) {
        assert_eq!(members[&email].active, i >= 4, "{email}");
    }
    w.assert_snapshot_matches_postman();
    assert_eq!(w.postman.stats().user_deletes_attempted, 0);
}
