//! Scale benchmark (issue 6): runs the real `okta-postman-sync` binary as a child process against
//! the Okta and Postman simulators hosted by this process on 127.0.0.1, and prints one table row
//! per scenario: requests each side served, 429s, wall time, the child's CPU time and peak RSS
//! (from `wait4`'s rusage, so it is the whole process), and the write rate against the limit.
//!
//! Scenarios (`cargo bench --bench scale -- [--users 1000,10000,100000] [--provision N]
//! [--only steady|provision|courtesy] [--latency-ms 300] [--limit 3000] [--in-flight 32]`):
//! - `steady`: nothing changed since the last run; the state database and the Postman team are
//!   seeded in-process (with the real Okta client and attribute mapping), then one normal run.
//! - `provision`: first run against an empty Postman team that enforces `--limit` writes per
//!   minute with `--latency-ms` per request; the daemon is configured with the same limit.
//! - `courtesy`: an Okta fake with a small apps bucket (20 per 5 s window); counts the windows in
//!   which the daemon took more than `max_rate_share` (0.5) of it.
//!
//! This is a benchmark, not a test: it asserts nothing and never runs under `cargo test`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use okta_postman_sync::bootstrap::build_engine;
use okta_postman_sync::config::Config;
use okta_postman_sync::metrics::Metrics;
use okta_postman_sync::model::{ManagedUser, ScimUserId};
use okta_postman_sync::retry::RetryPolicy;
use okta_postman_sync::store::{SnapshotChange, Store};
use okta_postman_sync_sim::okta::{FakeOkta, OktaSimConfig};
use okta_postman_sync_sim::postman::{FakePostman, PostmanSimConfig};

const OKTA_TOKEN: &str = "bench-okta-token-0123456789";
const POSTMAN_KEY: &str = "bench-postman-key-abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_okta-postman-sync");
/// "No limit" for the fakes and the daemon where a scenario measures something else.
const UNLIMITED: u32 = 1_000_000;

struct Args {
    users: Vec<usize>,
    provision: usize,
    only: Option<String>,
    latency_ms: u64,
    limit: u32,
    in_flight: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        users: vec![1_000, 10_000, 100_000],
        provision: 6_000,
        only: None,
        latency_ms: 300,
        limit: 3_000,
        in_flight: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--users" => {
                a.users = val()
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--provision" => a.provision = val().parse().unwrap_or(a.provision),
            "--only" => a.only = Some(val()),
            "--latency-ms" => a.latency_ms = val().parse().unwrap_or(a.latency_ms),
            "--limit" => a.limit = val().parse().unwrap_or(a.limit),
            "--in-flight" => a.in_flight = val().parse().unwrap_or(a.in_flight),
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
    }
    a
}

/// One table row.
#[derive(Default)]
struct Row {
    scenario: String,
    users: usize,
    okta_gets: u64,
    okta_min: u64,
    postman_reqs: u64,
    status_429: u64,
    wall: Duration,
    cpu: Duration,
    rss_kib: u64,
    write_rate: String,
    outcome: String,
    note: String,
}

