//! Stage 4b: one self-contained HTML report — inline SVG plots (plotters' SVG backend), no
//! scripts, no external assets, readable offline. The headline period (the coarsest
//! granularity requested) gets the paper's figures; every period gets its tables.
use std::fmt::Write as _;

use plotters::{
    coord::{ranged1d::SegmentValue, Shift},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::report::{Analysis, Count, PeriodReport, Share};

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Debug>(x: E) -> String {
    format!("plot: {x:?}")
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

fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Res<()>,
) -> Res<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        draw(&root)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

/// The category name of a segment (`names[i]`, first at the top for horizontal charts).
fn seg_label(names: &[String], v: &SegmentValue<usize>, flip: bool) -> String {
    match v {
        SegmentValue::CenterOf(i) if *i < names.len() => {
            names[if flip { names.len() - 1 - i } else { *i }].clone()
        }
        _ => String::new(),
    }
}

/// Horizontal bars, first item on top; `log` for heavy-tailed counts.
fn bars(title: &str, ydesc: &str, xdesc: &str, items: &[(String, f64)], log: bool) -> Res<String> {
    let n = items.len().max(1);
    let names: Vec<String> = items.iter().map(|x| x.0.clone()).collect();
    let max = items.iter().map(|x| x.1).fold(1e-9, f64::max);
    let min = items.iter().map(|x| x.1).fold(0.0, f64::min);
    let h = 90 + 22 * n as u32;
    svg(900, h, |root| {
        let mut b = ChartBuilder::on(root);
        b.caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(170);
        let y = |i: usize| SegmentValue::Exact(n - 1 - i);
        let y1 = |i: usize| SegmentValue::Exact(n - i);
        let fmt = |v: &SegmentValue<usize>| seg_label(&names, v, true);
        let color = BLUE.mix(0.7).filled();
        macro_rules! draw {
            ($c:expr, $lo:expr) => {{
                let mut c = $c;
                c.configure_mesh()
                    .disable_y_mesh()
                    .y_labels(n)
                    .y_label_formatter(&fmt)
                    .x_desc(xdesc)
                    .y_desc(ydesc)
                    .draw()
                    .map_err(e)?;
                c.draw_series(items.iter().enumerate().filter(|(_, x)| x.1 != 0.0).map(
                    |(i, x)| {
                        let mut r = Rectangle::new([($lo, y(i)), (x.1, y1(i))], color);
                        r.set_margin(3, 3, 0, 0);
                        r
                    },
                ))
                .map_err(e)?;
            }};
        }
        let segs = (0..n).into_segmented();
        if log {
            draw!(
                b.build_cartesian_2d((1.0..max * 2.0).log_scale(), segs)
                    .map_err(e)?,
                1.0
            );
        } else {
            let pad = (max - min) * 0.08;
            draw!(
                b.build_cartesian_2d(min - pad.min(-min)..max + pad, segs)
                    .map_err(e)?,
                0.0
            );
        }
        Ok(())
    })
}

/// A matrix of cells coloured by value (clipped to `range`), with the value written in each.
fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    value: &dyn Fn(usize, usize) -> Option<f64>,
    range: (f64, f64),
    text: &dyn Fn(f64) -> String,
) -> Res<String> {
    let (nr, nc) = (rows.len().max(1), cols.len().max(1));
    let cell = (700 / nc.max(nr)).clamp(16, 48) as u32;
    let w = 190 + cell * nc as u32 + 30;
    let h = 110 + cell * nr as u32;
    svg(w, h, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d((0..nc).into_segmented(), (0..nr).into_segmented())
            .map_err(e)?;
        c.configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&|v| seg_label(cols, v, false))
            .y_label_formatter(&|v| seg_label(rows, v, true))
            .x_label_style(("sans-serif", 11))
            .y_label_style(("sans-serif", 11))
            .draw()
            .map_err(e)?;
        let mut cells = Vec::new();
        for r in 0..rows.len() {
            for q in 0..cols.len() {
                cells.push((r, q, value(r, q)));
            }
        }
        let at = |q: usize, r: usize| {
            let y = nr - 1 - r;
            [
                (SegmentValue::Exact(q), SegmentValue::Exact(y)),
                (SegmentValue::Exact(q + 1), SegmentValue::Exact(y + 1)),
            ]
        };
        c.draw_series(cells.iter().map(|&(r, q, v)| {
            let color = match v {
                None => RGBColor(235, 235, 235),
                Some(v) => {
                    let t = ((v - range.0) / (range.1 - range.0)).clamp(0.0, 1.0);
                    RGBColor(255 - (t * 200.0) as u8, 255 - (t * 120.0) as u8, 255)
                }
            };
            Rectangle::new(at(q, r), color.filled())
        }))
        .map_err(e)?;
        if cell >= 26 {
            let style = TextStyle::from(("sans-serif", 10).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center));
            for &(r, q, v) in &cells {
                if let Some(v) = v {
                    let [lo, hi] = at(q, r);
                    let (x0, y0) = c.backend_coord(&lo);
                    let (x1, y1) = c.backend_coord(&hi);
                    root.draw_text(&text(v), &style, ((x0 + x1) / 2, (y0 + y1) / 2))
                        .map_err(e)?;
                }
            }
        }
        Ok(())
    })
}

