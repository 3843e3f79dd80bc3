//! Stage 3b: the comparison as one self-contained HTML page in the analysis report's style
//! (no scripts, no external assets): the counts, the reasons with examples, both rankings
//! side by side with rank changes, and the monthly series as an inline SVG chart.
use std::fmt::Write as _;

use pyusage_analysis::html::esc;

use crate::report::{Comparison, RankRow, Reason, Series};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1200px}\
    table{border-collapse:collapse;margin:.5em 1em .5em 0;display:inline-table;vertical-align:top}\
    td,th{border:1px solid #ccc;padding:2px 6px;font-size:85%}caption{font-weight:bold;text-align:left}\
    td.n{text-align:right}.up{color:#070}.down{color:#b00}small{color:#555}";

fn reasons(out: &mut String, title: &str, list: &[Reason]) {
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr><th>count</th><th>reason</th><th>examples</th></tr>",
        esc(title)
    );
    for r in list {
        let ex: Vec<String> = r.examples.iter().map(|e| esc(e)).collect();
        let _ = write!(
            out,
            "<tr><td class=n>{}</td><td>{}</td><td><small>{}</small></td></tr>",
            r.count,
            esc(&r.words),
            ex.join("<br>")
        );
    }
    if list.is_empty() {
        out.push_str("<tr><td colspan=3>none</td></tr>");
    }
    out.push_str("</table>");
}

fn ranking(out: &mut String, title: &str, rows: &[RankRow], pct: bool) {
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr><th>package</th><th>kernel rank</th><th>value</th>\
         <th>atexit rank</th><th>value</th><th>change</th></tr>",
        esc(title)
    );
    let v = |x: f64| RankRow::value_text(x, pct);
    let r_ = |r: Option<usize>| r.map_or("–".into(), |r| r.to_string());
    for r in rows {
        let change = match r.change {
            Some(c) if c > 0 => format!("<span class=up>+{c}</span>"),
            Some(c) if c < 0 => format!("<span class=down>{c}</span>"),
            Some(_) => "0".into(),
            None => "only one side".into(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{change}</td></tr>",
            esc(&r.package),
            r_(r.kernel_rank),
            v(r.kernel),
            r_(r.atexit_rank),
            v(r.atexit)
        );
    }
    out.push_str("</table>");
}

/// A small multiple per package: kernel (blue, solid), atexit (red, dashed), stitched (grey,
/// wide), a dot per month (so a single month shows). Attributes quoted: an unquoted value
/// before `/>` would take the slash.
fn series_svg(out: &mut String, months: &[String], s: &Series, cutover: Option<&str>) {
    let (w, h, pad) = (260.0, 110.0, 18.0);
    let max = s
        .kernel
        .iter()
        .chain(&s.atexit)
        .chain(&s.stitched)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    // One month sits in the middle.
    let n = months.len().saturating_sub(1) as f64;
    let x = |i: usize| {
        if n == 0.0 {
            w / 2.0
        } else {
            pad + (w - 2.0 * pad) * i as f64 / n
        }
    };
    // Below the title.
    let y = |v: u64| h - pad - (h - pad - 24.0) * v as f64 / max;
    let line = |vals: &[u64], colour: &str, style: &str| {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let mut svg = format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" {style} points=\"{}\"/>",
            pts.join(" ")
        );
        for (i, v) in vals.iter().enumerate() {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                x(i),
                y(*v)
            );
        }
        svg
    };
    let _ = write!(
        out,
        "<figure style=\"display:inline-block;margin:.3em\"><svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"users per month of {p}\">\
         <rect x=\"0.5\" y=\"0.5\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"#ccc\"/>\
         <line x1=\"{pad}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>",
        w - 1.0,
        h - 1.0,
        w - pad,
        h - pad,
        h - pad,
        p = esc(&s.package)
    );
    if !s.stitched.is_empty() {
        out.push_str(&line(&s.stitched, "#bbb", "stroke-width=\"6\""));
    }
    out.push_str(&line(&s.kernel, "#1f77b4", "stroke-width=\"2\""));
    out.push_str(&line(
        &s.atexit,
        "#d62728",
        "stroke-width=\"2\" stroke-dasharray=\"4,3\"",
    ));
    if let Some(i) = cutover.and_then(|c| months.iter().position(|m| m.as_str() >= c)) {
        let _ = write!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{pad}\" y2=\"{1:.1}\" stroke=\"#888\" \
             stroke-dasharray=\"2,2\"/>",
            x(i),
            h - pad
        );
    }
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"13\" font-size=\"11\">{} (max {max} users)</text></svg>\
         <figcaption><small>{} … {}; kernel/atexit {}</small></figcaption></figure>",
        esc(&s.package),
        esc(months.first().map_or("", |m| m)),
        esc(months.last().map_or("", |m| m)),
        s.overlap_ratio.map_or("–".into(), |r| format!("{r:.2}"))
    );
}

