//! The planner: a pure function from (what Okta wants, what the snapshot says we pushed, what
//! Postman holds on a full run, policy) to the list of SCIM operations that makes Postman match.
//! No async, no clock, no network, no SQLite. The plan is what `--dry-run` prints and what
//! `users::apply` executes, so the two can never disagree. The safety guards live here too: no
//! deactivations from an incomplete Okta read, and a refusal above the deactivation limit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

pub use crate::model::OpKind;

use crate::model::{
    user_name_key, DesiredUser, ManagedUser, OktaRead, OktaUserId, PostmanUser, ScimUserId,
    UserAttrs,
};

/// What the planner may do.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `[sync] max_deactivations`.
    pub max_deactivations: usize,
    /// `--allow-deactivations N`: raises the limit for one run.
    pub allow_deactivations: Option<usize>,
}

impl Policy {
    pub fn deactivation_limit(&self) -> usize {
        self.allow_deactivations
            .map_or(self.max_deactivations, |n| n.max(self.max_deactivations))
    }
}

/// What earlier runs left behind that changes how some users are planned.
#[derive(Clone, Debug, Default)]
pub struct Carried {
    /// Users whose writes are postponed, with the reason: quarantine after repeated failures,
    /// or an interrupted create that is not resolved yet (nobody is created twice).
    pub held: BTreeMap<OktaUserId, String>,
    /// Managed users the previous full Postman listing already lacked.
    pub missing_before: BTreeSet<OktaUserId>,
}

/// One step of the plan, with everything `apply` needs to carry it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `POST /Users`. A 409 leads to a lookup and an adoption.
    Create { attrs: UserAttrs },
    /// Link an existing Postman member to this Okta user (snapshot only, no SCIM write).
    Adopt {
        scim_id: ScimUserId,
        attrs: UserAttrs,
        active: bool,
    },
    /// Change userName (PATCH) and/or names (PUT carrying userName, name and active).
    Update {
        scim_id: ScimUserId,
        from: UserAttrs,
        to: UserAttrs,
    },
    /// `PATCH active:false`.
    Deactivate { scim_id: ScimUserId },
    /// `PATCH active:true`.
    Reactivate { scim_id: ScimUserId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub okta_id: OktaUserId,
    pub user_name: String,
    pub action: Action,
    /// Why, in words an operator understands.
    pub reason: String,
}

impl Operation {
    pub fn kind(&self) -> OpKind {
        match self.action {
            Action::Create { .. } => OpKind::Create,
            Action::Adopt { .. } => OpKind::Adopt,
            Action::Update { .. } => OpKind::Update,
            Action::Deactivate { .. } => OpKind::Deactivate,
            Action::Reactivate { .. } => OpKind::Reactivate,
        }
    }

    /// Whether carrying it out sends a SCIM write.
    pub fn is_write(&self) -> bool {
        self.kind().is_write()
    }
}

/// Why a plan must not be carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "guard", rename_all = "snake_case")]
pub enum Refusal {
    TooManyDeactivations {
        count: usize,
        limit: usize,
    },
    /// Okta answered that nobody is assigned while the snapshot holds active members.
    EmptyOktaRead {
        active_managed: usize,
    },
    /// A full Postman listing lacks more managed users than the deactivation limit: a
    /// truncated listing, not accounts removed by Postman support.
    ManagedMissingFromPostman {
        count: usize,
        limit: usize,
    },
}

impl Refusal {
    pub fn explain(&self) -> String {
        match self {
            Refusal::TooManyDeactivations { count, limit } => format!(
                "this run would deactivate {count} Postman members, more than the limit of {limit}. \
                 Review the list; if it is intended, run `reconcile --allow-deactivations {count}` once, \
                 or raise [sync] max_deactivations"
            ),
            Refusal::EmptyOktaRead { active_managed } => format!(
                "Okta reported no users assigned to the Postman app while {active_managed} managed members are \
                 active in Postman. This looks like a wrong app_id or a permission problem, not everyone leaving; \
                 nothing was changed. If everyone really left, run `reconcile --allow-deactivations {active_managed}`"
            ),
            Refusal::ManagedMissingFromPostman { count, limit } => format!(
                "the full Postman listing lacks {count} managed members, more than the limit of {limit}. \
                 A listing cut short by Postman or a proxy looks like this; forgetting them would leave them \
                 active in Postman after they leave Okta. Nothing was changed. If their accounts really are \
                 gone, run `reconcile --full --allow-deactivations {count}` once"
            ),
        }
    }
}

