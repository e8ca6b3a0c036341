//! Fast recovery after an outage (issue 14): the daemon (in-process, with the retry policy `run`
//! gives it, `bootstrap::daemon_retry`) against the Okta and Postman simulators on 127.0.0.1,
//! scheduled every 2 s, 500 users converged. Then one side answers every request with 503 for
//! `--outage` seconds and recovers, and a change (a rename in Okta) is made right after the
//! recovery. Prints, per scenario: how long the runs during the outage lasted, how long the run
//! in flight at recovery kept going after it, how many ticks fell due and how many were skipped
//! meanwhile, and the latency from the post-recovery change to the Postman write.
//!
//! Scenarios: `okta` (Okta down: each run fails on its first page) and `postman` (Postman down
//! while 50 renames made as it went down wait to be written: each run fails on its writes).
//! `cargo bench --bench outage -- [--scenario okta|postman|all] [--outage 20] [--users 500]
//! [--renames 50] [--poll SECS]` (`--poll` also turns System Log polling on).
//!
//! A benchmark, not a test: it asserts nothing and never runs under `cargo test`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use okta_postman_sync::bootstrap::daemon_retry;
use okta_postman_sync::daemon::run_with;
use okta_postman_sync::daemon::schedule::DaemonState;
use okta_postman_sync::store::Store;
use okta_postman_sync_sim::faults::FaultConfig;
use tokio_util::sync::CancellationToken;

mod support;
use support::Sims;

const PERIOD: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Okta,
    Postman,
}

struct Args {
    scenarios: Vec<Scenario>,
    outage: u64,
    users: usize,
    renames: usize,
    poll: Option<u64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        scenarios: vec![Scenario::Okta, Scenario::Postman],
        outage: 20,
        users: 500,
        renames: 50,
        poll: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--scenario" => {
                a.scenarios = match val().as_str() {
                    "okta" => vec![Scenario::Okta],
                    "postman" => vec![Scenario::Postman],
                    _ => vec![Scenario::Okta, Scenario::Postman],
                }
            }
            "--outage" => a.outage = val().parse().unwrap_or(a.outage),
            "--users" => a.users = val().parse().unwrap_or(a.users),
            "--renames" => a.renames = val().parse().unwrap_or(a.renames),
            "--poll" => a.poll = val().parse().ok(),
            _ => {}
        }
    }
    a
}

/// One run as the state database recorded it.
struct Run {
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    outcome: String,
}

fn runs(state_path: &std::path::Path) -> Vec<Run> {
    let store = Store::open_read_only(state_path)
        .expect("open state")
        .expect("state exists");
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("recorded time")
            .with_timezone(&Utc)
    };
    store
        .last_runs(100_000)
        .expect("runs")
        .into_iter()
        .map(|r| Run {
            started: at(&r.started_at),
            finished: r.finished_at.as_deref().map(at),
            outcome: r.outcome.unwrap_or_else(|| "-".into()),
        })
        .collect()
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