/// Renders the page.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>pyusage compare</title>\
         <style>{STYLE}</style></head><body><h1>Kernel vs atexit</h1>\
         <p>Kernel side: <code>{}</code><br>Atexit side: <code>{}</code><br>\
         Processes matched by host, pid and start time within {} s.</p>",
        esc(&c.kernel_data),
        esc(&c.atexit_data),
        c.skew_s
    );
    let p = &c.processes;
    let j = &c.jobs;
    let _ = write!(
        out,
        "<table><caption>Processes</caption><tr><th>kernel</th><th>atexit</th><th>both</th>\
         <th>kernel only</th><th>atexit only</th></tr><tr><td class=n>{}</td><td class=n>{}</td>\
         <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr></table>\
         <table><caption>Jobs</caption><tr><th>kernel</th><th>atexit</th><th>both</th>\
         <th>kernel only</th><th>atexit only</th><th>kernel saw more</th><th>hook saw more</th></tr>\
         <tr><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
         <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr></table>",
        p.kernel,
        p.atexit,
        p.matched,
        p.kernel_only,
        p.atexit_only,
        j.kernel,
        j.atexit,
        j.both,
        j.kernel_only,
        j.atexit_only,
        j.kernel_saw_more,
        j.atexit_saw_more
    );
    out.push_str("<h2>What the atexit method missed</h2>");
    reasons(
        &mut out,
        "Processes the hook did not report",
        &c.kernel_only,
    );
    reasons(&mut out, "Processes only the hook reported", &c.atexit_only);
    reasons(
        &mut out,
        "Packages of processes both saw, on one side only",
        &c.package_gaps,
    );
    reasons(
        &mut out,
        "Packages the hook never reported (examples: packages)",
        &c.never_on_atexit_side,
    );
    reasons(
        &mut out,
        "Packages only the hook reported (examples: packages)",
        &c.never_on_kernel_side,
    );
    out.push_str("<h2>Bias of the old rankings</h2>");
    out.push_str(
        "<p><small>Change = atexit rank − kernel rank: how many places lower (+) or higher (−) \
         the atexit method ranked the package. Ties share a rank.</small></p>",
    );
    ranking(&mut out, "Top packages by users", &c.ranking_users, false);
    ranking(
        &mut out,
        "Top packages by share of jobs",
        &c.ranking_job_share,
        true,
    );
    let m = &c.monthly;
    if !m.series.is_empty() {
        let _ = write!(
            out,
            "<h2>Users per month</h2><p><small>Blue: kernel; red dashed: atexit{}.</small></p>",
            m.cutover.as_ref().map_or(String::new(), |c| format!(
                "; grey: the series stitched at {}",
                esc(c)
            ))
        );
        for s in &m.series {
            series_svg(&mut out, &m.months, s, m.cutover.as_deref());
        }
    }
    out.push_str(
        "<h2>Every package</h2><table><tr><th>package</th><th>kernel users</th><th>jobs</th>\
        <th>processes</th><th>atexit users</th><th>jobs</th><th>processes</th></tr>",
    );
    for r in &c.packages {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&r.package),
            r.kernel.users,
            r.kernel.jobs,
            r.kernel.processes,
            r.atexit.users,
            r.atexit.jobs,
            r.atexit.processes
        );
    }
    let h = &c.hook_health;
    let _ = write!(
        out,
        "</table><p>Hook health: {} processes with errors ({} errors), {} reports cut at the \
         time budget, {} spool records dropped as forged (another user than the file's owner), {} bad spool lines skipped.</p>",
        h.processes_with_errors, h.errors, h.budget_exceeded, h.forged_records, h.bad_lines
    );
    for u in &c.unreadable {
        let _ = write!(out, "<p>Unreadable: {}</p>", esc(u));
    }
    out.push_str("</body></html>\n");
    out
}