/// An existing Postman member that is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmanaged {
    pub scim_id: ScimUserId,
    pub user_name: String,
    pub active: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In execution order; the operations of one user keep their relative order.
    pub operations: Vec<Operation>,
    /// Deactivations computed but withheld because the Okta read was incomplete.
    pub withheld: Vec<Operation>,
    /// Operations postponed because the user is quarantined (okta id -> reason).
    pub deferred: Vec<(Operation, String)>,
    /// Snapshot rows whose Postman account is missing from two consecutive full listings:
    /// forgotten (full runs only).
    pub forget: Vec<OktaUserId>,
    /// Managed users missing from this full listing for the first time: kept, marked, and
    /// planned from the snapshot like on an incremental run (full runs only).
    pub missing: Vec<OktaUserId>,
    /// Snapshot rows that disagree with what the full listing shows (a write that reached
    /// Postman before a crash, or a change by hand): refreshed to the listing before any write,
    /// so the snapshot says what Postman holds even when no operation follows (full runs only).
    pub refresh: Vec<ManagedUser>,
    /// Managed users that need nothing.
    pub unchanged: usize,
    /// Postman members no Okta user matches (full runs only).
    pub unmanaged: Vec<Unmanaged>,
    /// Okta users that could not be mapped (never deactivated because of it).
    pub skipped: BTreeMap<OktaUserId, String>,
    pub refusal: Option<Refusal>,
    /// Whether the plan was computed against a fresh read of Postman.
    pub full: bool,
}

impl Plan {
    pub fn count(&self, kind: OpKind) -> usize {
        self.operations.iter().filter(|o| o.kind() == kind).count()
    }

    pub fn writes(&self) -> usize {
        self.operations.iter().filter(|o| o.is_write()).count()
    }

    pub fn deactivations(&self) -> impl Iterator<Item = &Operation> {
        self.operations
            .iter()
            .filter(|o| o.kind() == OpKind::Deactivate)
    }
}

/// The current state of one Postman account as the planner believes it.
/// Borrowed from the snapshot or the Postman listing: at 100k users a copy of every account
/// was the planner's largest allocation (issue 6).
struct Current<'a> {
    scim_id: &'a ScimUserId,
    attrs: &'a UserAttrs,
    active: bool,
}

