//! The safety guards over the whole plan of a run — users and groups together — checked once,
//! before the first write. The planners compute each guard's verdict (they know the rules); this
//! module decides what the run does with them: a refusal here is the only way a run can end
//! `refused`, and it happens before anything is written. The group plan made again after the
//! user writes is bounded by the checked one ([`bound_replan`]): it cannot add a deletion the
//! guard did not see, so nothing after the first write can trip a guard.

use std::collections::BTreeSet;

use crate::model::OktaGroupId;

use super::groups::plan::{GroupAction, GroupPlan};
use super::users::plan::{Plan, Refusal};

/// Why the whole plan must not be carried out, in words for the operator, naming who it
/// would have cost access.
pub fn check(
    users: &Plan,
    groups: Option<&GroupPlan>,
    missing_names: &[String],
) -> Result<(), String> {
    let Some(refusal) = users
        .refusal
        .as_ref()
        .or(groups.and_then(|g| g.refusal.as_ref()))
    else {
        return Ok(());
    };
    let (label, mut who): (&str, Vec<String>) = match refusal {
        Refusal::ManagedMissingFromPostman { .. } => {
            ("Missing from the listing", missing_names.to_vec())
        }
        _ => (
            "Would deactivate",
            users.deactivations().map(|o| o.user_name.clone()).collect(),
        ),
    };
    if let Some(g) = groups {
        who.extend(
            g.losses()
                .map(|m| format!("{} (group deletion)", m.user_name)),
        );
    }
    Err(if who.is_empty() {
        refusal.explain()
    } else {
        format!("{}. {label}: {}", refusal.explain(), who.join(", "))
    })
}

/// The group plan made again after the user writes (so users created in this run join their
/// groups now), held to what the guard checked: a deletion the checked plan did not hold is
/// withheld, and a verdict the re-plan reaches is not acted on (its deletions are withheld too).
pub fn bound_replan(mut fresh: GroupPlan, checked: &GroupPlan) -> GroupPlan {
    let allowed: BTreeSet<&OktaGroupId> = checked
        .operations
        .iter()
        .filter(|o| matches!(o.action, GroupAction::Delete { .. }))
        .map(|o| &o.okta_id)
        .collect();
    let refused = fresh.refusal.take().is_some();
    let (keep, withhold): (Vec<_>, Vec<_>) = fresh.operations.into_iter().partition(|o| {
        !matches!(o.action, GroupAction::Delete { .. })
            || (!refused && allowed.contains(&o.okta_id))
    });
    if !withhold.is_empty() {
        tracing::warn!(
            count = withhold.len(),
            "group deletions that the pre-write guard did not check are withheld until the next run"
        );
    }
    fresh.operations = keep;
    fresh.withheld.extend(withhold);
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ScimGroupId;
    use crate::sync::groups::plan::GroupOperation;

    fn delete(id: &str) -> GroupOperation {
        GroupOperation {
            okta_id: OktaGroupId::new(id),
            display_name: id.to_string(),
            action: GroupAction::Delete {
                scim_id: ScimGroupId::new(format!("s-{id}")),
                loses_access: Vec::new(),
            },
            reason: "no longer pushed".into(),
        }
    }

    #[test]
    fn a_replan_cannot_add_deletions_or_refuse_after_the_writes_began() {
        let checked = GroupPlan {
            operations: vec![delete("a")],
            ..GroupPlan::default()
        };
        let fresh = GroupPlan {
            operations: vec![delete("a"), delete("b")],
            ..GroupPlan::default()
        };
        let bounded = bound_replan(fresh, &checked);
        assert_eq!(bounded.operations, vec![delete("a")]);
        assert_eq!(bounded.withheld, vec![delete("b")]);
        assert!(bounded.refusal.is_none());

        let fresh = GroupPlan {
            operations: vec![delete("a")],
            refusal: Some(Refusal::TooManyDeactivations { count: 9, limit: 1 }),
            ..GroupPlan::default()
        };
        let bounded = bound_replan(fresh, &checked);
        assert!(bounded.operations.is_empty());
        assert!(bounded.refusal.is_none(), "no refusal after a write");
        assert_eq!(bounded.withheld.len(), 1);
    }
}
