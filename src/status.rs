//! What the state database knows, as data: managed users by state, unmanaged members, pushed
//! groups, failing and quarantined users, interrupted writes, the last runs; and its text form.
//! One read ([`collect`]) that the `status` command and the daemon's `/status` both use. Read
//! only, no API call; this module must not print, parse the command line or pick exit codes.

use chrono::Utc;
use serde::Serialize;

use crate::output::table;
use crate::store::{
    EventStatus, FailureRecord, RunRecord, Store, StoreError, UnmanagedRecord, UnresolvedWrite,
};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub state_path: String,
    pub managed_active: i64,
    pub managed_inactive: i64,
    pub unmanaged: Vec<UnmanagedRecord>,
    /// Pushed groups: (Okta group id, Postman displayName, known members).
    pub groups: Vec<GroupStatus>,
    pub failures: Vec<FailureRecord>,
    pub quarantined: usize,
    pub interrupted_writes: usize,
    /// Interrupted writes recovery tried and could not verify (retrying, or parked); their
    /// users are held until they are settled.
    pub unresolved_writes: Vec<UnresolvedWrite>,
    pub last_success: Option<String>,
    pub runs: Vec<RunRecord>,
    /// Near-real-time sync (issue 14): the System Log cursor, the last event applied, the
    /// event queue and the deactivations held by the event guard.
    pub events: EventStatus,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub okta_id: String,
    pub scim_id: String,
    pub display_name: String,
    pub members: usize,
}

/// Collects the status from an open store.
pub fn collect(store: &Store, runs: usize) -> Result<StatusReport, StoreError> {
    let (active, inactive) = store.managed_counts()?;
    Ok(StatusReport {
        state_path: store.path().display().to_string(),
        managed_active: active,
        managed_inactive: inactive,
        unmanaged: store.unmanaged()?,
        groups: store
            .group_snapshot()?
            .into_values()
            .map(|g| GroupStatus {
                okta_id: g.okta_id.to_string(),
                scim_id: g.scim_id.to_string(),
                display_name: g.display_name,
                members: g.members.len(),
            })
            .collect(),
        failures: store.failures()?,
        quarantined: store.quarantined(Utc::now())?.len(),
        interrupted_writes: store.journal_pending()?.len(),
        unresolved_writes: store.journal_unresolved()?,
        last_success: store.last_success()?.map(|t| t.to_rfc3339()),
        runs: store.last_runs(runs)?,
        events: store.event_status()?,
    })
}

pub fn render(s: &StatusReport) -> String {
    let mut out = format!("State: {}\n", s.state_path);
    out.push_str(&format!(
        "Managed Postman members: {} active, {} inactive\n",
        s.managed_active, s.managed_inactive
    ));
    out.push_str(&format!(
        "Unmanaged Postman members (never touched): {}\n",
        s.unmanaged.len()
    ));
    if !s.groups.is_empty() {
        out.push_str(&format!("Pushed groups: {}\n", s.groups.len()));
        let rows: Vec<Vec<String>> = s
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.display_name.clone(),
                    g.okta_id.clone(),
                    g.members.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["GROUP", "OKTA ID", "MEMBERS"], &rows));
    }
    out.push_str(&format!(
        "Last successful run: {}\n",
        s.last_success.as_deref().unwrap_or("never")
    ));
    let e = &s.events;
    if e.cursor_updated_at.is_some() || e.last_applied.is_some() || e.queued > 0 {
        out.push_str(&format!(
            "Okta events: System Log cursor moved {}, last event applied {}, {} queued\n",
            e.cursor_updated_at.as_deref().unwrap_or("never"),
            e.last_applied
                .as_ref()
                .map(|l| format!(
                    "{} {} at {}",
                    l["event_type"].as_str().unwrap_or(""),
                    l["uuid"].as_str().unwrap_or(""),
                    l["applied_at"].as_str().unwrap_or("")
                ))
                .unwrap_or_else(|| "none".into()),
            e.queued
        ));
    }
    if !e.held.is_empty() {
        out.push_str(&format!(
            "\nDeactivations held by the event guard until the next full run ({}):\n",
            e.held.len()
        ));
        let rows: Vec<Vec<String>> = e
            .held
            .iter()
            .map(|h| {
                vec![
                    h.user_name.clone(),
                    h.event_type.clone(),
                    h.event_uuid.clone(),
                    h.held_at.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["USER", "EVENT", "UUID", "HELD AT"], &rows));
    }
    if s.interrupted_writes > 0 {
        out.push_str(&format!(
            "Interrupted writes awaiting verification on the next run: {}\n",
            s.interrupted_writes
        ));
    }
    if !s.unresolved_writes.is_empty() {
        out.push_str(&format!(
            "\nUnresolved interrupted writes ({}; their users are held until a lookup or a full run settles them):\n",
            s.unresolved_writes.len()
        ));
        let rows: Vec<Vec<String>> = s
            .unresolved_writes
            .iter()
            .map(|w| {
                vec![
                    w.user_name.clone(),
                    w.op.clone(),
                    if w.parked { "parked" } else { "retrying" }.to_string(),
                    w.attempts.to_string(),
                    w.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["USER", "OP", "STATE", "ATTEMPTS", "LAST ERROR"],
            &rows,
        ));
    }
    if !s.failures.is_empty() {
        out.push_str(&format!(
            "\nFailing users ({}, {} quarantined):\n",
            s.failures.len(),
            s.quarantined
        ));
        let rows: Vec<Vec<String>> = s
            .failures
            .iter()
            .map(|f| {
                vec![
                    f.user_name.clone(),
                    f.op.clone(),
                    f.attempts.to_string(),
                    f.retry_after.clone().unwrap_or_else(|| "next run".into()),
                    f.error.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["USER", "OP", "ATTEMPTS", "RETRY", "ERROR"], &rows));
    }
    if !s.runs.is_empty() {
        out.push_str("\nLast runs:\n");
        let rows: Vec<Vec<String>> = s
            .runs
            .iter()
            .map(|r| {
                let counts = r
                    .counts
                    .as_ref()
                    .and_then(|c| c.as_object())
                    .map(|o| {
                        o.iter()
                            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                vec![
                    r.started_at.clone(),
                    r.kind().to_string(),
                    r.outcome.clone().unwrap_or_else(|| "unfinished".into()),
                    counts,
                ]
            })
            .collect();
        out.push_str(&table(&["STARTED", "KIND", "OUTCOME", "COUNTS"], &rows));
    }
    out
}