/// Computes the plan.
///
/// - `postman`: every Postman member, on full runs; `None` on incremental runs, which trust the
///   snapshot.
/// - `carried`: users held back by earlier failures, and who was missing from the last listing.
pub fn plan(
    desired: &OktaRead,
    snapshot: &BTreeMap<OktaUserId, ManagedUser>,
    postman: Option<&[PostmanUser]>,
    carried: &Carried,
    policy: &Policy,
) -> Plan {
    let mut out = Plan {
        full: postman.is_some(),
        skipped: desired.skipped.clone(),
        ..Plan::default()
    };

    // What each managed user looks like now, in Okta-id order (the snapshot's order), and which
    // Postman accounts are linked. Hash maps for the indexes: they are only looked up, never
    // iterated into the output, so determinism is kept.
    let mut current: Vec<(&OktaUserId, Current)> = Vec::with_capacity(snapshot.len());
    let mut by_name: HashMap<String, &PostmanUser> = HashMap::new();
    match postman {
        Some(members) => {
            let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(members.len());
            for (i, u) in members.iter().enumerate() {
                by_id.entry(u.id.as_str()).or_insert(i);
            }
            let mut linked = vec![false; members.len()];
            for m in snapshot.values() {
                match by_id.get(m.scim_id.as_str()) {
                    Some(&i) => {
                        let u = &members[i];
                        linked[i] = true;
                        if u.attrs != m.attrs || u.active != m.active {
                            out.refresh.push(ManagedUser {
                                okta_id: m.okta_id.clone(),
                                scim_id: u.id.clone(),
                                attrs: u.attrs.clone(),
                                active: u.active,
                            });
                        }
                        current.push((
                            &m.okta_id,
                            Current {
                                scim_id: &u.id,
                                attrs: &u.attrs,
                                active: u.active,
                            },
                        ));
                    }
                    // Postman has no user DELETE: an account that vanished was removed by Postman
                    // support, or the listing was cut short. One listing is not enough to tell:
                    // the first time, keep the row and plan from the snapshot; when the next full
                    // listing lacks it too, forget it (the person is created again if still
                    // wanted). Forgetting on one listing would un-manage people who are then
                    // never deactivated when they leave Okta.
                    None if carried.missing_before.contains(&m.okta_id) => {
                        out.forget.push(m.okta_id.clone())
                    }
                    None => {
                        out.missing.push(m.okta_id.clone());
                        current.push((
                            &m.okta_id,
                            Current {
                                scim_id: &m.scim_id,
                                attrs: &m.attrs,
                                active: m.active,
                            },
                        ));
                    }
                }
            }
            for (u, _) in members.iter().zip(&linked).filter(|(_, l)| !**l) {
                by_name
                    .entry(user_name_key(&u.attrs.user_name))
                    .or_insert(u);
            }
        }
        None => {
            for m in snapshot.values() {
                current.push((
                    &m.okta_id,
                    Current {
                        scim_id: &m.scim_id,
                        attrs: &m.attrs,
                        active: m.active,
                    },
                ));
            }
        }
    }

    let mut ops: Vec<Operation> = Vec::new();
    // Deactivations of people Okta no longer lists go last, after every addition.
    let mut unlisted: Vec<Operation> = Vec::new();
    let mut adopted: HashSet<&ScimUserId> = HashSet::new();
    // Both sides are sorted by Okta id: walk them together (a merge join, no lookups).
    let mut managed = current.iter().peekable();
    let mut unlisted_user = |okta_id: &OktaUserId, c: &Current, out: &mut Plan| {
        if desired.skipped.contains_key(okta_id) || !c.active {
            // Merely unreadable, or already inactive: nothing to do.
            out.unchanged += 1;
        } else {
            unlisted.push(Operation {
                okta_id: okta_id.clone(),
                user_name: c.attrs.user_name.clone(),
                action: Action::Deactivate {
                    scim_id: c.scim_id.clone(),
                },
                reason: "no longer assigned to the Postman app in Okta".to_string(),
            });
        }
    };
    for d in desired.users.values() {
        while let Some((id, c)) = managed.next_if(|(id, _)| *id < &d.okta_id) {
            unlisted_user(id, c, &mut out);
        }
        let matched = managed.next_if(|(id, _)| *id == &d.okta_id);
        let cur = match matched {
            Some((_, c)) => Some((c.scim_id, c.attrs, c.active)),
            None if by_name.is_empty() => None,
            None => match by_name.get(&user_name_key(&d.attrs.user_name)) {
                Some(u) if !adopted.contains(&u.id) => {
                    adopted.insert(&u.id);
                    ops.push(Operation {
                        okta_id: d.okta_id.clone(),
                        user_name: d.attrs.user_name.clone(),
                        action: Action::Adopt {
                            scim_id: u.id.clone(),
                            attrs: u.attrs.clone(),
                            active: u.active,
                        },
                        reason: format!(
                            "existing Postman member {} matches the Okta user by userName",
                            u.attrs.user_name
                        ),
                    });
                    Some((&u.id, &u.attrs, u.active))
                }
                _ => None,
            },
        };
        let before = ops.len();
        match cur {
            None => {
                if d.active {
                    ops.push(Operation {
                        okta_id: d.okta_id.clone(),
                        user_name: d.attrs.user_name.clone(),
                        action: Action::Create {
                            attrs: d.attrs.clone(),
                        },
                        reason: format!("assigned to the Postman app in Okta ({})", d.reason),
                    });
                }
            }
            Some((scim_id, attrs, active)) => user_ops(d, scim_id, attrs, active, &mut ops),
        }
        if ops.len() == before && matched.is_some() {
            out.unchanged += 1;
        }
    }
    // Managed users after the last one Okta lists.
    for (id, c) in managed {
        unlisted_user(id, c, &mut out);
    }
    ops.append(&mut unlisted);

    if postman.is_some() {
        for u in by_name.values() {
            if !adopted.contains(&u.id) {
                out.unmanaged.push(Unmanaged {
                    scim_id: u.id.clone(),
                    user_name: u.attrs.user_name.clone(),
                    active: u.active,
                });
            }
        }
        out.unmanaged.sort_by(|a, b| {
            a.user_name
                .cmp(&b.user_name)
                .then(a.scim_id.cmp(&b.scim_id))
        });
    }

    // Quarantine: postpone, but keep the adoption (it is only a snapshot link).
    for op in ops {
        match carried.held.get(&op.okta_id) {
            Some(why) if op.is_write() => out.deferred.push((op, why.clone())),
            _ => out.operations.push(op),
        }
    }

    // Guard 1: never deactivate from an incomplete read.
    if !desired.complete {
        let (withheld, kept): (Vec<_>, Vec<_>) = out
            .operations
            .drain(..)
            .partition(|o| o.kind() == OpKind::Deactivate);
        out.operations = kept;
        out.withheld = withheld;
    }

    // Guard 2: an empty answer is suspicious, not "everyone left".
    let deactivations = out.count(OpKind::Deactivate);
    let active_managed = current.iter().filter(|(_, c)| c.active).count();
    let limit = policy.deactivation_limit();
    // Only an explicit `--allow-deactivations` covering everyone lets an empty read through.
    let explicitly_allowed = policy
        .allow_deactivations
        .is_some_and(|n| n >= active_managed);
    if desired.complete && desired.users.is_empty() && active_managed > 0 && !explicitly_allowed {
        out.refusal = Some(Refusal::EmptyOktaRead { active_managed });
    } else if postman.is_some() && out.forget.len() + out.missing.len() > limit {
        // Guard 3: the Postman side can be a partial read too.
        out.refusal = Some(Refusal::ManagedMissingFromPostman {
            count: out.forget.len() + out.missing.len(),
            limit,
        });
    } else if deactivations > limit {
        // Guard 4: the blast-radius limit.
        out.refusal = Some(Refusal::TooManyDeactivations {
            count: deactivations,
            limit,
        });
    }
    out
}