/// What the child process used, from `wait4`.
struct Usage {
    code: i32,
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Runs the binary to completion and reports its resource usage, measured by a fresh copy of
/// this benchmark executable (`--measure-child`) that spawns the binary and reaps it with
/// `wait4`. The indirection matters: Linux folds the memory high-water mark of the process that
/// called exec into the new program's `ru_maxrss`, so spawning the binary straight from this
/// process (which holds the simulators' 100k users) would report our memory as its own.
fn run_child(config: &Path, args: &[&str], log: &Path) -> Usage {
    let out = std::fs::File::create(log.with_extension("out")).expect("create stdout file");
    let err = std::fs::File::create(log).expect("create log file");
    let me = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let measured = Command::new(me)
        .arg("--measure-child")
        .arg(log.with_extension("usage"))
        .arg(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .expect("start the measuring process");
    let wall = started.elapsed();
    let text = std::fs::read_to_string(log.with_extension("usage")).unwrap_or_default();
    let nums: Vec<i64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [code, cpu_us, rss] => Usage {
            code: code as i32,
            wall,
            cpu: Duration::from_micros(cpu_us as u64),
            max_rss_kib: rss as u64,
        },
        _ => panic!("measuring process failed ({measured}): {text:?}"),
    }
}

/// `--measure-child USAGE_FILE PROGRAM ARGS...`: runs PROGRAM (inheriting stdio), reaps it with
/// `wait4`, and writes "exit-code cpu-microseconds max-rss-KiB" to USAGE_FILE. The program's
/// optional wrapper comes from `BENCH_WRAP` ("heaptrack -o /tmp/ht", "perf record -g"); the
/// usage is then the wrapper's, which includes the program.
fn measure_child(mut rest: impl Iterator<Item = String>) -> ! {
    let usage_file = rest.next().expect("usage file");
    let program = rest.next().expect("program");
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words: Vec<String> = wrap.split_whitespace().map(String::from).collect();
    words.push(program);
    words.extend(rest);
    let child = Command::new(&words[0])
        .args(&words[1..])
        .spawn()
        .expect("start the program");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped (`Child::wait` is never called on it).
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    std::mem::forget(child);
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports ru_maxrss in KiB.
    let line = format!(
        "{code} {} {}\n",
        us(usage.ru_utime) + us(usage.ru_stime),
        usage.ru_maxrss
    );
    std::fs::write(&usage_file, line).expect("write usage file");
    std::process::exit(0);
}

struct World {
    okta: FakeOkta,
    postman: FakePostman,
    dir: tempfile::TempDir,
    okta_extra: String,
    postman_extra: String,
    /// A `[groups]` section, or empty (group push on, the default).
    groups_extra: String,
}

impl World {
    async fn start(mut okta: OktaSimConfig, mut postman: PostmanSimConfig) -> World {
        okta.token = OKTA_TOKEN.to_string().into();
        postman.api_key = POSTMAN_KEY.to_string().into();
        let okta = FakeOkta::start(okta).await.expect("start fake Okta");
        let postman = FakePostman::start(postman)
            .await
            .expect("start fake Postman");
        // On the work disk, not tmpfs: SQLite's fsyncs are part of what is measured.
        let dir = tempfile::Builder::new()
            .prefix("ops-bench-")
            .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "target".into()))
            .expect("tempdir");
        std::fs::write(dir.path().join("okta-token"), OKTA_TOKEN).expect("write token");
        std::fs::write(dir.path().join("postman-key"), POSTMAN_KEY).expect("write key");
        World {
            okta,
            postman,
            dir,
            okta_extra: String::new(),
            postman_extra: String::new(),
            groups_extra: String::new(),
        }
    }

    fn config_text(&self) -> String {
        let dir = self.dir.path().display();
        format!(
            "[okta]\norg_url = \"{okta}\"\napp_id = \"{app}\"\napi_token_file = \"{dir}/okta-token\"\n{oe}\n\n\
             [postman]\nscim_url = \"{scim}\"\napi_key_file = \"{dir}/postman-key\"\n{pe}\n\n\
             [sync]\nstate_path = \"{dir}/state.db\"\nmax_deactivations = 1000000\n\n\
             [log]\nlevel = \"info\"\n{ge}\n",
            okta = self.okta.base_url(),
            app = self.okta.app_id(),
            scim = self.postman.scim_url(),
            oe = self.okta_extra,
            pe = self.postman_extra,
            ge = self.groups_extra,
        )
    }

    fn config_path(&self) -> PathBuf {
        let p = self.dir.path().join("config.toml");
        std::fs::write(&p, self.config_text()).expect("write config");
        p
    }

    /// Makes Postman and the state database look as if a full run had just converged: reads
    /// Okta with the real client and mapping, adds each person to the Postman fake, and
    /// records the snapshot and a finished full run in one transaction each.
    async fn seed_converged(&self) -> usize {
        let config = Arc::new(Config::parse(&self.config_text()).expect("valid config"));
        let store = Store::open(&self.dir.path().join("state.db")).expect("open store");
        let engine = build_engine(
            Arc::clone(&config),
            okta_postman_sync::store::StoreHandle::new(store),
            true,
            Arc::new(Metrics::new()),
            RetryPolicy::fast(),
        )
        .expect("engine");
        let read = engine
            .okta
            .read_app_users(&engine.mapping)
            .await
            .map_err(|p| p.error.to_string())
            .expect("seed read of Okta");
        let mut changes = Vec::with_capacity(read.users.len());
        for d in read.users.values() {
            let a = &d.attrs;
            let scim_id = self
                .postman
                .add_member(&a.user_name, &a.given_name, &a.family_name, d.active)
                .expect("seed Postman member");
            changes.push(SnapshotChange::Upsert(ManagedUser {
                okta_id: d.okta_id.clone(),
                // The simulator's ids are its own type: the snapshot holds the product's.
                scim_id: ScimUserId::new(scim_id.as_str()),
                attrs: a.clone(),
                active: d.active,
            }));
        }
        let n = changes.len();
        engine.store.blocking(|store| {
            let now = Utc::now();
            store.apply_changes(&changes, now).expect("seed snapshot");
            store.run_started("seed", now, true).expect("seed run");
            store
                .run_finished(
                    "seed",
                    now,
                    "ok",
                    &serde_json::json!({}),
                    &serde_json::json!([]),
                )
                .expect("seed run");
        });
        n
    }

    fn okta_gets(&self) -> u64 {
        let s = self.okta.stats();
        s.requests.by_method.get("GET").copied().unwrap_or(0)
    }

    fn postman_requests(&self) -> u64 {
        self.postman
            .stats()
            .requests
            .by_method
            .values()
            .sum::<u64>()
    }

    fn status_429(&self) -> u64 {
        self.okta.stats().requests.rate_limited + self.postman.stats().requests.rate_limited
    }

    /// Runs `reconcile` in a child process while this runtime keeps serving the fakes.
    async fn reconcile(&self, extra: &[&str]) -> Usage {
        let config = self.config_path();
        let log = self.dir.path().join("run.log");
        let mut args = vec!["reconcile", "--output", "json"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_child(&config, &refs, &log)
        })
        .await
        .expect("child runner")
    }

    fn outcome(&self, code: i32) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("run.out")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        match v.get("outcome").and_then(|o| o.as_str()) {
            Some(o) => o.to_string(),
            None => format!("exit {code}"),
        }
    }
}

