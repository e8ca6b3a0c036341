//! The snapshot: what we believe Postman holds, as of the last confirmed write or full read.
//! Managed users (`users`), pushed groups and their members (`groups`, `group_members`), the
//! managed users a full listing lacked (`users.missing_since`), and the Postman members we do
//! not manage (`unmanaged`). The unmanaged list lives here rather than in a file of its own
//! because it is, like the missing marks, a record of what the last full listing saw, written
//! at the same point of a run. [`SnapshotChange`] is the one way a confirmed write changes the
//! snapshot; the journal applies it inside its own transaction through `apply_change`. This
//! module must not touch the journal or the failure records.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::{ts, Store, StoreError};
use crate::model::{
    ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, ScimGroupId, ScimUserId, UserAttrs,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnmanagedRecord {
    pub scim_id: String,
    pub user_name: String,
    pub active: bool,
}

/// How a snapshot row changes when a journalled write is confirmed.
#[derive(Clone, Debug)]
pub enum SnapshotChange {
    Upsert(ManagedUser),
    SetActive {
        okta_id: OktaUserId,
        active: bool,
    },
    SetAttrs {
        okta_id: OktaUserId,
        attrs: UserAttrs,
    },
    Forget(OktaUserId),
    Group(GroupChange),
}

/// How the group snapshot changes when a group write (or an adoption) is confirmed.
#[derive(Clone, Debug)]
pub enum GroupChange {
    /// Link (or re-link) a Postman group, replacing its known members.
    Upsert(ManagedGroup),
    Rename {
        okta_id: OktaGroupId,
        display_name: String,
    },
    /// Replace the known members (a full read, or deactivated users dropped).
    SetMembers {
        okta_id: OktaGroupId,
        members: BTreeSet<ScimUserId>,
    },
    AddMembers {
        okta_id: OktaGroupId,
        members: Vec<ScimUserId>,
    },
    RemoveMembers {
        okta_id: OktaGroupId,
        members: Vec<ScimUserId>,
    },
    Forget(OktaGroupId),
}

impl Store {
    /// Every managed user, keyed by Okta id.
    pub fn snapshot(&self) -> Result<BTreeMap<OktaUserId, ManagedUser>, StoreError> {
        self.collect_rows(
            "SELECT okta_id, scim_id, user_name, given_name, family_name, active FROM users",
            [],
            |r| {
                let m = ManagedUser {
                    okta_id: OktaUserId(r.get(0)?),
                    scim_id: ScimUserId(r.get(1)?),
                    attrs: UserAttrs {
                        user_name: r.get(2)?,
                        given_name: r.get(3)?,
                        family_name: r.get(4)?,
                    },
                    active: r.get::<_, i64>(5)? != 0,
                };
                Ok((m.okta_id.clone(), m))
            },
        )
    }

    pub fn managed_counts(&self) -> Result<(i64, i64), StoreError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(active), 0), COALESCE(SUM(1 - active), 0) FROM users",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    pub(super) fn apply_change(
        tx: &rusqlite::Transaction<'_>,
        change: &SnapshotChange,
        now: &str,
    ) -> rusqlite::Result<()> {
        match change {
            SnapshotChange::Upsert(m) => {
                // A SCIM id belongs to one Okta user: drop a stale link first.
                tx.execute(
                    "DELETE FROM users WHERE scim_id = ?1 AND okta_id <> ?2",
                    params![m.scim_id.0, m.okta_id.0],
                )?;
                tx.execute(
                    "INSERT INTO users (okta_id, scim_id, user_name, given_name, family_name, active, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (okta_id) DO UPDATE SET scim_id = excluded.scim_id,
                        user_name = excluded.user_name, given_name = excluded.given_name,
                        family_name = excluded.family_name, active = excluded.active,
                        updated_at = excluded.updated_at",
                    params![
                        m.okta_id.0,
                        m.scim_id.0,
                        m.attrs.user_name,
                        m.attrs.given_name,
                        m.attrs.family_name,
                        m.active as i64,
                        now
                    ],
                )?;
            }
            SnapshotChange::SetActive { okta_id, active } => {
                tx.execute(
                    "UPDATE users SET active = ?2, updated_at = ?3 WHERE okta_id = ?1",
                    params![okta_id.0, *active as i64, now],
                )?;
            }
            SnapshotChange::SetAttrs { okta_id, attrs } => {
                tx.execute(
                    "UPDATE users SET user_name = ?2, given_name = ?3, family_name = ?4, updated_at = ?5 WHERE okta_id = ?1",
                    params![okta_id.0, attrs.user_name, attrs.given_name, attrs.family_name, now],
                )?;
            }
            SnapshotChange::Forget(okta_id) => {
                tx.execute("DELETE FROM users WHERE okta_id = ?1", params![okta_id.0])?;
            }
            SnapshotChange::Group(g) => Self::apply_group_change(tx, g, now)?,
        }
        Ok(())
    }

    fn apply_group_change(
        tx: &rusqlite::Transaction<'_>,
        change: &GroupChange,
        now: &str,
    ) -> rusqlite::Result<()> {
        let insert_member = |okta_id: &OktaGroupId, m: &ScimUserId| {
            tx.execute(
                "INSERT OR IGNORE INTO group_members (okta_group_id, scim_user_id) VALUES (?1, ?2)",
                params![okta_id.0, m.0],
            )
        };
        match change {
            GroupChange::Upsert(g) => {
                // A Postman group belongs to one Okta group: drop a stale link first.
                tx.execute(
                    "DELETE FROM groups WHERE scim_id = ?1 AND okta_id <> ?2",
                    params![g.scim_id.0, g.okta_id.0],
                )?;
                tx.execute(
                    "INSERT INTO groups (okta_id, scim_id, display_name, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (okta_id) DO UPDATE SET scim_id = excluded.scim_id,
                        display_name = excluded.display_name, updated_at = excluded.updated_at",
                    params![g.okta_id.0, g.scim_id.0, g.display_name, now],
                )?;
                tx.execute(
                    "DELETE FROM group_members WHERE okta_group_id = ?1",
                    params![g.okta_id.0],
                )?;
                for m in &g.members {
                    insert_member(&g.okta_id, m)?;
                }
            }
            GroupChange::Rename {
                okta_id,
                display_name,
            } => {
                tx.execute(
                    "UPDATE groups SET display_name = ?2, updated_at = ?3 WHERE okta_id = ?1",
                    params![okta_id.0, display_name, now],
                )?;
            }
            GroupChange::SetMembers { okta_id, members } => {
                tx.execute(
                    "DELETE FROM group_members WHERE okta_group_id = ?1",
                    params![okta_id.0],
                )?;
                for m in members {
                    insert_member(okta_id, m)?;
                }
            }
            GroupChange::AddMembers { okta_id, members } => {
                // Only for a group the snapshot holds (the foreign key would refuse others).
                let known: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM groups WHERE okta_id = ?1)",
                    params![okta_id.0],
                    |r| r.get(0),
                )?;
                if known {
                    for m in members {
                        insert_member(okta_id, m)?;
                    }
                }
            }
            GroupChange::RemoveMembers { okta_id, members } => {
                for m in members {
                    tx.execute(
                        "DELETE FROM group_members WHERE okta_group_id = ?1 AND scim_user_id = ?2",
                        params![okta_id.0, m.0],
                    )?;
                }
            }
            GroupChange::Forget(okta_id) => {
                tx.execute("DELETE FROM groups WHERE okta_id = ?1", params![okta_id.0])?;
            }
        }
        Ok(())
    }

    // ---- group snapshot ---------------------------------------------------------------------

    /// Every pushed group, keyed by Okta group id, with the members we believe it has.
    pub fn group_snapshot(&self) -> Result<BTreeMap<OktaGroupId, ManagedGroup>, StoreError> {
        let mut out: BTreeMap<OktaGroupId, ManagedGroup> = self.collect_rows(
            "SELECT okta_id, scim_id, display_name FROM groups",
            [],
            |r| {
                let g = ManagedGroup {
                    okta_id: OktaGroupId(r.get(0)?),
                    scim_id: ScimGroupId(r.get(1)?),
                    display_name: r.get(2)?,
                    members: BTreeSet::new(),
                };
                Ok((g.okta_id.clone(), g))
            },
        )?;
        let members: Vec<(String, String)> = self.collect_rows(
            "SELECT okta_group_id, scim_user_id FROM group_members",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (g, m) in members {
            if let Some(group) = out.get_mut(&OktaGroupId(g)) {
                group.members.insert(ScimUserId(m));
            }
        }
        Ok(out)
    }

    /// Applies snapshot changes that need no SCIM write (adoptions, forgetting vanished
    /// accounts, refreshing from a full read) in one transaction.
    pub fn apply_changes(
        &mut self,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            for c in changes {
                Self::apply_change(tx, c, &now)?;
            }
            Ok(())
        })
    }

    // ---- managed users missing from a full listing -----------------------------------------

    /// Managed users the last full Postman listing lacked.
    pub fn missing(&self) -> Result<BTreeSet<OktaUserId>, StoreError> {
        self.collect_rows(
            "SELECT okta_id FROM users WHERE missing_since IS NOT NULL",
            [],
            |r| Ok(OktaUserId(r.get(0)?)),
        )
    }

    /// After a full listing: exactly `missing` are marked missing (keeping the time they were
    /// first missed), every other managed user is cleared.
    pub fn set_missing(
        &mut self,
        missing: &BTreeSet<OktaUserId>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            let marked: Vec<String> = tx
                .prepare("SELECT okta_id FROM users WHERE missing_since IS NOT NULL")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut clear =
                tx.prepare("UPDATE users SET missing_since = NULL WHERE okta_id = ?1")?;
            for id in marked
                .iter()
                .filter(|id| !missing.contains(&OktaUserId(id.to_string())))
            {
                clear.execute(params![id])?;
            }
            let mut mark = tx.prepare(
                "UPDATE users SET missing_since = COALESCE(missing_since, ?2) WHERE okta_id = ?1",
            )?;
            for id in missing {
                mark.execute(params![id.0, now])?;
            }
            Ok(())
        })
    }

    // ---- unmanaged members ------------------------------------------------------------------

    pub fn replace_unmanaged(&mut self, members: &[UnmanagedRecord]) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            tx.execute("DELETE FROM unmanaged", [])?;
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO unmanaged (scim_id, user_name, active) VALUES (?1, ?2, ?3)",
            )?;
            for m in members {
                stmt.execute(params![m.scim_id, m.user_name, m.active as i64])?;
            }
            Ok(())
        })
    }

    pub fn unmanaged(&self) -> Result<Vec<UnmanagedRecord>, StoreError> {
        self.collect_rows(
            "SELECT scim_id, user_name, active FROM unmanaged ORDER BY user_name",
            [],
            |r| {
                Ok(UnmanagedRecord {
                    scim_id: r.get(0)?,
                    user_name: r.get(1)?,
                    active: r.get::<_, i64>(2)? != 0,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OktaUserId, OpKind, Subject};
    use crate::store::fixtures::*;
    use chrono::Duration as ChronoDuration;

    #[test]
    fn missing_marks_keep_their_first_time_and_clear_when_listed_again() {
        let mut s = Store::in_memory().expect("mem");
        s.apply_changes(&[SnapshotChange::Upsert(ann())], now())
            .expect("ann");
        let ann_id: BTreeSet<OktaUserId> = [ann().okta_id].into();
        s.set_missing(&ann_id, now()).expect("mark");
        s.set_missing(&ann_id, now() + ChronoDuration::days(1))
            .expect("mark again");
        let since: String = s
            .conn
            .query_row("SELECT missing_since FROM users", [], |r| r.get(0))
            .expect("since");
        assert_eq!(since, ts(now()));
        assert_eq!(s.missing().expect("missing"), ann_id);
        s.set_missing(&BTreeSet::new(), now()).expect("clear");
        assert!(s.missing().expect("missing").is_empty());
    }

    #[test]
    fn group_changes_rename_add_remove_and_forget_with_their_members() {
        let mut s = Store::in_memory().expect("mem");
        let id = eng().okta_id;
        let g = |c| SnapshotChange::Group(c);
        s.apply_changes(&[g(GroupChange::Upsert(eng()))], now())
            .expect("upsert");
        let j = s
            .journal_intend(
                "r",
                &Subject::Group(id.clone()),
                OpKind::GroupRename,
                "Platform",
                "{}",
                now(),
            )
            .expect("intend");
        s.journal_done(
            j,
            None,
            &[
                g(GroupChange::Rename {
                    okta_id: id.clone(),
                    display_name: "Platform".into(),
                }),
                g(GroupChange::AddMembers {
                    okta_id: id.clone(),
                    members: vec![ScimUserId::new("s-bob"), ScimUserId::new("s-cid")],
                }),
                g(GroupChange::RemoveMembers {
                    okta_id: id.clone(),
                    members: vec![ScimUserId::new("s-ann")],
                }),
                // Members of a group the snapshot does not hold are ignored.
                g(GroupChange::AddMembers {
                    okta_id: OktaGroupId::new("00gother"),
                    members: vec![ScimUserId::new("s-bob")],
                }),
            ],
            now(),
        )
        .expect("done");
        let snap = s.group_snapshot().expect("groups");
        assert_eq!(snap.len(), 1);
        let got = &snap[&id];
        assert_eq!(got.display_name, "Platform");
        assert_eq!(
            got.members,
            [ScimUserId::new("s-bob"), ScimUserId::new("s-cid")].into()
        );
        s.apply_changes(
            &[g(GroupChange::SetMembers {
                okta_id: id.clone(),
                members: BTreeSet::new(),
            })],
            now(),
        )
        .expect("set");
        assert!(s.group_snapshot().expect("groups")[&id].members.is_empty());
        s.apply_changes(&[g(GroupChange::Forget(id.clone()))], now())
            .expect("forget");
        assert!(s.group_snapshot().expect("groups").is_empty());
        let members: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM group_members", [], |r| r.get(0))
            .expect("count");
        assert_eq!(members, 0);
    }
}
