//! The group step's reads, before any write of the run: the Okta groups assigned to the app
//! (filtered by `[groups] push`) with their members, the group snapshot, and on full runs every
//! Postman group. A failed member page makes that group's read partial (no removals, no
//! deletions); a failed listing leaves group push out of this run. It must not write anything.

use std::collections::{BTreeMap, BTreeSet};

use tracing::Instrument;

use crate::model::{
    DesiredGroup, ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, PostmanGroup,
};
use crate::okta::OktaClient;
use crate::scim::ScimClient;
use crate::store::StoreHandle;
use crate::sync::describe;
use crate::sync::outcome::{Outcome, RunReport};

use super::plan::{plan_groups, select_groups, GroupPlan, GroupPolicy, GroupRead};

/// Everything the group planner needs that was read before any write of the run.
pub struct GroupInputs {
    pub read: GroupRead,
    pub snapshot: BTreeMap<OktaGroupId, ManagedGroup>,
    /// Every Postman group, on full runs.
    pub postman: Option<Vec<PostmanGroup>>,
}

impl GroupInputs {
    pub fn plan(
        &self,
        users: &BTreeMap<OktaUserId, ManagedUser>,
        policy: &GroupPolicy,
    ) -> GroupPlan {
        plan_groups(
            &self.read,
            &self.snapshot,
            self.postman.as_deref(),
            users,
            policy,
        )
    }
}

/// Reads what the group plan needs before any write of the run: the Okta groups to push with
/// their members, the group snapshot, and Postman's groups on full runs. `None` when group push
/// cannot run this time (the error is in the report and the outcome is at best partial).
pub async fn read(
    okta: &OktaClient,
    scim: &ScimClient,
    store: &StoreHandle,
    push: &[String],
    full: bool,
    report: &mut RunReport,
) -> Option<GroupInputs> {
    let span = tracing::info_span!("okta.groups");
    let assigned = match okta.list_app_groups().instrument(span.clone()).await {
        Ok(g) => g,
        Err(e) => {
            let msg = match e.hint() {
                Some(h) => format!("reading the Okta groups assigned to the app: {e}. {h}"),
                None => format!("reading the Okta groups assigned to the app: {e}"),
            };
            group_problem(report, msg);
            return None;
        }
    };
    let (picked, unresolved) = select_groups(&assigned, push);
    for p in &unresolved {
        report.errors.push(format!(
            "[groups] push names {p:?}, which is not a group assigned to the Postman app in Okta. \
             Assign the group to the app, or correct the entry (ids are safer than names)"
        ));
    }
    let mut read = GroupRead {
        unresolved,
        ..GroupRead::default()
    };
    for (id, name) in picked {
        let (members, complete) = match okta.list_group_members(&id).instrument(span.clone()).await
        {
            Ok(m) => (m, true),
            Err(e) => {
                group_problem(
                    report,
                    format!(
                        "reading the members of Okta group {name} ({id}): {e}. No group member \
                         removals and no group deletions this run"
                    ),
                );
                (BTreeSet::new(), false)
            }
        };
        read.groups.insert(
            id.clone(),
            DesiredGroup {
                okta_id: id,
                display_name: name,
                members,
                members_complete: complete,
            },
        );
    }
    let postman = if full {
        let mut groups = Vec::new();
        let listed = scim
            .list_groups(|g| groups.push(g))
            .instrument(tracing::info_span!("scim.list_groups"))
            .await;
        match listed {
            Ok(_) => Some(groups),
            Err(e) => {
                group_problem(report, format!("listing Postman groups: {}", describe(&e)));
                return None;
            }
        }
    } else {
        None
    };
    match store.call(|s| s.group_snapshot()).await {
        Ok(snapshot) => Some(GroupInputs {
            read,
            snapshot,
            postman,
        }),
        Err(e) => {
            group_problem(report, e.to_string());
            None
        }
    }
}

/// A group read failed: the rest of the run goes on, and its outcome is at best partial.
pub(crate) fn group_problem(report: &mut RunReport, msg: String) {
    tracing::error!(error = %msg, "group push incomplete");
    report.errors.push(msg);
    report.raise(Outcome::Partial);
}
