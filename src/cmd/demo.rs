//! `demo`: the product working end to end with no accounts and no config. It starts the same
//! simulators the tests use (a simulated Okta org and a simulated Postman SCIM team on
//! 127.0.0.1), then drives the real engine through a dry run, a first reconcile, a few Okta
//! changes, a second reconcile, and a final run that must make zero writes. Nothing leaves the
//! machine; the state lives in memory.

use std::sync::Arc;
use std::time::Duration;

use okta_postman_sync_sim::okta::{FakeOkta, OktaSimConfig, UserSpec};
use okta_postman_sync_sim::postman::{FakePostman, PostmanSimConfig};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::progress::demo_bar;
use super::CliError;
use crate::bootstrap::{build_engine_with, Secrets};
use crate::config::{Config, LogFormat};
use crate::exit::Exit;
use crate::metrics::Metrics;
use crate::okta::OktaAuth;
use crate::output::{render_run, table};
use crate::retry::RetryPolicy;
use crate::store::{Store, StoreHandle};
use crate::sync::{Engine, Outcome, RunOptions, RunReport};

const OKTA_TOKEN: &str = "demo-okta-token";
const POSTMAN_KEY: &str = "demo-postman-key";

/// People the demo names, so the story is easy to follow.
const CAST: &[(&str, &str)] = &[
    ("Grace", "Hopper"),
    ("Alan", "Turing"),
    ("Ada", "Lovelace"),
    ("Edsger", "Dijkstra"),
    ("Barbara", "Liskov"),
    ("Ken", "Thompson"),
];

fn email(first: &str, last: &str) -> String {
    format!(
        "{}.{}@example.com",
        first.to_lowercase(),
        last.to_lowercase()
    )
}

fn say(text: &str) {
    println!("\n\u{25b6} {text}");
}

fn summary(r: &RunReport) -> String {
    let c = &r.counts;
    format!(
        "{} create, {} update, {} deactivate, {} reactivate, {} adopt, {} unchanged, {} failed; {} group operations -> {}",
        c.create,
        c.update,
        c.deactivate,
        c.reactivate,
        c.adopt,
        c.unchanged,
        c.failed,
        c.groups,
        r.outcome.as_str()
    )
}

