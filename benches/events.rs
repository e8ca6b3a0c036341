//! Near-real-time benchmark (issue 14): the daemon (in-process, as `run` builds it) against the
//! Okta and Postman simulators on 127.0.0.1, with the schedule slowed to once a day so only
//! events move Postman. Prints, per mode, the latency from an Okta change to the Postman write
//! (p50, p95, max over `--changes` changes of five kinds: rename, suspend, unassign, new
//! assignment, joining a pushed group), and the idle cost (Okta and Postman requests while
//! nothing changes). Group push is on, with one pushed group of the users no change touches.
//!
//! Modes: `polling` (System Log every `--poll` seconds, default 2) and `hook` (a deliverer task
//! plays Okta: it tails the fake's System Log every 10 ms and POSTs new events to
//! `/okta/events`, so the figure is the daemon's share, not Okta's delivery delay).
//! `cargo bench --bench events -- [--changes 200] [--poll 2] [--users 500] [--idle SECS]
//! [--mode polling|hook]`. The idle cost at scale, polling only:
//! `cargo bench --bench events -- --mode polling --users 100000 --changes 0 --idle 60` (the
//! initial full run's time is printed on stderr).
//!
//! A benchmark, not a test: it asserts nothing and never runs under `cargo test`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use okta_postman_sync::daemon::run_with;
use okta_postman_sync::daemon::schedule::DaemonState;
use okta_postman_sync::retry::RetryPolicy;
use okta_postman_sync_sim::okta::{FakeOkta, UserSpec};
use tokio_util::sync::CancellationToken;

mod support;
use support::Sims;

const HOOK_SECRET: &str = "bench-hook-secret-0123456789";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Polling,
    Hook,
}

struct Args {
    changes: usize,
    poll: u64,
    users: usize,
    /// Postman's writes per minute, enforced by the fake and configured in the daemon.
    limit: u32,
    /// Seconds of idle measured (default 20 polling, 10 hook).
    idle: Option<u64>,
    /// The modes to run (default both).
    modes: Vec<Mode>,
}

fn parse_args() -> Args {
    let mut a = Args {
        changes: 200,
        poll: 2,
        users: 500,
        limit: 100_000,
        idle: None,
        modes: vec![Mode::Polling, Mode::Hook],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--changes" => a.changes = val().parse().unwrap_or(a.changes),
            "--poll" => a.poll = val().parse().unwrap_or(a.poll),
            "--users" => a.users = val().parse().unwrap_or(a.users),
            "--limit" => a.limit = val().parse().unwrap_or(a.limit),
            "--idle" => a.idle = val().parse().ok(),
            "--mode" => {
                a.modes = match val().as_str() {
                    "polling" => vec![Mode::Polling],
                    "hook" => vec![Mode::Hook],
                    _ => vec![Mode::Polling, Mode::Hook],
                }
            }
            _ => {}
        }
    }
    a
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn okta_requests(o: &FakeOkta) -> u64 {
    o.stats().requests.by_method.values().sum()
}

