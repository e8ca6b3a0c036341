//! `why USER`: explains one person's Postman access — the verdict and the rule that decided it,
//! how they are assigned in Okta (directly and/or through which groups), the mapped attributes
//! and the mapping source of each, what the snapshot holds (and with `--live` what Postman
//! holds, with the differences), failures, quarantine and open journal rows, their last
//! operations, and what the next run would do for them, computed by the real user planner over
//! a one-person read and the one-row snapshot.
//!
//! It writes nothing anywhere: the state file is opened read-only, Okta (and with `--live`
//! Postman) only receive single-resource GETs. It must not plan or judge entitlement by rules of
//! its own: the verdict is `okta::entitlement`'s, the next operation is the planner's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use super::{load_config, print_json, CliError};
use crate::cli::OutputFormat;
use crate::config::Config;
use crate::exit::Exit;
use crate::metrics::Metrics;
use crate::model::{
    user_name_key, ManagedUser, OktaGroupId, OktaRead, OktaUserId, PostmanUser, ScimUserId,
    UserAttrs,
};
use crate::okta::{AppUserView, OktaClient, Source};
use crate::retry::RetryPolicy;
use crate::scim::ScimClient;
use crate::store::{
    FailureRecord, HistoryEntry, HistoryFilter, Store, StoreError, UnmanagedRecord,
};
use crate::sync::describe;
use crate::sync::journal::Recovery;
use crate::sync::users::plan::{plan, Carried, Operation, Policy};

/// How many of the person's last operations are shown.
const HISTORY: usize = 10;

/// The README's wording of the rule (section "How it decides").
const RULE: &str = "active in Postman when assigned to the Postman app in Okta (directly or through a group), \
the app-user status is ACTIVE or PROVISIONED, and the Okta user status is not SUSPENDED, DEPROVISIONED or STAGED \
(LOCKED_OUT, PASSWORD_EXPIRED and RECOVERY keep access; unknown statuses do not grant it)";

#[derive(Debug, Serialize)]
pub struct WhyReport {
    /// What was asked for, as typed.
    pub query: String,
    pub user: Identity,
    /// Where the person was found: `okta`, `snapshot`, `unmanaged`, `postman`.
    pub found_in: Vec<&'static str>,
    pub desired: Desired,
    pub assignment: Assignment,
    pub okta: Option<OktaSide>,
    pub snapshot: Option<SnapshotSide>,
    /// A Postman member the last full run saw but does not manage (no Okta user matched).
    pub unmanaged: Option<UnmanagedRecord>,
    /// Only with `--live`.
    pub postman: Option<PostmanSide>,
    pub failure: Option<FailureRecord>,
    /// Why the person's writes are postponed (quarantine, or an interrupted create).
    pub held: Option<String>,
    /// Journal rows about them whose outcome is not known yet.
    pub unresolved: Vec<HistoryEntry>,
    /// Their last operations, oldest first.
    pub history: Vec<HistoryEntry>,
    pub next: Next,
}