fn okta_fast() -> OktaSimConfig {
    OktaSimConfig {
        apps_limit_per_minute: UNLIMITED,
        groups_limit_per_minute: UNLIMITED,
        ..OktaSimConfig::default()
    }
}

fn postman_fast() -> PostmanSimConfig {
    PostmanSimConfig {
        writes_per_minute: UNLIMITED,
        reads_per_minute: UNLIMITED,
        ..PostmanSimConfig::default()
    }
}

fn postman_extra(writes: u32, reads: u32, in_flight: usize) -> String {
    format!("writes_per_minute = {writes}\nreads_per_minute = {reads}\nmax_in_flight = {in_flight}\ntimeout = \"30s\"")
}

/// Scenario 1 and 5: a normal run when nothing changed. With `groups`, the Okta groups
/// assigned to the app are pushed too: a first (unmeasured) run converges the group push, then
/// the measured run must again make zero Postman requests; the extra Okta GETs are the group
/// reads (the app's groups, then each group's members at 200 per page).
async fn steady(users: usize, groups: bool) -> Row {
    let mut w = World::start(okta_fast(), postman_fast()).await;
    w.postman_extra = postman_extra(UNLIMITED, UNLIMITED, 4);
    if !groups {
        w.groups_extra = "[groups]\nenabled = false\n".into();
    }
    w.okta.populate(users, 42);
    let managed = w.seed_converged().await;
    if groups {
        let warm = w.reconcile(&[]).await;
        assert_eq!(warm.code, 0, "the warm-up run converges the group push");
    }
    let (gets0, pm0, r0) = (w.okta_gets(), w.postman_requests(), w.status_429());
    let u = w.reconcile(&[]).await;
    let assigned = w.okta.app_user_ids().len() as u64;
    Row {
        scenario: if groups {
            "steady, groups pushed"
        } else {
            "steady, users only"
        }
        .into(),
        users: managed,
        okta_gets: w.okta_gets() - gets0,
        okta_min: assigned.div_ceil(500).max(1),
        postman_reqs: w.postman_requests() - pm0,
        status_429: w.status_429() - r0,
        wall: u.wall,
        cpu: u.cpu,
        rss_kib: u.max_rss_kib,
        write_rate: "-".into(),
        outcome: w.outcome(u.code),
        note: format!("{assigned} app users listed"),
    }
}

/// Scenario 2: first provisioning against a rate-limited, slow Postman.
async fn provision(users: usize, limit: u32, latency: Duration, in_flight: usize) -> Row {
    let pm = PostmanSimConfig {
        writes_per_minute: limit,
        reads_per_minute: limit,
        latency,
        ..PostmanSimConfig::default()
    };
    let mut w = World::start(okta_fast(), pm).await;
    w.postman_extra = postman_extra(limit, limit, in_flight);
    // The target is the user write rate. Group push follows the users in the same run, one
    // group at a time, which would stretch the first-to-last-write span with a slower tail
    // (measured separately: see the README).
    w.groups_extra = "[groups]\nenabled = false\n".into();
    w.okta.populate(users, 7);
    let assigned = w.okta.app_user_ids().len() as u64;

    // Time the writes as the server sees them: first accepted write to last.
    let started = Instant::now();
    let child = w.reconcile(&[]);
    tokio::pin!(child);
    let mut first: Option<Duration> = None;
    let mut last = (0u64, Duration::ZERO);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let u = loop {
        tokio::select! {
            u = &mut child => break u,
            _ = tick.tick() => {
                let writes = w.postman.stats().writes;
                if writes > 0 && first.is_none() {
                    first = Some(started.elapsed());
                }
                if writes > last.0 {
                    last = (writes, started.elapsed());
                }
            }
        }
    };
    let stats = w.postman.stats();
    let span = last.1.saturating_sub(first.unwrap_or_default());
    let rate = if span.is_zero() {
        0.0
    } else {
        (last.0.saturating_sub(1)) as f64 / span.as_secs_f64() * 60.0
    };
    let okta_gets = w.okta_gets();
    Row {
        scenario: "provision, users only".into(),
        users: stats.creates_succeeded as usize,
        okta_gets,
        okta_min: assigned.div_ceil(500).max(1),
        postman_reqs: w.postman_requests(),
        status_429: w.status_429(),
        wall: u.wall,
        cpu: u.cpu,
        rss_kib: u.max_rss_kib,
        write_rate: format!(
            "{rate:.0}/min = {:.1}% of {limit}",
            rate / f64::from(limit) * 100.0
        ),
        outcome: w.outcome(u.code),
        note: format!(
            "{} writes over {:.1} s; max {} writes in any 60 s window; latency {} ms, max_in_flight {in_flight}",
            stats.writes,
            span.as_secs_f64(),
            stats.max_writes_in_window,
            latency.as_millis()
        ),
    }
}

