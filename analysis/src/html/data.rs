//! The analysis as the dashboard's script reads it: `report.json`'s document, compact, with
//! the per-package tables that cover every package of every period (`package_by_job_size`,
//! `package_counts`) keyed by an index into one `names` list instead of by name: they hold
//! most of the bytes otherwise (thousands of packages × dozens of periods).
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::report::Analysis;

/// The embedded JSON text, safe inside `<script type="application/json">`: every `<` is
/// written `\u003c` (the same string to `JSON.parse`), so no package name can close the
/// element or open a comment.
pub(super) fn embedded(a: &Analysis) -> Result<String, serde_json::Error> {
    let mut doc = serde_json::to_value(a)?;
    let mut names = Names::default();
    if let Some(Value::Object(granularities)) = doc.get_mut("periods") {
        for period in granularities
            .values_mut()
            .filter_map(Value::as_array_mut)
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            compact_period(period, &mut names);
        }
    }
    if let Value::Object(m) = &mut doc {
        m.insert("names".into(), Value::from(names.list));
    }
    Ok(serde_json::to_string(&doc)?.replace('<', "\\u003c"))
}

/// Package names in order of first use; an index per name.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: BTreeMap<String, u64>,
}

impl Names {
    fn id(&mut self, name: &str) -> Value {
        let next = self.list.len() as u64;
        let id = *self.index.entry(name.to_owned()).or_insert_with(|| {
            self.list.push(name.to_owned());
            next
        });
        Value::from(id)
    }
}

/// `package_by_job_size`: `{name: {bin: jobs}}` → `[[id, bin, jobs, bin, jobs, …], …]`;
/// `package_counts`: `[{package, users, jobs, processes}]` → `[[id, users, jobs, processes]]`.
fn compact_period(period: &mut Map<String, Value>, names: &mut Names) {
    if let Some(Value::Object(by)) = period.remove("package_by_job_size") {
        let rows = by
            .into_iter()
            .map(|(package, bins)| {
                let mut row = vec![names.id(&package)];
                for (bin, jobs) in bins.as_object().into_iter().flatten() {
                    row.push(bin.parse::<u64>().map_or(Value::Null, Value::from));
                    row.push(jobs.clone());
                }
                Value::Array(row)
            })
            .collect();
        period.insert("package_by_job_size".into(), Value::Array(rows));
    }
    if let Some(Value::Array(counts)) = period.remove("package_counts") {
        let rows = counts
            .iter()
            .map(|c| {
                let field = |k: &str| c.get(k).cloned().unwrap_or(Value::from(0));
                let package = c.get("package").and_then(Value::as_str).unwrap_or("");
                Value::Array(vec![
                    names.id(package),
                    field("users"),
                    field("jobs"),
                    field("processes"),
                ])
            })
            .collect();
        period.insert("package_counts".into(), Value::Array(rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_indexed_and_cannot_close_the_script() {
        let mut period = serde_json::json!({
            "period": "all",
            "package_by_job_size": {"</script><b>": {"1": 5, "4": 2}, "numpy": {"2": 7}},
            "package_counts": [{"package": "numpy", "users": 3, "jobs": 4, "processes": 9}],
        });
        let mut names = Names::default();
        compact_period(period.as_object_mut().unwrap(), &mut names);
        assert_eq!(names.list, ["</script><b>", "numpy"]);
        assert_eq!(
            period["package_by_job_size"],
            serde_json::json!([[0, 1, 5, 4, 2], [1, 2, 7]])
        );
        assert_eq!(period["package_counts"], serde_json::json!([[1, 3, 4, 9]]));
        let text = serde_json::to_string(&period)
            .unwrap()
            .replace('<', "\\u003c");
        assert!(!text.contains('<'));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, period);
    }
}
