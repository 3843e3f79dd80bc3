//! Stage 4b: one self-contained HTML report, a dashboard readable offline — no server, no
//! network, no external assets. The analysis is embedded once as JSON (`data`); a small
//! inline script (`dashboard.js`, no framework) draws every figure and table of the period
//! picked, and a package's panel, as inline SVG and DOM text. The page's state is its URL
//! fragment (`#period=2026-03&package=numpy`): links can be shared, and the end-to-end test
//! drives a headless browser with it.
//!
//! Without scripts the page still shows the headline granularity (the coarsest requested):
//! the paper's figures drawn here (plotters' SVG backend) and its tables, which the script
//! replaces. Here: the page and those tables; `figures` draws the figures with `charts`;
//! `data` writes the embedded JSON.
use std::fmt::Write as _;

use plotters::drawing::DrawingAreaErrorKind;

use crate::{
    accounting::OUTCOMES,
    report::{AccountingTables, Analysis, Count, Header, PeriodReport, Share},
};

mod charts;
mod data;
mod figures;

/// The dashboard's style and script, inlined in the page.
const CSS: &str = include_str!("html/dashboard.css");
const JS: &str = include_str!("html/dashboard.js");

/// Granularities, coarsest first: the headline is the first requested.
const ORDER: [&str; 4] = ["all", "year", "quarter", "month"];

/// What plotters reports when a chart cannot be drawn (its SVG backend writes to a string).
pub type PlotError = DrawingAreaErrorKind<std::io::Error>;

/// The HTML report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// A chart of the static part could not be drawn.
    #[error("HTML report: cannot draw the chart {chart:?}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// plotters' error.
        #[source]
        source: PlotError,
    },
    /// The analysis could not be serialised for the dashboard.
    #[error("HTML report: cannot embed the data")]
    Data(#[from] serde_json::Error),
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Renders the report.
pub fn render(a: &Analysis) -> Result<String, HtmlError> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\"><title>pyusage report</title>\
         <style>{CSS}</style></head><body>"
    );
    header(&mut out, &a.header);
    controls(&mut out, a);
    out.push_str("<main id=dash aria-live=polite></main><div id=static>");
    let headline = ORDER
        .iter()
        .find_map(|g| a.periods.get(*g).map(|r| (*g, r)));
    if let Some((g, reports)) = headline {
        out.push_str(
            "<p class=note>Without JavaScript this page shows the headline periods only; \
             report.json and the CSV files hold every period.</p>",
        );
        for r in reports {
            let _ = write!(out, "<h2>Figures — {} ({g})</h2>", esc(&r.period));
            let subtitle = format!(
                "Period {} · {} records · filters as above",
                r.period, r.rows
            );
            figures::figures(&mut out, r, &subtitle)?;
        }
        let _ = write!(out, "<h2>Tables by {g}</h2>");
        for r in reports {
            let _ = write!(
                out,
                "<details open><summary>{} — {} records</summary>",
                esc(&r.period),
                r.rows
            );
            tables(&mut out, r);
            out.push_str("</details>");
        }
    }
    let _ = writeln!(
        out,
        "</div><script type=\"application/json\" id=data>{}</script><script>{JS}</script>\
         </body></html>",
        data::embedded(a)?
    );
    Ok(out)
}

/// The period picker (every period, grouped by granularity, the headline's first selected)
/// and the package search (its names offered by a datalist the script fills); hidden until
/// the script runs.
fn controls(out: &mut String, a: &Analysis) {
    out.push_str(
        "<form id=controls hidden role=search><label for=period>Period</label> <select id=period>",
    );
    for g in ORDER {
        let Some(reports) = a.periods.get(g) else {
            continue;
        };
        let _ = write!(out, "<optgroup label={g}>");
        for r in reports {
            let p = esc(&r.period);
            let _ = write!(out, "<option value=\"{p}\">{p}</option>");
        }
        out.push_str("</optgroup>");
    }
    out.push_str(
        "</select> <label for=package>Package</label> \
         <input id=package list=packages autocomplete=off placeholder=\"e.g. numpy\"> \
         <button type=submit>Show</button> <button type=button id=clear>Clear</button>\
         <datalist id=packages></datalist></form>",
    );
}

/// What was analysed and how, as a definition list.
fn header(out: &mut String, h: &Header) {
    out.push_str("<h1>Python package usage</h1><dl>");
    let range = format!(
        "{} to {}",
        h.dates.0.as_deref().unwrap_or("first record"),
        h.dates.1.as_deref().unwrap_or("last record")
    );
    for (k, v) in [
        ("Dataset", h.dataset.display().to_string()),
        ("Records kept", h.rows.to_string()),
        ("Dates", range),
        ("Computed on", h.backend.clone()),
    ] {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    for (k, v) in &h.filters {
        let _ = write!(
            out,
            "<dt>Filter: {}</dt><dd><code>{}</code></dd>",
            esc(k),
            esc(v)
        );
    }
    out.push_str("</dl>");
}

fn counts_table(out: &mut String, title: &str, what: &str, list: &[Count]) {
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr><th>#</th><th>package</th><th>{}</th></tr>",
        esc(title),
        esc(what)
    );
    for (i, c) in list.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            esc(&c.package),
            c.count
        );
    }
    out.push_str("</table>");
}

