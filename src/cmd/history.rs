//! `history`: the audit trail from the state database ([`crate::store::Store::history`]) — every
//! Postman write and adoption, with its time, run, trigger, operation, subject, result, error
//! and reason — as a table, one JSON array, or JSON lines for a SIEM.
//!
//! Read-only: it opens the state file read-only (so it works while the daemon runs), makes no
//! API call and reads no secret. It must not prune or otherwise change the journal.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{print_json, CliError};
use crate::cli::HistoryFormat;
use crate::config::Config;
use crate::exit::Exit;
use crate::model::{OpKind, ALL_KINDS};
use crate::output::table;
use crate::store::{HistoryEntry, HistoryFilter, Store};

pub async fn run(
    config_path: &Path,
    user: Option<String>,
    since: Option<String>,
    op: Option<String>,
    output: HistoryFormat,
) -> Result<Exit, CliError> {
    // No logging set up: stdout is the output, and nothing here is worth a log line.
    let config = Config::load(config_path)?;
    let filter = HistoryFilter {
        user: user.filter(|u| !u.trim().is_empty()),
        since: since
            .as_deref()
            .map(|s| parse_since(s, Utc::now()))
            .transpose()
            .map_err(CliError::config)?,
        op: op
            .as_deref()
            .map(parse_op)
            .transpose()
            .map_err(CliError::config)?,
        limit: None,
    };
    let Some(store) = Store::open_read_only(&config.sync.state_path).map_err(CliError::failed)?
    else {
        eprintln!(
            "No state database at {} yet: nothing has been written to Postman. Check [sync] state_path, or run `okta-postman-sync reconcile` first.",
            config.sync.state_path.display()
        );
        print_entries(&[], output);
        return Ok(Exit::Ok);
    };
    let entries = store.history(&filter).map_err(CliError::failed)?;
    print_entries(&entries, output);
    Ok(Exit::Ok)
}

fn print_entries(entries: &[HistoryEntry], output: HistoryFormat) {
    match output {
        HistoryFormat::Json => print_json(&entries),
        HistoryFormat::Jsonl => {
            for e in entries {
                match serde_json::to_string(e) {
                    Ok(line) => println!("{line}"),
                    Err(err) => eprintln!("error: cannot encode history entry {}: {err}", e.id),
                }
            }
        }
        HistoryFormat::Text if entries.is_empty() => println!("No matching history entries."),
        HistoryFormat::Text => print!("{}", render(entries)),
    }
}

/// The entries as a table, oldest first (shared with `why`).
pub(super) fn render(entries: &[HistoryEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let why = match (&e.error, &e.reason) {
                (Some(err), Some(r)) => format!("{r}; error: {err}"),
                (Some(err), None) => format!("error: {err}"),
                (None, Some(r)) => r.clone(),
                (None, None) => String::new(),
            };
            vec![
                e.time.clone(),
                e.run_id.clone(),
                e.trigger.clone(),
                e.op.clone(),
                format!("{} ({})", e.subject, e.okta_id),
                e.result.clone(),
                why,
            ]
        })
        .collect();
    table(
        &[
            "TIME", "RUN", "TRIGGER", "OP", "SUBJECT", "RESULT", "REASON",
        ],
        &rows,
    )
}

/// `--since`: an RFC 3339 time, or a duration back from `now` ("7d", "12h").
fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("--since {s:?} is neither a duration like \"7d\" or \"12h\" ({e}) nor an RFC 3339 time like 2026-01-31T00:00:00Z")
    })?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            format!("--since {s:?} reaches back further than dates go; use a shorter duration")
        })
}

/// `--op`: one of the operation kinds the journal records.
fn parse_op(s: &str) -> Result<OpKind, String> {
    OpKind::parse(s.trim()).ok_or_else(|| {
        let kinds: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
        format!(
            "--op {s:?} is not an operation kind; use one of {}",
            kinds.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time_and_says_what_it_wants_otherwise() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("2d", now).expect("duration").to_rfc3339(),
            "2026-11-26T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now)
                .expect("time")
                .to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        let e = parse_since("yesterday", now).expect_err("refused");
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse_since("100000000000y", now).is_err());
        assert!(parse_op("group_add_members").is_ok());
        assert!(parse_op("delete")
            .expect_err("refused")
            .contains("deactivate"));
    }
}