async fn bench(scenario: Scenario, args: &Args) {
    let sims = Sims::start(100_000).await;
    let (okta, postman) = (&sims.okta, &sims.postman);
    let events = match args.poll {
        Some(p) => format!("[events]\nsystem_log = true\npoll_interval = \"{p}s\""),
        None => String::new(),
    };
    let schedule = format!("*/{} * * * * *", PERIOD.as_secs());
    let config = sims.config(&schedule, &events);
    let ids = sims.populate(args.users);
    let state_path = sims.dir.path().join("state.db");
    // The retry policy `run` builds the daemon with (`bootstrap::assemble_daemon`).
    let retry = daemon_retry(&config.sync.schedule, Utc::now());
    let (engine, _) = sims.converged_engine(config, retry).await;
    let cancel = CancellationToken::new();
    let state = Arc::new(DaemonState::default());
    let daemon = tokio::spawn(run_with(
        Arc::clone(&engine),
        None,
        cancel.clone(),
        Arc::clone(&state),
    ));
    // A few quiet ticks.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The outage. In the Postman scenario, renames made as it begins wait to be written.
    let down = FaultConfig {
        seed: 7,
        rate_503: 1.0,
        ..FaultConfig::default()
    };
    let skipped_before = state.skipped_ticks.load(Ordering::Relaxed);
    let began = Utc::now();
    match scenario {
        Scenario::Okta => okta.set_faults(down),
        Scenario::Postman => {
            postman.set_faults(down);
            for (i, id) in ids.iter().enumerate().skip(1).take(args.renames) {
                okta.set_name(id, &format!("Waiting{i}"), "Bench")
                    .expect("rename");
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(args.outage)).await;

    // Recovery, and a change right after it.
    match scenario {
        Scenario::Okta => okta.set_faults(FaultConfig::default()),
        Scenario::Postman => postman.set_faults(FaultConfig::default()),
    }
    let ended = Utc::now();
    let skipped_during = state.skipped_ticks.load(Ordering::Relaxed) - skipped_before;
    let changed = Instant::now();
    okta.set_name(&ids[0], "Renamed0", "Bench").expect("rename");
    let renamed = |i: usize, given: &str| {
        postman
            .user_by_name(&format!("user{i}@example.com"))
            .is_some_and(|u| u.given_name == given)
    };
    let mut latency = None;
    let mut waiting_done = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && (latency.is_none() || waiting_done.is_none()) {
        if latency.is_none() && renamed(0, "Renamed0") {
            latency = Some(changed.elapsed());
        }
        if waiting_done.is_none()
            && (1..=args.renames.min(ids.len() - 1))
                .all(|i| scenario == Scenario::Okta || renamed(i, &format!("Waiting{i}")))
        {
            waiting_done = Some(changed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the run in flight finish, so its end is recorded.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    let _ = daemon.await;

    let all = runs(&state_path);
    let overlapping: Vec<&Run> = all
        .iter()
        .filter(|r| r.started < ended && r.finished.is_none_or(|f| f > began))
        .collect();
    let longest = overlapping
        .iter()
        .filter_map(|r| r.finished.map(|f| secs(f - r.started.max(began))))
        .fold(0.0, f64::max);
    let at_start = all
        .iter()
        .find(|r| r.started <= began && r.finished.is_none_or(|f| f > began))
        .and_then(|r| r.finished.map(|f| secs(f - began)));
    let at_recovery = all
        .iter()
        .find(|r| r.started < ended && r.finished.is_none_or(|f| f > ended))
        .and_then(|r| r.finished.map(|f| secs(f - ended)));
    let started_during = all
        .iter()
        .filter(|r| r.started >= began && r.started < ended)
        .count();
    let failed_during = all
        .iter()
        .filter(|r| r.started >= began && r.started < ended && r.outcome != "ok")
        .count();
    let due = args.outage / PERIOD.as_secs();
    let opt = |v: Option<f64>| v.map_or("none".to_string(), |s| format!("{s:.1} s"));
    println!(
        "| {:<7} | {} s | {} | {:>5.1} s | {:>8} | {:>8} | {} | {} ({} not ok) | {:>2} | {:>6} | {:>6} |",
        match scenario {
            Scenario::Okta => "okta",
            Scenario::Postman => "postman",
        },
        args.outage,
        args.poll.map_or("off".to_string(), |p| format!("{p} s")),
        longest,
        opt(at_start),
        opt(at_recovery),
        due,
        started_during,
        failed_during,
        skipped_during,
        opt(latency.map(|d| d.as_secs_f64())),
        if scenario == Scenario::Okta {
            "-".to_string()
        } else {
            opt(waiting_done.map(|d| d.as_secs_f64()))
        },
    );
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| down    | outage | polling | longest run in the outage | in flight at start: ended after | in flight at recovery: ended after | ticks due | runs started | skipped | change after recovery -> Postman | {} renames -> Postman |",
        args.renames
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in args.scenarios.clone() {
        rt.block_on(bench(s, &args));
    }
}