fn share_table(out: &mut String, title: &str, key: &str, list: &[Share]) {
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr><th>{}</th><th>count</th><th>of</th><th>share</th></tr>",
        esc(title),
        esc(key)
    );
    for s in list {
        let pct = s
            .share
            .map(|x| format!("{:.1} %", x * 100.0))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{pct}</td></tr>",
            esc(&s.key),
            s.count,
            s.of
        );
    }
    out.push_str("</table>");
}

fn tables(out: &mut String, r: &PeriodReport) {
    out.push_str("<div class=tables>");
    counts_table(
        out,
        "Top packages by users",
        "users",
        &r.top_packages_by_user,
    );
    counts_table(out, "Top packages by jobs", "jobs", &r.top_packages_by_job);
    counts_table(
        out,
        "Top packages by processes",
        "processes",
        &r.top_packages_by_process,
    );
    share_table(out, "Environment kinds (processes)", "kind", &r.env_kinds);
    share_table(
        out,
        "BLAS among numpy/scipy jobs",
        "BLAS",
        &r.blas_in_numpy_jobs,
    );
    share_table(out, "Processes ended by a signal", "package", &r.signaled);
    for (p, v) in &r.versions {
        share_table(out, &format!("Versions of {p} (users)"), "version", v);
    }
    sampled_tables(out, r);
    if let Some(a) = &r.accounting {
        accounting_tables(out, a);
    }
    out.push_str("</div>");
}

/// A table of text cells (escaped here) under `heads`.
fn text_table(out: &mut String, caption: &str, heads: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(out, "<table><caption>{}</caption><tr>", esc(caption));
    for h in heads {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// The sampled CPU: by package, imported but not on the CPU, and each package's callers.
fn sampled_tables(out: &mut String, r: &PeriodReport) {
    let pct = |x: Option<f64>| x.map(|x| format!("{:.1} %", x * 100.0)).unwrap_or_default();
    if !r.sampled_cpu_by_package.is_empty() {
        let s = &r.sampled_cpu;
        let caption = format!(
            "Sampled CPU by package ({} sampled processes, {} samples)",
            s.processes, s.samples
        );
        let heads = [
            "package",
            "processes",
            "jobs",
            "self samples",
            "inclusive samples",
            "self",
            "inclusive",
            "CPU-hours (self)",
        ];
        let rows = r.sampled_cpu_by_package.iter().map(|c| {
            vec![
                c.package.clone(),
                c.processes.to_string(),
                c.jobs.to_string(),
                c.self_samples.to_string(),
                c.inclusive_samples.to_string(),
                pct(c.self_share),
                pct(c.inclusive_share),
                format!("{:.1}", c.cpu_hours_self),
            ]
        });
        text_table(out, &caption, &heads, rows.collect());
    }
    if !r.imported_not_on_cpu.is_empty() {
        let rows = r.imported_not_on_cpu.iter().map(|c| {
            let (jobs, on) = (c.jobs.to_string(), c.jobs_on_cpu.to_string());
            vec![c.package.clone(), jobs, on, pct(c.share_never_on_cpu)]
        });
        text_table(
            out,
            "Imported but never on the CPU (jobs with a sampled process)",
            &["package", "jobs", "on the CPU", "never on the CPU"],
            rows.collect(),
        );
    }
    for (p, v) in &r.package_callers {
        let title = format!("Callers of {p} (its self samples)");
        share_table(out, &title, "caller", v);
    }
}

/// `--jobs`: node-hours and outcomes by package and by account.
fn accounting_tables(out: &mut String, a: &AccountingTables) {
    let outcome_cells = |shares: &[Share]| -> String {
        OUTCOMES
            .iter()
            .map(|o| {
                let n = shares.iter().find(|s| s.key == *o).map_or(0, |s| s.count);
                format!("<td>{n}</td>")
            })
            .collect()
    };
    let head: String = OUTCOMES
        .iter()
        .map(|o| format!("<th>{}</th>", esc(&o.to_lowercase())))
        .collect();
    let _ = write!(
        out,
        "<table><caption>Node-hours by package, with job outcomes (scheduler accounting;          {} jobs not in it)</caption><tr><th>package</th><th>jobs</th><th>node-hours</th>{head}</tr>",
        a.jobs_without_accounting
    );
    for n in &a.node_hours_by_package {
        let shares = a
            .outcomes_by_package
            .get(&n.package)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td>{}</tr>",
            esc(&n.package),
            n.jobs,
            n.node_hours,
            outcome_cells(shares)
        );
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        "<table><caption>Accounts by node-hours of their Python jobs</caption>\
         <tr><th>account</th><th>jobs</th><th>node-hours</th>{head}</tr>"
    );
    for r in &a.by_account {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td>{}</tr>",
            esc(&r.account),
            r.jobs,
            r.node_hours,
            outcome_cells(&r.outcomes)
        );
    }
    out.push_str("</table>");
}