/// The operations that take one existing account to the desired state.
fn user_ops(
    d: &DesiredUser,
    scim_id: &ScimUserId,
    attrs: &UserAttrs,
    active: bool,
    ops: &mut Vec<Operation>,
) {
    let op = |action, reason: String| Operation {
        okta_id: d.okta_id.clone(),
        user_name: d.attrs.user_name.clone(),
        action,
        reason,
    };
    if d.active {
        if !active {
            ops.push(op(
                Action::Reactivate {
                    scim_id: scim_id.clone(),
                },
                format!("active in Okta ({}) but inactive in Postman", d.reason),
            ));
        }
        if *attrs != d.attrs {
            ops.push(op(
                Action::Update {
                    scim_id: scim_id.clone(),
                    from: attrs.clone(),
                    to: d.attrs.clone(),
                },
                describe_change(attrs, &d.attrs),
            ));
        }
    } else if active {
        ops.push(op(
            Action::Deactivate {
                scim_id: scim_id.clone(),
            },
            format!("not entitled in Okta: {}", d.reason),
        ));
    }
}

fn describe_change(from: &UserAttrs, to: &UserAttrs) -> String {
    let mut parts = Vec::new();
    if from.user_name != to.user_name {
        parts.push(format!("userName {} -> {}", from.user_name, to.user_name));
    }
    if from.given_name != to.given_name || from.family_name != to.family_name {
        parts.push(format!(
            "name \"{} {}\" -> \"{} {}\"",
            from.given_name, from.family_name, to.given_name, to.family_name
        ));
    }
    format!("changed in Okta: {}", parts.join(", "))
}

/// The snapshot after every operation of `plan` succeeded: what `apply` converges to. Used by
/// property tests (planning again against it yields an empty plan) and to reason about apply.
pub fn simulate(
    plan: &Plan,
    snapshot: &BTreeMap<OktaUserId, ManagedUser>,
    created_id: impl Fn(&OktaUserId) -> ScimUserId,
) -> BTreeMap<OktaUserId, ManagedUser> {
    let mut snap = snapshot.clone();
    for id in &plan.forget {
        snap.remove(id);
    }
    for m in &plan.refresh {
        snap.insert(m.okta_id.clone(), m.clone());
    }
    for op in &plan.operations {
        let okta_id = op.okta_id.clone();
        match &op.action {
            Action::Create { attrs } => {
                snap.insert(
                    okta_id.clone(),
                    ManagedUser {
                        scim_id: created_id(&okta_id),
                        okta_id,
                        attrs: attrs.clone(),
                        active: true,
                    },
                );
            }
            Action::Adopt {
                scim_id,
                attrs,
                active,
            } => {
                snap.insert(
                    okta_id.clone(),
                    ManagedUser {
                        okta_id,
                        scim_id: scim_id.clone(),
                        attrs: attrs.clone(),
                        active: *active,
                    },
                );
            }
            Action::Update { to, .. } => {
                if let Some(m) = snap.get_mut(&okta_id) {
                    m.attrs = to.clone();
                }
            }
            Action::Deactivate { .. } => {
                if let Some(m) = snap.get_mut(&okta_id) {
                    m.active = false;
                }
            }
            Action::Reactivate { .. } => {
                if let Some(m) = snap.get_mut(&okta_id) {
                    m.active = true;
                }
            }
        }
    }
    snap
}

#[cfg(test)]
mod tests;