/// Scenario 3: a small Okta apps bucket; count windows where we took more than our share.
async fn courtesy(users: usize) -> Row {
    const LIMIT: u32 = 20;
    const SHARE: f64 = 0.5;
    let okta = OktaSimConfig {
        apps_limit_per_minute: LIMIT,
        rate_window: Duration::from_secs(5),
        ..OktaSimConfig::default()
    };
    let mut w = World::start(okta, postman_fast()).await;
    w.postman_extra = postman_extra(UNLIMITED, UNLIMITED, 4);
    w.okta_extra = format!("max_rate_share = {SHARE}\npage_size = 100");
    w.okta.populate(users, 3);
    let managed = w.seed_converged().await;
    // Let the seeding read's last window run out, so the run is measured on its own.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let seed_windows = w.okta.stats().apps_requests_per_window.len();
    let (gets0, pm0, r0) = (w.okta_gets(), w.postman_requests(), w.status_429());
    let u = w.reconcile(&[]).await;
    let stats = w.okta.stats();
    let allowed = (f64::from(LIMIT) * SHARE).floor() as u64;
    let windows =
        &stats.apps_requests_per_window[seed_windows.min(stats.apps_requests_per_window.len())..];
    let violations = windows.iter().filter(|&&n| n > allowed).count();
    let assigned = w.okta.app_user_ids().len() as u64;
    Row {
        scenario: "courtesy".into(),
        users: managed,
        okta_gets: w.okta_gets() - gets0,
        okta_min: assigned.div_ceil(100).max(1),
        postman_reqs: w.postman_requests() - pm0,
        status_429: w.status_429() - r0,
        wall: u.wall,
        cpu: u.cpu,
        rss_kib: u.max_rss_kib,
        write_rate: "-".into(),
        outcome: w.outcome(u.code),
        note: format!(
            "apps bucket {LIMIT}/5 s, share {SHARE}: requests per window {windows:?}, {violations} over {allowed}"
        ),
    }
}

fn print_table(rows: &[Row]) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| scenario | users | Okta GETs (min) | Postman requests | 429s | wall | CPU | peak RSS | write rate vs limit | outcome |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} | {:.2} s | {:.2} s | {:.1} MiB | {} | {} |",
            r.scenario,
            r.users,
            r.okta_gets,
            r.okta_min,
            r.postman_reqs,
            r.status_429,
            r.wall.as_secs_f64(),
            r.cpu.as_secs_f64(),
            r.rss_kib as f64 / 1024.0,
            r.write_rate,
            r.outcome,
        );
    }
    for r in rows {
        let _ = writeln!(s, "- {} {}: {}", r.scenario, r.users, r.note);
    }
    println!("{s}");
}

fn main() {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("--measure-child") {
        measure_child(raw);
    }
    let args = parse_args();
    let wants = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    // One thread for the fakes, so the child has the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    rt.block_on(async {
        if wants("steady") {
            for &n in &args.users {
                for groups in [false, true] {
                    let row = steady(n, groups).await;
                    eprintln!("done: steady {n} (groups: {groups})");
                    rows.push(row);
                }
            }
        }
        if wants("courtesy") {
            rows.push(courtesy(2_000).await);
            eprintln!("done: courtesy");
        }
        if wants("provision") {
            rows.push(
                provision(
                    args.provision,
                    args.limit,
                    Duration::from_millis(args.latency_ms),
                    args.in_flight,
                )
                .await,
            );
            eprintln!("done: provision");
        }
    });
    print_table(&rows);
}
