//! Stage 4b: one self-contained HTML report — inline SVG plots (plotters' SVG backend), no
//! scripts, no external assets, readable offline. The headline period (the coarsest
//! granularity requested) gets the paper's figures; every period gets its tables.
//!
//! Here: the page and its tables; `figures` draws the paper's figures with `charts`.
use std::fmt::Write as _;

use plotters::drawing::DrawingAreaErrorKind;

use crate::{
    accounting::OUTCOMES,
    report::{AccountingTables, Analysis, Count, Header, PeriodReport, Share},
};

mod charts;
mod figures;

/// What plotters reports when a chart cannot be drawn (its SVG backend writes to a string).
pub type PlotError = DrawingAreaErrorKind<std::io::Error>;

/// A chart of the report could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("HTML report: cannot draw the chart {chart:?}")]
pub struct HtmlError {
    /// The chart's title.
    pub chart: String,
    /// plotters' error.
    #[source]
    pub source: PlotError,
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
    out.push_str("<!doctype html><html lang=en><head><meta charset=utf-8><title>pyusage report</title><style>\
        body{font-family:sans-serif;margin:2em;max-width:1200px}figure{margin:1em 0}\
        figcaption{color:#555;font-size:90%}table{border-collapse:collapse;margin:.5em 1em .5em 0;display:inline-table;vertical-align:top}\
        td,th{border:1px solid #ccc;padding:2px 6px;font-size:85%}caption{font-weight:bold;text-align:left}\
        dt{font-weight:bold}details{margin:.3em 0}</style></head><body>");
    header(&mut out, &a.header);
    let order = ["all", "year", "quarter", "month"];
    let headline = order
        .iter()
        .find_map(|g| a.periods.get(*g).map(|r| (*g, r)));
    if let Some((g, reports)) = headline {
        for r in reports {
            let _ = write!(out, "<h2>Figures — {} ({g})</h2>", esc(&r.period));
            let subtitle = format!(
                "Period {} · {} records · filters as above",
                r.period, r.rows
            );
            figures::figures(&mut out, r, &subtitle)?;
        }
    }
    for g in order {
        let Some(reports) = a.periods.get(g) else {
            continue;
        };
        let _ = write!(out, "<h2>Tables by {g}</h2>");
        for r in reports {
            let _ = write!(
                out,
                "<details><summary>{} — {} records</summary>",
                esc(&r.period),
                r.rows
            );
            tables(&mut out, r);
            out.push_str("</details>");
        }
    }
    out.push_str("</body></html>\n");
    Ok(out)
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
    if let Some(a) = &r.accounting {
        accounting_tables(out, a);
    }
    out.push_str("</div>");
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