async fn bench(mode: Mode, args: &Args) {
    let sims = Sims::start(args.limit).await;
    let (okta, postman) = (&sims.okta, &sims.postman);
    let dir = sims.dir.path();
    std::fs::write(dir.join("hook-secret"), HOOK_SECRET).expect("secret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let events = match mode {
        Mode::Polling => format!("system_log = true\npoll_interval = \"{}s\"", args.poll),
        Mode::Hook => format!(
            "hook = true\nhook_secret_file = \"{}/hook-secret\"",
            dir.display()
        ),
    };
    let config = sims.config(
        "0 0 3 * * *",
        &format!("[server]\nlisten = \"{addr}\"\n[events]\n{events}\nguard_window = \"1m\""),
    );
    let ids = sims.populate(args.users);
    // A pushed group holding the users no change touches: group push is on, as it is for most
    // teams, so every re-read also looks up the user's groups.
    let eng = okta.add_group("Engineering");
    okta.assign_group(&eng).expect("assign group");
    for id in ids.iter().skip(args.changes) {
        okta.add_member(&eng, id).expect("member");
    }
    let (engine, took) = sims.converged_engine(config, RetryPolicy::default()).await;
    eprintln!(
        "{mode:?}: initial full run of {} users: {:.1} s",
        args.users,
        took.as_secs_f64()
    );
    let cancel = CancellationToken::new();
    let state = Arc::new(DaemonState::default());
    let daemon = tokio::spawn(run_with(
        Arc::clone(&engine),
        Some(listener),
        cancel.clone(),
        Arc::clone(&state),
    ));
    // The daemon's own first run at startup (it reads every app-user page), then quiet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while state.running.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Idle cost.
    let idle_for =
        Duration::from_secs(
            args.idle
                .unwrap_or(if mode == Mode::Polling { 20 } else { 10 }),
        );
    let (o0, p0) = (
        okta_requests(okta),
        postman.stats().requests.by_method.values().sum::<u64>(),
    );
    tokio::time::sleep(idle_for).await;
    let (o1, p1) = (
        okta_requests(okta),
        postman.stats().requests.by_method.values().sum::<u64>(),
    );
    let per_hour = |n: u64| n as f64 * 3600.0 / idle_for.as_secs_f64();

    // The deliverer plays Okta's Event Hook.
    let stop_deliverer = CancellationToken::new();
    let deliverer = (mode == Mode::Hook).then(|| {
        let stop = stop_deliverer.clone();
        let url = format!("http://{addr}/okta/events");
        let source = Arc::clone(okta);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent = 0usize;
            while !stop.is_cancelled() {
                let log = source.log_events();
                if log.len() > sent {
                    let batch: Vec<_> = log[sent..].to_vec();
                    sent = log.len();
                    let body = serde_json::json!({"data": {"events": batch}});
                    let _ = client
                        .post(&url)
                        .header("Authorization", HOOK_SECRET)
                        .json(&body)
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });

    // The changes, one every 50 ms; a watcher records when Postman shows each.
    let mut pending: BTreeMap<usize, (Instant, String, u8)> = BTreeMap::new();
    let mut lat = Vec::new();
    let mut made = 0usize;
    let start = Instant::now();
    let mut next_change = Instant::now();
    while (made < args.changes || !pending.is_empty()) && start.elapsed() < Duration::from_secs(120)
    {
        if made < args.changes && Instant::now() >= next_change {
            let i = made;
            let kind = (i % 5) as u8;
            let name = match kind {
                0 => {
                    okta.set_name(&ids[i], &format!("Renamed{i}"), "Bench")
                        .expect("rename");
                    format!("user{i}@example.com")
                }
                1 => {
                    okta.suspend(&ids[i]).expect("suspend");
                    format!("user{i}@example.com")
                }
                2 => {
                    okta.unassign_user(&ids[i]).expect("unassign");
                    format!("user{i}@example.com")
                }
                3 => {
                    let id = okta.add_user(UserSpec::new(
                        &format!("new{i}@example.com"),
                        "New",
                        "Bench",
                    ));
                    okta.assign_user(&id).expect("assign");
                    format!("new{i}@example.com")
                }
                _ => {
                    okta.add_member(&eng, &ids[i]).expect("joins the group");
                    format!("user{i}@example.com")
                }
            };
            pending.insert(i, (Instant::now(), name, kind));
            made += 1;
            next_change += Duration::from_millis(50);
        }
        let all = postman.users();
        let in_group: std::collections::BTreeSet<String> = postman
            .group_by_name("Engineering")
            .map(|g| {
                all.iter()
                    .filter(|u| g.members.contains(&u.id))
                    .map(|u| u.user_name.to_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let users: BTreeMap<String, (bool, String)> = all
            .into_iter()
            .map(|u| (u.user_name.to_lowercase(), (u.active, u.given_name)))
            .collect();
        pending.retain(|i, (t0, name, kind)| {
            let done = match (*kind, users.get(name)) {
                (0, Some((_, given))) => *given == format!("Renamed{i}"),
                (1 | 2, Some((active, _))) => !active,
                (3, Some((active, _))) => *active,
                (4, Some(_)) => in_group.contains(name.as_str()),
                _ => false,
            };
            if done {
                lat.push(t0.elapsed().as_secs_f64());
            }
            !done
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_deliverer.cancel();
    if let Some(d) = deliverer {
        let _ = d.await;
    }
    cancel.cancel();
    let _ = daemon.await;
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {:<7} | {:>4} | {:>4} | {:>6.2} s | {:>6.2} s | {:>6.2} s | {:>8.0} | {:>8.0} | {} / {} | {} |",
        match mode {
            Mode::Polling => format!("poll {}s", args.poll),
            Mode::Hook => "hook".into(),
        },
        args.changes,
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        lat.last().copied().unwrap_or(f64::NAN),
        per_hour(o1 - o0),
        per_hour(p1 - p0),
        postman.stats().max_writes_in_window,
        args.limit,
        postman.stats().requests.by_status.get(&429).copied().unwrap_or(0),
    );
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| mode    | made | seen | p50      | p95      | max      | Okta/h idle | Postman/h idle | max writes/min vs limit | 429s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for mode in args.modes.clone() {
        rt.block_on(bench(mode, &args));
    }
}
