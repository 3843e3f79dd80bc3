//! The paper's figures from one period's tables, each an SVG chart in a `<figure>`.
use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    charts::{bars, heatmap, lines},
    esc, HtmlError,
};
use crate::report::{Correlation, Count, PeriodReport};

/// Every figure of `r`, in the paper's order, captioned with `subtitle`.
pub(super) fn figures(out: &mut String, r: &PeriodReport, subtitle: &str) -> Result<(), HtmlError> {
    figure(out, &top_by_user(r)?, subtitle);
    figure(out, &job_sizes(r)?, subtitle);
    figure(out, &package_by_job_size(r)?, subtitle);
    let c = &r.correlation;
    figure(
        out,
        &correlation(c)?,
        &format!("{subtitle}; {} jobs", c.jobs),
    );
    for (p, list) in &r.correlation_slices {
        figure(out, &correlation_slice(p, list)?, subtitle);
    }
    if let Some(svg) = monthly_users(r)? {
        figure(out, &svg, subtitle);
    }
    if !r.sampled_cpu_by_package.is_empty() {
        let s = &r.sampled_cpu;
        let caption = format!(
            "{subtitle}; {} sampled processes, {:.1} CPU-hours sampled",
            s.processes, s.cpu_hours
        );
        figure(out, &sampled_cpu(r)?, &caption);
    }
    Ok(())
}

/// The top packages by sampled self CPU-hours.
fn sampled_cpu(r: &PeriodReport) -> Result<String, HtmlError> {
    let items: Vec<(String, f64)> = r
        .sampled_cpu_by_package
        .iter()
        .map(|c| (c.package.clone(), c.cpu_hours_self))
        .collect();
    bars(
        "Sampled CPU-hours by package (self)",
        "Package",
        "CPU-hours (self)",
        &items,
        false,
    )
}

fn figure(out: &mut String, svg: &str, caption: &str) {
    let _ = write!(
        out,
        "<figure>{svg}<figcaption>{}</figcaption></figure>",
        esc(caption)
    );
}

/// The distinct values, sorted.
fn distinct<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A node bin by its node counts: `1`, `2`, then `3-4`, `5-8`, ….
fn bin_label(n: u32) -> String {
    if n <= 2 {
        n.to_string()
    } else {
        format!("{}-{}", n / 2 + 1, n)
    }
}

/// Fig. 3.
fn top_by_user(r: &PeriodReport) -> Result<String, HtmlError> {
    let items: Vec<(String, f64)> = r
        .top_packages_by_user
        .iter()
        .map(|c: &Count| (c.package.clone(), c.count as f64))
        .collect();
    bars(
        "Top packages, de-duplicated by user (fig. 3)",
        "Package",
        "Users",
        &items,
        false,
    )
}

/// Fig. 4: jobs by node count, in power-of-two bins, log scale.
fn job_sizes(r: &PeriodReport) -> Result<String, HtmlError> {
    let mut bins = BTreeMap::new();
    for (&n, &c) in &r.job_sizes {
        *bins.entry(n.max(1).next_power_of_two()).or_insert(0u64) += c;
    }
    let sizes: Vec<(String, f64)> = bins
        .iter()
        .map(|(&n, &c)| (bin_label(n), c as f64))
        .collect();
    bars(
        "Job sizes of batch jobs using Python (fig. 4)",
        "Nodes",
        "Jobs",
        &sizes,
        true,
    )
}

/// Fig. 5: the top packages by job × node bins, log-coloured.
fn package_by_job_size(r: &PeriodReport) -> Result<String, HtmlError> {
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
    let value = |row: usize, col: usize| {
        r.package_by_job_size
            .get(&pk[row])
            .and_then(|m| m.get(&all_bins[col]))
            .map(|&c| (c as f64).ln())
    };
    heatmap(
        "Package × job size, jobs (fig. 5)",
        &pk,
        &cols,
        &value,
        (0.0, (max as f64).ln()),
        &|v| format!("{:.0}", v.exp()),
    )
}

/// Fig. 6: rows numbered and named, columns numbered.
fn correlation(c: &Correlation) -> Result<String, HtmlError> {
    let value = |row: usize, col: usize| c.matrix[row][col];
    let numbered: Vec<String> = c
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} {p}", i + 1))
        .collect();
    let numbers: Vec<String> = (1..=c.packages.len()).map(|i| i.to_string()).collect();
    heatmap(
        &format!(
            "Pearson correlation of packages within jobs, clipped to {}–{} (fig. 6)",
            c.clip_view[0], c.clip_view[1]
        ),
        &numbered,
        &numbers,
        &value,
        (c.clip_view[0], c.clip_view[1]),
        &|v| format!("{v:.2}"),
    )
}

/// Fig. 7: the 15 packages most correlated with `p`.
fn correlation_slice(p: &str, list: &[(String, f64)]) -> Result<String, HtmlError> {
    let items: Vec<(String, f64)> = list.iter().take(15).cloned().collect();
    bars(
        &format!("Correlation with {p} (fig. 7)"),
        "Package",
        "Pearson r",
        &items,
        false,
    )
}

/// Users per month of the top 8 packages; none for a period of one month.
fn monthly_users(r: &PeriodReport) -> Result<Option<String>, HtmlError> {
    let months = distinct(r.monthly_users.values().flat_map(|x| x.keys().cloned()));
    if months.len() <= 1 {
        return Ok(None);
    }
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
    lines(
        "Users per month of the top packages",
        "Users",
        &months,
        &series,
    )
    .map(Some)
}
