//! Stage 3a: the comparison as plain text tables for a terminal. Every user-controlled
//! string (paths, names, job ids) is passed through `safe` first: nothing in the data reaches
//! the terminal as a control sequence.
use std::fmt::Write as _;

use crate::report::{Comparison, RankRow, Reason};

fn reasons(out: &mut String, title: &str, list: &[Reason], safe: &dyn Fn(&str) -> String) {
    let _ = writeln!(out, "\n{title}");
    if list.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for r in list {
        let _ = writeln!(out, "  {:>8}  {}", r.count, safe(&r.words));
        for e in &r.examples {
            let _ = writeln!(out, "            e.g. {}", safe(e));
        }
    }
}

fn rank(out: &mut String, title: &str, rows: &[RankRow], pct: bool, safe: &dyn Fn(&str) -> String) {
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(
        out,
        "  {:<24} {:>6} {:>9} {:>6} {:>9} {:>7}",
        "package", "kernel", "value", "atexit", "value", "change"
    );
    let r_ = |r: Option<usize>| r.map_or("-".into(), |r| r.to_string());
    let v_ = |v: f64| RankRow::value_text(v, pct);
    for r in rows {
        let change = r.change.map_or("one side".into(), |c| format!("{c:+}"));
        let _ = writeln!(
            out,
            "  {:<24} {:>6} {:>9} {:>6} {:>9} {:>7}",
            safe(&r.package),
            r_(r.kernel_rank),
            v_(r.kernel),
            r_(r.atexit_rank),
            v_(r.atexit),
            change
        );
    }
}

/// Renders the comparison; `safe` escapes a user-controlled string for the terminal.
pub fn render(c: &Comparison, safe: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let p = &c.processes;
    let _ = writeln!(
        out,
        "kernel side: {}\natexit side: {}\nstart times matched within {} s",
        safe(&c.kernel_data),
        safe(&c.atexit_data),
        c.skew_s
    );
    let _ = writeln!(
        out,
        "\nprocesses: kernel {}, atexit {}, both {}, kernel only {}, atexit only {}",
        p.kernel, p.atexit, p.matched, p.kernel_only, p.atexit_only
    );
    let j = &c.jobs;
    let _ = writeln!(
        out,
        "jobs: kernel {}, atexit {}, both {}, kernel only {}, atexit only {}; of jobs on both, \
         the kernel saw more packages in {}, the hook in {}",
        j.kernel,
        j.atexit,
        j.both,
        j.kernel_only,
        j.atexit_only,
        j.kernel_saw_more,
        j.atexit_saw_more
    );
    reasons(
        &mut out,
        "Processes the hook did not report, by reason:",
        &c.kernel_only,
        safe,
    );
    reasons(
        &mut out,
        "Processes only the hook reported:",
        &c.atexit_only,
        safe,
    );
    reasons(
        &mut out,
        "Packages of processes both saw, on one side only (process-package pairs):",
        &c.package_gaps,
        safe,
    );
    reasons(
        &mut out,
        "Packages the hook never reported (examples: packages):",
        &c.never_on_atexit_side,
        safe,
    );
    reasons(
        &mut out,
        "Packages only the hook reported (examples: packages):",
        &c.never_on_kernel_side,
        safe,
    );
    rank(
        &mut out,
        "Top packages by users (the paper's ranking), each side:",
        &c.ranking_users,
        false,
        safe,
    );
    rank(
        &mut out,
        "Top packages by share of jobs, each side:",
        &c.ranking_job_share,
        true,
        safe,
    );
    let m = &c.monthly;
    if !m.series.is_empty() {
        let _ = writeln!(
            out,
            "\nUsers per month (kernel / atexit{}):",
            m.cutover
                .as_ref()
                .map_or(String::new(), |c| format!(" / stitched at {c}"))
        );
        let _ = writeln!(out, "  {:<24} {}", "package", m.months.join("  "));
        for s in &m.series {
            let cells: Vec<String> = (0..m.months.len())
                .map(|i| {
                    let mut cell = format!("{}/{}", s.kernel[i], s.atexit[i]);
                    if let Some(x) = s.stitched.get(i) {
                        let _ = write!(cell, "/{x}");
                    }
                    cell
                })
                .collect();
            let _ = writeln!(out, "  {:<24} {}", safe(&s.package), cells.join("  "));
        }
    }
    let h = &c.hook_health;
    let _ = writeln!(
        out,
        "\nhook health: {} processes with errors ({} errors), {} reports cut at the time budget, {} records dropped as forged, {} bad spool lines skipped",
        h.processes_with_errors, h.errors, h.budget_exceeded, h.forged_records, h.bad_lines
    );
    for u in &c.unreadable {
        let _ = writeln!(out, "unreadable: {}", safe(u));
    }
    out
}
