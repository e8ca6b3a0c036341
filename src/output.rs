//! Human-readable renderings of run reports (the JSON form is the serde shape of the report).
//! Pure string building: nothing here decides or does I/O.

use crate::sync::{OpReport, RunReport};

/// Formats rows as left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(widths[i].saturating_sub(c.chars().count()) + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn op_rows(ops: &[OpReport]) -> Vec<Vec<String>> {
    ops.iter()
        .map(|o| {
            vec![
                o.op.to_string(),
                o.user_name.clone(),
                o.status.to_string(),
                match &o.error {
                    Some(e) => format!("{} ({})", e, o.reason),
                    None => o.reason.clone(),
                },
            ]
        })
        .collect()
}

/// The text form of a reconcile report.
pub fn render_run(r: &RunReport) -> String {
    let mut out = String::new();
    let mode = match (r.full, r.dry_run) {
        (true, true) => "full run, DRY RUN: nothing was changed",
        (false, true) => "incremental run, DRY RUN: nothing was changed",
        (true, false) => "full run",
        (false, false) => "incremental run",
    };
    out.push_str(&format!("Run {} ({mode})\n\n", r.run_id));
    if r.operations.is_empty() {
        out.push_str("No changes: Postman already matches Okta.\n");
    } else {
        out.push_str(&table(
            &["OP", "USER", "STATUS", "WHY"],
            &op_rows(&r.operations),
        ));
    }
    if !r.withheld.is_empty() {
        out.push_str(&format!(
            "\nWithheld deactivations ({}): the Okta read was incomplete, so nobody is deactivated this run:\n",
            r.withheld.len()
        ));
        out.push_str(&table(
            &["OP", "USER", "STATUS", "WHY"],
            &op_rows(&r.withheld),
        ));
    }
    if !r.deferred.is_empty() {
        out.push_str(&format!(
            "\nDeferred, quarantined users ({}):\n",
            r.deferred.len()
        ));
        out.push_str(&table(
            &["OP", "USER", "STATUS", "WHY"],
            &op_rows(&r.deferred),
        ));
    }
    if !r.left_alone.is_empty() {
        out.push_str(&format!(
            "\nGroups no longer pushed, left in Postman ({}; set [groups] delete_removed = true to delete them):\n",
            r.left_alone.len()
        ));
        out.push_str(&table(
            &["OP", "GROUP", "STATUS", "WHY"],
            &op_rows(&r.left_alone),
        ));
    }
    if !r.skipped_okta_users.is_empty() {
        out.push_str("\nOkta users that could not be mapped (left alone):\n");
        for s in &r.skipped_okta_users {
            out.push_str(&format!("  {s}\n"));
        }
    }
    if let Some(refusal) = &r.refusal {
        out.push_str(&format!("\nREFUSED: {refusal}\n"));
    }
    if !r.errors.is_empty() {
        out.push_str("\nErrors:\n");
        for e in &r.errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    let c = &r.counts;
    out.push_str(&format!(
        "\n{}: {} create, {} update, {} deactivate, {} reactivate, {} adopt, {} unchanged, {} failed",
        if r.dry_run { "Planned" } else { "Summary" },
        c.create,
        c.update,
        c.deactivate,
        c.reactivate,
        c.adopt,
        c.unchanged,
        c.failed
    ));
    if c.groups > 0 || c.unchanged_groups > 0 {
        out.push_str(&format!(
            "; {} group operations, {} groups unchanged",
            c.groups, c.unchanged_groups
        ));
    }
    if let Some(n) = r.unmanaged_members {
        out.push_str(&format!("; {n} unmanaged Postman members (never touched)"));
    }
    out.push_str(&format!(". Outcome: {}\n", r.outcome.as_str()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "B"], &[vec!["long-value".into(), "x".into()]]);
        assert_eq!(t, "A           B\nlong-value  x\n");
    }
}