/// Prints the first `limit` operations of a report as a table.
fn sample(r: &RunReport, limit: usize) {
    let rows: Vec<Vec<String>> = r
        .operations
        .iter()
        .take(limit)
        .map(|o| {
            vec![
                o.op.to_string(),
                o.user_name.clone(),
                o.status.to_string(),
                o.reason.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["OP", "USER", "STATUS", "WHY"], &rows));
    if r.operations.len() > limit {
        println!("  ... and {} more", r.operations.len() - limit);
    }
}

pub async fn run(users: usize) -> Result<Exit, CliError> {
    crate::telemetry::init("warn", LogFormat::Pretty);
    demo(users.max(CAST.len() + 10))
        .await
        .map_err(|e| CliError::failed(format!("{e:#}")).labelled("demo failed"))?;
    Ok(Exit::Ok)
}

async fn demo(users: usize) -> anyhow::Result<()> {
    println!(
        "okta-postman-sync demo: a simulated Okta org and a simulated Postman team on 127.0.0.1."
    );
    println!("Nothing leaves this machine; no accounts are needed.");

    let okta = FakeOkta::start(OktaSimConfig {
        token: SecretString::from(OKTA_TOKEN),
        ..OktaSimConfig::default()
    })
    .await?;
    let postman = FakePostman::start(PostmanSimConfig {
        api_key: SecretString::from(POSTMAN_KEY),
        // The real team allows 180 writes a minute; the demo scales the limit up so it finishes
        // in seconds. The client paces itself under whatever limit it is given.
        writes_per_minute: 30_000,
        reads_per_minute: 30_000,
        latency: Duration::from_millis(3),
        ..PostmanSimConfig::default()
    })
    .await?;

    let generated = users - CAST.len();
    let pop = okta.populate(generated, 42);
    let mut cast = Vec::new();
    for (first, last) in CAST {
        let id = okta.add_user(UserSpec::new(&email(first, last), first, last));
        okta.assign_user(&id)?;
        cast.push(id);
    }
    // A team that gets Postman through a group, assigned to the app later in the story.
    let platform = okta.add_group("Platform Team");
    for (first, last) in [
        ("Margaret", "Hamilton"),
        ("Dennis", "Ritchie"),
        ("Frances", "Allen-Platform"),
    ] {
        let id = okta.add_user(UserSpec::new(&email(first, last), first, last));
        okta.add_member(&platform, &id)?;
    }
    // Grace and Alan were invited to Postman by hand before SCIM: they are adopted, not
    // re-created. Two service accounts no Okta user matches stay untouched.
    postman.add_member(&email("Grace", "Hopper"), "Grace", "Hopper", true)?;
    postman.add_member(&email("Alan", "Turing"), "Alan", "Turing", true)?;
    postman.add_member("break-glass-admin@example.com", "Break", "Glass", true)?;
    postman.add_member("ci-bot@example.com", "CI", "Bot", true)?;

    say(&format!(
        "Okta: {} people ({} assigned to the Postman app, {} suspended), {} groups ({} assigned). \
         Postman: 4 existing members (2 match Okta people, 2 are service accounts).",
        pop.users + CAST.len(),
        pop.app_users + CAST.len(),
        pop.suspended,
        pop.groups,
        pop.app_groups
    ));

    let config_text = format!(
        r#"
[okta]
org_url = "{okta}"
app_id = "{app}"
[postman]
scim_url = "{scim}"
writes_per_minute = 30000
reads_per_minute = 30000
max_in_flight = 8
[sync]
state_path = "demo-in-memory.db"
max_deactivations = 25
"#,
        okta = okta.base_url(),
        app = okta.app_id(),
        scim = postman.scim_url(),
    );
    let config = Arc::new(Config::parse(&config_text)?);
    let store = StoreHandle::new(Store::in_memory()?);
    let secrets = Secrets {
        okta: OktaAuth::ApiToken(SecretString::from(OKTA_TOKEN)),
        postman_api_key: SecretString::from(POSTMAN_KEY),
    };
    let engine: Engine = build_engine_with(
        config,
        secrets,
        store,
        true,
        Arc::new(Metrics::new()),
        RetryPolicy::default(),
    )?;
    let cancel = CancellationToken::new();

    say("1. Dry run: the plan, computed from a full read of both sides. Nothing is changed.");
    let plan = engine
        .run(
            &RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
            &cancel,
            None,
        )
        .await;
    sample(&plan, 8);
    println!("  Planned: {}", summary(&plan));
    println!("  Postman writes so far: {}", postman.stats().writes);

    say("2. First reconcile (always a full run: existing members are adopted, never duplicated).");
    let bar = demo_bar(plan.operations.len());
    let first = engine
        .run(&RunOptions::default(), &cancel, Some(bar.callback()))
        .await;
    bar.finish();
    println!("  Done: {}", summary(&first));
    println!(
        "  Postman now has {} members; {} unmanaged members were left alone.",
        postman.users().len(),
        first.unmanaged_members.unwrap_or(0)
    );

    say("3. Changes in Okta: Ada is unassigned, Edsger is suspended, Barbara marries (new name and email), Ken is renamed,\n  and the \"Platform Team\" group (3 people) is assigned to the Postman app.");
    okta.unassign_user(&cast[2])?;
    okta.suspend(&cast[3])?;
    okta.set_name(&cast[4], "Barbara", "Liskov-Smith")?;
    okta.set_email(&cast[4], "barbara.liskov-smith@example.com")?;
    okta.set_name(&cast[5], "Kenneth", "Thompson")?;
    okta.assign_group(&platform)?;

    say("4. Second reconcile: every change explained.");
    let second = engine.run(&RunOptions::default(), &cancel, None).await;
    print!("{}", render_run(&second));

    say("5. Final run with no change in Okta: it must make zero writes.");
    let writes = postman.stats().writes;
    let last = engine.run(&RunOptions::default(), &cancel, None).await;
    let extra = postman.stats().writes - writes;
    println!("  {} -> {extra} SCIM writes.", summary(&last));

    let ok = [&first, &second, &last]
        .iter()
        .all(|r| r.outcome == Outcome::Ok)
        && extra == 0;
    let deletes = postman.stats().user_deletes_attempted;
    println!(
        "\n{} Postman: {} members, {} user DELETEs attempted (Postman has none; the daemon deactivates).",
        if ok { "\u{2714}" } else { "\u{2718}" },
        postman.users().len(),
        deletes
    );
    println!("Next: `okta-postman-sync --help`, and the README for configuring a real Okta org and Postman team.");
    if ok && deletes == 0 {
        Ok(())
    } else {
        anyhow::bail!("the demo did not converge: see the output above")
    }
}