/// One line per series over the same categories.
fn lines(title: &str, ydesc: &str, xs: &[String], series: &[(String, Vec<u64>)]) -> Res<String> {
    let n = xs.len().max(2);
    let max = series
        .iter()
        .flat_map(|s| s.1.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    svg(900, 420, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .right_y_label_area_size(10)
            .build_cartesian_2d(0..n - 1, 0u64..max + max / 10 + 1)
            .map_err(e)?;
        c.configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|i| xs.get(*i).cloned().unwrap_or_default())
            .x_desc("Month")
            .y_desc(ydesc)
            .draw()
            .map_err(e)?;
        for (k, (name, ys)) in series.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            c.draw_series(LineSeries::new(
                ys.iter().enumerate().map(|(i, &y)| (i, y)),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

/// The distinct values, sorted.
fn distinct<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
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
    out.push_str("</div>");
}

fn figures(out: &mut String, r: &PeriodReport, subtitle: &str) -> Res<()> {
    let fig = |out: &mut String, svg: String, caption: &str| {
        let _ = write!(
            out,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            esc(caption)
        );
    };
    let items = |l: &[Count]| {
        l.iter()
            .map(|c| (c.package.clone(), c.count as f64))
            .collect::<Vec<_>>()
    };
    fig(
        out,
        bars(
            "Top packages, de-duplicated by user (fig. 3)",
            "Package",
            "Users",
            &items(&r.top_packages_by_user),
            false,
        )?,
        subtitle,
    );
    let bin_label = |n: u32| {
        if n <= 2 {
            n.to_string()
        } else {
            format!("{}-{}", n / 2 + 1, n)
        }
    };
    let mut bins = std::collections::BTreeMap::new();
    for (&n, &c) in &r.job_sizes {
        *bins.entry(n.max(1).next_power_of_two()).or_insert(0u64) += c;
    }
    let sizes: Vec<(String, f64)> = bins
        .iter()
        .map(|(&n, &c)| (bin_label(n), c as f64))
        .collect();
    fig(
        out,
        bars(
            "Job sizes of batch jobs using Python (fig. 4)",
            "Nodes",
            "Jobs",
            &sizes,
            true,
        )?,
        subtitle,
    );
    // Fig. 5: the top packages by job × node bins, log-coloured.
    let pk: Vec<String> = r.correlation.packages.clone();
    let all_bins = distinct(
        r.package_by_job_size
            .values()
            .flat_map(|m| m.keys().copied()),
    );
    let cols: Vec<String> = all_bins.iter().map(|&n| bin_label(n)).collect();
    let max = r
        .package_by_job_size
        .values()
        .flat_map(|m| m.values())
        .copied()
        .max()
        .unwrap_or(1)
        .max(2);
    let v5 = |row: usize, col: usize| {
        r.package_by_job_size
            .get(&pk[row])
            .and_then(|m| m.get(&all_bins[col]))
            .map(|&c| (c as f64).ln())
    };
    fig(
        out,
        heatmap(
            "Package × job size, jobs (fig. 5)",
            &pk,
            &cols,
            &v5,
            (0.0, (max as f64).ln()),
            &|v| format!("{:.0}", v.exp()),
        )?,
        subtitle,
    );
    let c = &r.correlation;
    let v6 = |row: usize, col: usize| c.matrix[row][col];
    let numbered: Vec<String> = c
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} {p}", i + 1))
        .collect();
    let numbers: Vec<String> = (1..=c.packages.len()).map(|i| i.to_string()).collect();
    fig(
        out,
        heatmap(
            &format!(
                "Pearson correlation of packages within jobs, clipped to {}–{} (fig. 6)",
                c.clip_view[0], c.clip_view[1]
            ),
            &numbered,
            &numbers,
            &v6,
            (c.clip_view[0], c.clip_view[1]),
            &|v| format!("{v:.2}"),
        )?,
        &format!("{subtitle}; {} jobs", c.jobs),
    );
    for (p, list) in &r.correlation_slices {
        let items: Vec<(String, f64)> = list.iter().take(15).cloned().collect();
        fig(
            out,
            bars(
                &format!("Correlation with {p} (fig. 7)"),
                "Package",
                "Pearson r",
                &items,
                false,
            )?,
            subtitle,
        );
    }
    let months = distinct(r.monthly_users.values().flat_map(|x| x.keys().cloned()));
    if months.len() > 1 {
        let series: Vec<(String, Vec<u64>)> = r
            .top_packages_by_user
            .iter()
            .take(8)
            .map(|c| {
                (
                    c.package.clone(),
                    months
                        .iter()
                        .map(|m| r.monthly_users[&c.package].get(m).copied().unwrap_or(0))
                        .collect(),
                )
            })
            .collect();
        fig(
            out,
            lines(
                "Users per month of the top packages",
                "Users",
                &months,
                &series,
            )?,
            subtitle,
        );
    }
    Ok(())
}

/// Renders the report.
pub fn render(a: &Analysis) -> Result<String, String> {
    let mut out = String::new();
    out.push_str("<!doctype html><html lang=en><head><meta charset=utf-8><title>pyusage report</title><style>\
        body{font-family:sans-serif;margin:2em;max-width:1200px}figure{margin:1em 0}\
        figcaption{color:#555;font-size:90%}table{border-collapse:collapse;margin:.5em 1em .5em 0;display:inline-table;vertical-align:top}\
        td,th{border:1px solid #ccc;padding:2px 6px;font-size:85%}caption{font-weight:bold;text-align:left}\
        dt{font-weight:bold}details{margin:.3em 0}</style></head><body>");
    out.push_str("<h1>Python package usage</h1><dl>");
    let h = &a.header;
    let range = format!(
        "{} to {}",
        h.range.0.as_deref().unwrap_or("first record"),
        h.range.1.as_deref().unwrap_or("last record")
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
            figures(&mut out, r, &subtitle)?;
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