#[derive(Debug, Default, Serialize)]
pub struct Identity {
    pub user_name: Option<String>,
    pub okta_id: Option<String>,
    pub scim_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Desired {
    /// Whether this person should be an active Postman member.
    pub active: bool,
    /// What decided it, for this person.
    pub reason: String,
    /// The rule, as the README words it.
    pub rule: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct Assignment {
    pub assigned: bool,
    /// Assigned to the app directly (`scope: USER`).
    pub direct: bool,
    /// The app user's `scope` as Okta reports it (`USER` or `GROUP`).
    pub scope: Option<String>,
    /// The person's groups that are assigned to the app.
    pub groups: Vec<GroupRef>,
}

#[derive(Debug, Serialize)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct OktaSide {
    pub okta_id: String,
    pub login: Option<String>,
    pub user_status: Option<String>,
    pub app_user_status: Option<String>,
    /// The attributes the sync would push, each with the mapping source that supplied it.
    pub attributes: Vec<MappedAttribute>,
    /// Why a full read would skip this person (no userName): never deactivated for it.
    pub skipped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MappedAttribute {
    pub name: &'static str,
    pub value: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct SnapshotSide {
    pub scim_id: String,
    pub active: bool,
    /// What we last pushed.
    pub attributes: UserAttrs,
    /// When the row last changed (a confirmed write, an adoption or a full listing).
    pub since: String,
    /// Set when the last full listing lacked the account.
    pub missing_since: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PostmanSide {
    pub scim_id: String,
    /// False when Postman answered 404 for the account the snapshot names.
    pub exists: bool,
    pub active: Option<bool>,
    pub attributes: Option<UserAttrs>,
    /// How Postman differs from the snapshot (empty when they agree).
    pub differences: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Next {
    /// The first operation the next run would send or record for them; `None`: nothing.
    pub op: Option<String>,
    /// Every operation, in order (an adoption can be followed by an update).
    pub ops: Vec<Operation>,
    pub reason: String,
}

pub async fn run(
    config_path: &Path,
    query: &str,
    live: bool,
    output: OutputFormat,
) -> Result<Exit, CliError> {
    let config = load_config(config_path)?;
    let query = query.trim();
    if query.is_empty() {
        return Err(CliError::config(
            "why needs a person: a userName, an Okta user id or a Postman SCIM id",
        ));
    }
    let metrics = Arc::new(Metrics::new());
    // Someone is waiting at a terminal: a few quick retries, not the daemon's minutes of
    // patience, before saying that an API is unreachable. A 429's wait is still honoured.
    let retry = RetryPolicy {
        max_attempts: 3,
        max_elapsed: std::time::Duration::from_secs(20),
        ..RetryPolicy::default()
    };
    let okta = OktaClient::new(
        config
            .okta
            .client_config(config.okta.load_auth()?, retry.clone()),
        Arc::clone(&metrics),
    )
    .map_err(|e| CliError::failed(format!("{:#}", anyhow::Error::from(e))))?;
    let scim = if live {
        Some(
            ScimClient::new(
                config
                    .postman
                    .client_config(config.postman.load_api_key()?, retry),
                metrics,
            )
            .map_err(|e| CliError::failed(format!("{:#}", anyhow::Error::from(e))))?,
        )
    } else {
        None
    };
    let local = Local::read(&config, query).map_err(CliError::failed)?;
    let report = explain(&config, &okta, scim.as_ref(), query, local).await?;
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print!("{}", render(&report)),
    }
    Ok(Exit::Ok)
}

/// What the state database knows that could be about the person asked for.
struct Local {
    state_path: String,
    snapshot: Option<ManagedUser>,
    snapshot_times: Option<(String, Option<String>)>,
    unmanaged: Option<UnmanagedRecord>,
    store: Option<Store>,
}

impl Local {
    fn read(config: &Config, query: &str) -> Result<Self, StoreError> {
        let state_path = config.sync.state_path.display().to_string();
        let Some(store) = Store::open_read_only(&config.sync.state_path)? else {
            return Ok(Local {
                state_path,
                snapshot: None,
                snapshot_times: None,
                unmanaged: None,
                store: None,
            });
        };
        let key = user_name_key(query);
        let snapshot = store.snapshot()?.into_values().find(|m| {
            m.okta_id.as_str() == query
                || m.scim_id.as_str() == query
                || user_name_key(&m.attrs.user_name) == key
        });
        let unmanaged = match &snapshot {
            Some(_) => None,
            None => store
                .unmanaged()?
                .into_iter()
                .find(|u| u.scim_id == query || user_name_key(&u.user_name) == key),
        };
        let snapshot_times = match &snapshot {
            Some(m) => store.snapshot_times(m.okta_id.as_str())?,
            None => None,
        };
        Ok(Local {
            state_path,
            snapshot,
            snapshot_times,
            unmanaged,
            store: Some(store),
        })
    }
}

fn okta_failed(what: &str, e: &crate::okta::OktaError) -> CliError {
    let hint = e.hint().map(|h| format!(". {h}")).unwrap_or_default();
    CliError::failed(format!(
        "{what}: {e}{hint}. Nothing was explained; check that Okta is reachable and the credentials work (`okta-postman-sync check`)"
    ))
}

async fn explain(
    config: &Config,
    okta: &OktaClient,
    scim: Option<&ScimClient>,
    query: &str,
    local: Local,
) -> Result<WhyReport, CliError> {
    let now = Utc::now();
    let mut found_in = Vec::new();
    if local.snapshot.is_some() {
        found_in.push("snapshot");
    }
    if local.unmanaged.is_some() {
        found_in.push("unmanaged");
    }

    // With --live, a SCIM id nobody locally knows is looked up in Postman, so its userName can
    // lead to the Okta user.
    let mut postman_account: Option<Option<PostmanUser>> = None;
    let scim_id_asked = local
        .snapshot
        .as_ref()
        .map(|m| m.scim_id.clone())
        .or_else(|| {
            local
                .unmanaged
                .as_ref()
                .map(|u| ScimUserId::new(&u.scim_id))
        });
    if let Some(scim) = scim {
        // Known locally: that account. Otherwise a userName (an email address) is looked up
        // by name, anything else as a SCIM id.
        let got = match &scim_id_asked {
            Some(id) => scim.get_user(id).await,
            None if query.contains('@') => scim.find_user_by_name(query).await,
            None => scim.get_user(&ScimUserId::new(query)).await,
        };
        let id = scim_id_asked
            .clone()
            .map_or_else(|| query.to_string(), |s| s.to_string());
        let got = got.map_err(|e| {
            CliError::failed(format!(
                "reading the Postman account {id}: {}. Check that Postman is reachable (`okta-postman-sync check`), or leave out --live",
                describe(&e)
            ))
        })?;
        if got.is_some() {
            found_in.push("postman");
        }
        postman_account = Some(got);
    }

    // The Okta user: the snapshot's link, else Okta's own lookup by id or login.
    let login_hint = local
        .unmanaged
        .as_ref()
        .map(|u| u.user_name.clone())
        .or_else(|| {
            postman_account
                .as_ref()
                .and_then(|p| p.as_ref().map(|u| u.attrs.user_name.clone()))
        });
    let okta_id = match &local.snapshot {
        Some(m) => Some(m.okta_id.clone()),
        None => {
            let mut found = None;
            for key in std::iter::once(query.to_string()).chain(login_hint) {
                if let Some(u) = okta
                    .get_user(&key)
                    .await
                    .map_err(|e| okta_failed("looking the person up in Okta", &e))?
                {
                    found = Some(u.okta_id);
                    break;
                }
            }
            found
        }
    };

    // Okta: the app's groups first (which also proves the app exists, so a 404 for the app user
    // below means "not assigned", not "wrong app id"), then the person.
    let app_groups: BTreeMap<OktaGroupId, String> = okta
        .list_app_groups()
        .await
        .map_err(|e| okta_failed("reading the Okta app's groups", &e))?
        .into_iter()
        .collect();
    let mut okta_side = None;
    let mut assignment = Assignment::default();
    let mut app_user: Option<AppUserView> = None;
    let mut okta_user_exists = false;
    if let Some(id) = &okta_id {
        let user = okta
            .get_user(id.as_str())
            .await
            .map_err(|e| okta_failed("reading the Okta user", &e))?;
        okta_user_exists = user.is_some();
        if let Some(user) = user {
            found_in.insert(0, "okta");
            app_user = okta
                .get_app_user(id, &config.okta.mapping)
                .await
                .map_err(|e| okta_failed("reading the Okta app user", &e))?;
            let groups = okta
                .list_user_groups(id)
                .await
                .map_err(|e| okta_failed("reading the Okta user's groups", &e))?;
            assignment.groups = groups
                .into_iter()
                .filter(|(g, _)| app_groups.contains_key(g))
                .map(|(g, name)| GroupRef {
                    id: g.to_string(),
                    name,
                })
                .collect();
            if let Some(a) = &app_user {
                assignment.assigned = true;
                assignment.scope = a.scope.clone();
                assignment.direct = a.scope.as_deref() == Some("USER");
            }
            okta_side = Some(okta_side_of(&user, app_user.as_ref()));
        }
    }

    if found_in.is_empty() {
        let mut looked = vec![format!(
            "the state database {} (managed and unmanaged members, by userName, Okta id and SCIM id)",
            local.state_path
        )];
        looked.push(format!("Okta (GET /api/v1/users/{query})"));
        if scim.is_some() {
            looked.push(format!("Postman (GET /scim/v2/Users/{query})"));
        }
        return Err(CliError::failed(format!(
            "nobody matches {query:?}. Looked in {}. Check the spelling; a SCIM id unknown to the state database is only looked up in Postman with --live",
            looked.join(", ")
        )));
    }

    let desired = match (&app_user, okta_user_exists) {
        (Some(a), _) => match &a.mapped {
            Ok(d) => Desired {
                active: d.active,
                reason: format!("assigned; {}", d.reason),
                rule: RULE,
            },
            Err(why) => Desired {
                active: false,
                reason: format!(
                    "assigned, but the sync cannot map them ({why}); they are skipped and never deactivated for it"
                ),
                rule: RULE,
            },
        },
        (None, true) => Desired {
            active: false,
            reason: "not assigned to the Postman app in Okta, directly or through a group".into(),
            rule: RULE,
        },
        (None, false) => Desired {
            active: false,
            reason: "no Okta user matches: not entitled".into(),
            rule: RULE,
        },
    };

    let snapshot = local.snapshot.as_ref().map(|m| SnapshotSide {
        scim_id: m.scim_id.to_string(),
        active: m.active,
        attributes: m.attrs.clone(),
        since: local
            .snapshot_times
            .as_ref()
            .map(|t| t.0.clone())
            .unwrap_or_default(),
        missing_since: local.snapshot_times.as_ref().and_then(|t| t.1.clone()),
    });
    let postman = postman_account.as_ref().map(|acct| {
        let id = scim_id_asked
            .clone()
            .map_or_else(|| query.to_string(), |s| s.to_string());
        postman_side(id, acct.as_ref(), local.snapshot.as_ref())
    });

    // The state database's records about them.
    let okta_key = okta_id.as_ref().map(|i| i.to_string());
    let (failure, held, unresolved, history, carried) = match &local.store {
        None => (None, None, Vec::new(), Vec::new(), Carried::default()),
        Some(store) => {
            let read = || -> Result<_, StoreError> {
                let failure = match &okta_key {
                    Some(k) => store.failures()?.into_iter().find(|r| &r.okta_id == k),
                    None => None,
                };
                let mut held: BTreeMap<OktaUserId, String> = store.quarantined(now)?;
                for (id, why) in Recovery::unverified(store.journal_pending()?).held_users() {
                    held.entry(id).or_insert(why);
                }
                let missing = store.missing()?;
                let who = okta_key
                    .clone()
                    .or_else(|| local.unmanaged.as_ref().map(|u| u.scim_id.clone()))
                    .unwrap_or_else(|| query.to_string());
                let history = store.history(&HistoryFilter {
                    user: Some(who),
                    ..HistoryFilter::default()
                })?;
                Ok((failure, held, missing, history))
            };
            let (failure, held, missing, history) = read().map_err(CliError::failed)?;
            let mine = |id: &OktaUserId| okta_id.as_ref() == Some(id);
            let carried = Carried {
                held: held
                    .iter()
                    .filter(|(k, _)| mine(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                missing_before: missing.into_iter().filter(|k| mine(k)).collect(),
            };
            let held_reason = carried.held.values().next().cloned();
            let unresolved: Vec<HistoryEntry> = history
                .iter()
                .filter(|e| matches!(e.result.as_str(), "intended" | "parked"))
                .cloned()
                .collect();
            let skip = history.len().saturating_sub(HISTORY);
            let last: Vec<HistoryEntry> = history.into_iter().skip(skip).collect();
            (failure, held_reason, unresolved, last, carried)
        }
    };

    let next = next_run(
        &desired,
        app_user.as_ref(),
        local.snapshot.as_ref(),
        postman_account.as_ref(),
        &carried,
        local.unmanaged.as_ref(),
    );

    let identity = Identity {
        user_name: app_user
            .as_ref()
            .and_then(|a| a.mapped.as_ref().ok().map(|d| d.attrs.user_name.clone()))
            .or_else(|| local.snapshot.as_ref().map(|m| m.attrs.user_name.clone()))
            .or_else(|| okta_side.as_ref().and_then(|o: &OktaSide| o.login.clone()))
            .or_else(|| local.unmanaged.as_ref().map(|u| u.user_name.clone()))
            .or_else(|| {
                postman_account
                    .as_ref()
                    .and_then(|p| p.as_ref().map(|u| u.attrs.user_name.clone()))
            }),
        okta_id: okta_id
            .filter(|_| okta_user_exists || local.snapshot.is_some())
            .map(|i| i.to_string()),
        scim_id: scim_id_asked.map(|s| s.to_string()).or_else(|| {
            postman_account
                .as_ref()
                .and_then(|p| p.as_ref().map(|u| u.id.to_string()))
        }),
    };
    Ok(WhyReport {
        query: query.to_string(),
        user: identity,
        found_in,
        desired,
        assignment,
        okta: okta_side,
        snapshot,
        unmanaged: local.unmanaged,
        postman,
        failure,
        held,
        unresolved,
        history,
        next,
    })
}

fn okta_side_of(user: &crate::okta::UserView, app: Option<&AppUserView>) -> OktaSide {
    let mut side = OktaSide {
        okta_id: user.okta_id.to_string(),
        login: user.login.clone(),
        user_status: user.status.clone(),
        app_user_status: app.and_then(|a| a.app_user_status.clone()),
        attributes: Vec::new(),
        skipped: None,
    };
    let Some(a) = app else {
        return side;
    };
    if let Some(s) = &a.user_status {
        side.user_status = Some(s.clone());
    }
    match &a.mapped {
        Err(why) => side.skipped = Some(why.clone()),
        Ok(d) => {
            let source = |s: &Option<Source>| {
                s.as_ref().map_or_else(
                    || "none had a value: the local part of the userName".to_string(),
                    Source::to_string,
                )
            };
            side.attributes = vec![
                MappedAttribute {
                    name: "userName",
                    value: d.attrs.user_name.clone(),
                    source: source(&a.sources.user_name),
                },
                MappedAttribute {
                    name: "givenName",
                    value: d.attrs.given_name.clone(),
                    source: source(&a.sources.given_name),
                },
                MappedAttribute {
                    name: "familyName",
                    value: d.attrs.family_name.clone(),
                    source: source(&a.sources.family_name),
                },
            ];
        }
    }
    side
}

fn postman_side(id: String, acct: Option<&PostmanUser>, snap: Option<&ManagedUser>) -> PostmanSide {
    let Some(u) = acct else {
        let mut differences = Vec::new();
        if snap.is_some() {
            differences.push(
                "Postman has no account with the SCIM id the snapshot names (removed by Postman support?); a full run forgets it after two listings lack it".to_string(),
            );
        }
        return PostmanSide {
            scim_id: id,
            exists: false,
            active: None,
            attributes: None,
            differences,
        };
    };
    let mut differences = Vec::new();
    if let Some(m) = snap {
        if m.active != u.active {
            differences.push(format!(
                "active: snapshot {} but Postman {}",
                m.active, u.active
            ));
        }
        for (name, a, b) in [
            ("userName", &m.attrs.user_name, &u.attrs.user_name),
            ("givenName", &m.attrs.given_name, &u.attrs.given_name),
            ("familyName", &m.attrs.family_name, &u.attrs.family_name),
        ] {
            if a != b {
                differences.push(format!("{name}: snapshot {a:?} but Postman {b:?}"));
            }
        }
    }
    PostmanSide {
        scim_id: u.id.to_string(),
        exists: true,
        active: Some(u.active),
        attributes: Some(u.attrs.clone()),
        differences,
    }
}

/// What the next run would do for this one person: the real planner over a one-person Okta
/// read and the one-row snapshot (with `--live`, against the live account as a full run would
/// see it).
fn next_run(
    desired: &Desired,
    app_user: Option<&AppUserView>,
    snap: Option<&ManagedUser>,
    postman: Option<&Option<PostmanUser>>,
    carried: &Carried,
    unmanaged: Option<&UnmanagedRecord>,
) -> Next {
    let mut read = OktaRead {
        complete: true,
        ..OktaRead::default()
    };
    if let Some(a) = app_user {
        match &a.mapped {
            Ok(d) => {
                read.users.insert(d.okta_id.clone(), d.clone());
            }
            Err(why) => {
                read.skipped.insert(a.okta_id.clone(), why.clone());
            }
        }
    }
    let snapshot: BTreeMap<OktaUserId, ManagedUser> = snap
        .map(|m| (m.okta_id.clone(), m.clone()))
        .into_iter()
        .collect();
    let listing: Option<Vec<PostmanUser>> = postman.map(|p| p.iter().cloned().collect());
    // The guards judge a whole run's plan, not one person's: this plan may deactivate its one
    // person (the real run's guard still counts them with everyone else).
    let policy = Policy {
        max_deactivations: 1,
        allow_deactivations: Some(1),
    };
    let p = plan(&read, &snapshot, listing.as_deref(), carried, &policy);
    if let Some((op, why)) = p.deferred.first() {
        return Next {
            op: None,
            ops: Vec::new(),
            reason: format!(
                "nothing yet: it would {} ({}), but their writes are held: {why}",
                op.kind(),
                op.reason
            ),
        };
    }
    if let Some(op) = p.operations.first() {
        let mut reason = p
            .operations
            .iter()
            .map(|o| format!("{}: {}", o.kind(), o.reason))
            .collect::<Vec<_>>()
            .join("; then ");
        if postman.is_none() && unmanaged.is_some() && op.kind() == "create" {
            reason.push_str(
                ". Postman already has an unmanaged member by this userName: the create is answered 409 and that member is adopted (a full run adopts it directly)",
            );
        }
        return Next {
            op: Some(op.kind().to_string()),
            ops: p.operations.clone(),
            reason,
        };
    }
    let reason = if !p.skipped.is_empty() {
        "nothing: the person cannot be mapped, and a skipped person is never changed".to_string()
    } else if !p.forget.is_empty() {
        "nothing to send: the snapshot row is forgotten, since two full listings lacked the account"
            .to_string()
    } else if snap.is_some() {
        format!(
            "nothing: Postman already matches what Okta wants ({})",
            if desired.active { "active" } else { "inactive" }
        )
    } else if unmanaged.is_some() {
        "nothing: an unmanaged Postman member is never touched, and no Okta user assigned to the app matches them".to_string()
    } else if desired.active {
        "nothing".to_string()
    } else {
        "nothing: they are not entitled and have no managed Postman account".to_string()
    };
    Next {
        op: None,
        ops: Vec::new(),
        reason,
    }
}

fn render(r: &WhyReport) -> String {
    let mut out = String::new();
    let name = r.user.user_name.as_deref().unwrap_or(&r.query);
    out.push_str(&format!(
        "{name}: {}\n",
        if r.desired.active {
            "should be an ACTIVE Postman member"
        } else {
            "should NOT be an active Postman member"
        }
    ));
    out.push_str(&format!("  because: {}\n", r.desired.reason));
    out.push_str(&format!("  rule: {}\n", r.desired.rule));
    out.push_str(&format!(
        "  ids: Okta {}, Postman SCIM {}\n  found in: {}\n",
        r.user.okta_id.as_deref().unwrap_or("-"),
        r.user.scim_id.as_deref().unwrap_or("-"),
        r.found_in.join(", ")
    ));
    out.push_str("\nAssignment:\n");
    if !r.assignment.assigned {
        out.push_str("  not assigned to the Postman app\n");
    } else {
        out.push_str(&format!(
            "  directly: {}\n",
            if r.assignment.direct { "yes" } else { "no" }
        ));
    }
    if r.assignment.groups.is_empty() {
        out.push_str("  through groups: none\n");
    } else {
        for g in &r.assignment.groups {
            out.push_str(&format!("  through group: {} ({})\n", g.name, g.id));
        }
    }
    if let Some(o) = &r.okta {
        out.push_str(&format!(
            "\nOkta: user {} status {}, app user status {}\n",
            o.okta_id,
            o.user_status.as_deref().unwrap_or("-"),
            o.app_user_status.as_deref().unwrap_or("-")
        ));
        for a in &o.attributes {
            out.push_str(&format!(
                "  {} = {:?} (from {})\n",
                a.name, a.value, a.source
            ));
        }
        if let Some(s) = &o.skipped {
            out.push_str(&format!("  skipped by the sync: {s}\n"));
        }
    }
    match &r.snapshot {
        Some(s) => out.push_str(&format!(
            "\nSnapshot: SCIM id {}, {}, last pushed {:?} {:?} {:?}, since {}{}\n",
            s.scim_id,
            if s.active { "active" } else { "inactive" },
            s.attributes.user_name,
            s.attributes.given_name,
            s.attributes.family_name,
            s.since,
            s.missing_since
                .as_ref()
                .map(|m| format!("; missing from full listings since {m}"))
                .unwrap_or_default()
        )),
        None => out.push_str("\nSnapshot: not a managed member\n"),
    }
    if let Some(u) = &r.unmanaged {
        out.push_str(&format!(
            "  unmanaged Postman member {} ({}, {}): never touched by the sync\n",
            u.user_name,
            u.scim_id,
            if u.active { "active" } else { "inactive" }
        ));
    }
    if let Some(p) = &r.postman {
        match &p.attributes {
            None => out.push_str(&format!("\nPostman (live): no account {}\n", p.scim_id)),
            Some(a) => out.push_str(&format!(
                "\nPostman (live): {} {}, {:?} {:?} {:?}\n",
                p.scim_id,
                if p.active == Some(true) {
                    "active"
                } else {
                    "inactive"
                },
                a.user_name,
                a.given_name,
                a.family_name
            )),
        }
        for d in &p.differences {
            out.push_str(&format!("  DIFFERS: {d}\n"));
        }
    }
    if let Some(f) = &r.failure {
        out.push_str(&format!(
            "\nFailures: {} x {} (last {}): {}{}\n",
            f.attempts,
            f.op,
            f.last_failed,
            f.error,
            f.retry_after
                .as_ref()
                .map(|t| format!("; quarantined until {t}"))
                .unwrap_or_default()
        ));
    }
    if let Some(h) = &r.held {
        out.push_str(&format!("Held: {h}\n"));
    }
    if !r.unresolved.is_empty() {
        out.push_str(&format!(
            "Unresolved journal entries: {}\n",
            r.unresolved.len()
        ));
    }
    if !r.history.is_empty() {
        out.push_str("\nLast operations:\n");
        out.push_str(&super::history::render(&r.history));
    }
    out.push_str(&format!(
        "\nNext run: {}\n  {}\n",
        r.next.op.as_deref().unwrap_or("nothing"),
        r.next.reason
    ));
    out
}
