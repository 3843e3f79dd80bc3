//! `report.html` as a dashboard in a real browser: Debian's chromium, headless, loads the page
//! written by `pyusage analyze`, from a URL fragment (`#period=…&package=…`) and by
//! interaction (picking a period, searching a package); the tables and the package panel it
//! shows are checked against `report.json`. A package named like markup stays text, and the
//! page references nothing outside itself.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::util::{bin, output_ok};

/// A package name a user can plant (a directory in their own venv's site-packages).
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Debian's chromium (`PYUSAGE_CHROMIUM` overrides; scripts/install-deps.sh installs it).
fn chromium() -> PathBuf {
    let c = std::env::var_os("PYUSAGE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        c.exists(),
        "{} missing: run scripts/install-deps.sh",
        c.display()
    );
    c
}

/// Runs headless chromium on `url` with `extra` flags, a profile of its own under `dir` and
/// a time limit; returns its stdout (the DOM with `--dump-dom`).
fn browse(dir: &Path, extra: &[&str], url: &str) -> String {
    let out = output_ok(
        Command::new("timeout")
            .arg("120")
            .arg(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(url),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `file://` URL of `path` with `fragment`, its values percent-encoded.
fn url(path: &Path, fragment: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let f: Vec<String> = fragment
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("file://{}#{}", path.display(), f.join("&"))
}

/// Text of serialised HTML: tags dropped, entities decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The serialised element with `id` (its first occurrence), up to `end`.
fn element<'a>(dom: &'a str, id: &str, end: &str) -> Option<&'a str> {
    let start = dom.find(&format!(" id=\"{id}\""))?;
    let start = dom[..start].rfind('<').unwrap();
    let len = dom[start..].find(end).expect("closed") + end.len();
    Some(&dom[start..start + len])
}

/// The body rows of the table `id`, each cell as text.
fn table(dom: &str, id: &str) -> Vec<Vec<String>> {
    let t = element(dom, id, "</table>").unwrap_or_else(|| panic!("no table {id}"));
    let body = &t[t.find("<tbody>").expect("tbody")..];
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| text(&format!("<td{}", &cell[..cell.find("</td>").unwrap()])))
                .collect()
        })
        .collect()
}

/// The period `name` of report.json.
fn period<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["periods"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|g| g.as_array().unwrap())
        .find(|p| p["period"] == name)
        .unwrap_or_else(|| panic!("no period {name}"))
}

/// A top list as table rows: rank, package, count.
fn ranked(list: &Value) -> Vec<Vec<String>> {
    list.as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                (i + 1).to_string(),
                c["package"].as_str().unwrap().to_owned(),
                c["count"].to_string(),
            ]
        })
        .collect()
}

/// `package`'s count in a top list of `p`.
fn count_in(p: &Value, list: &str, package: &str) -> String {
    p[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["package"] == package)
        .unwrap_or_else(|| panic!("{package} not in {list}"))["count"]
        .to_string()
}

/// `package`'s users, jobs and processes in `p` (`package_counts`, every package), as text;
/// 0 when it has no rows there.
fn counts_of(p: &Value, package: &str) -> [String; 3] {
    let all = p["package_counts"].as_array().expect("package_counts");
    match all.iter().find(|c| c["package"] == package) {
        Some(c) => ["users", "jobs", "processes"].map(|k| c[k].to_string()),
        None => ["0", "0", "0"].map(str::to_owned),
    }
}

/// The package panel for `package` in period `p`, checked against report.json: its counts,
/// users per month, versions, environment kinds, job sizes and strongest correlation.
fn check_panel(dom: &str, report: &Value, p: &Value, package: &str) {
    let title = text(element(dom, "pkg-title", "</h2>").expect("package panel"));
    assert_eq!(
        title,
        format!("Package {package} in {}", p["period"].as_str().unwrap())
    );
    let counts: Vec<String> = table(dom, "p-counts")
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(counts, counts_of(p, package));
    assert_eq!(counts[0], count_in(p, "top_packages_by_user", package));
    // Shares (environment kinds, versions): the key and count columns.
    let shares = |table_id: &str, list: &Value| {
        let want: Vec<Vec<String>> = list
            .as_array()
            .unwrap_or_else(|| panic!("{table_id}: {package} has no such table"))
            .iter()
            .map(|v| {
                vec![
                    v["key"].as_str().unwrap().to_owned(),
                    v["count"].to_string(),
                ]
            })
            .collect();
        let shown: Vec<Vec<String>> = table(dom, table_id)
            .into_iter()
            .map(|r| r[..2].to_vec())
            .collect();
        assert_eq!(shown, want, "{table_id}");
    };
    shares("p-env", &p["package_env_kinds"][package]);
    shares("p-versions", &p["versions"][package]);
    let sizes: u64 = p["package_by_job_size"][package]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let shown: u64 = table(dom, "p-sizes")
        .iter()
        .map(|r| r[1].parse::<u64>().unwrap())
        .sum();
    assert_eq!(shown, sizes);
    // Users over time: every month; this package's users of a month from that month's report.
    let months = report["periods"]["month"].as_array().unwrap();
    let per_month = table(dom, "p-months");
    assert_eq!(per_month.len(), months.len());
    for (row, m) in per_month.iter().zip(months) {
        assert_eq!(row[0], m["period"].as_str().unwrap());
        assert_eq!(row[1], counts_of(m, package)[0]);
    }
    // The strongest correlation: from the slices, or the matrix row of a top package by job.
    let (first, r) = match p["correlation_slices"].get(package) {
        Some(s) => (s[0][0].as_str().unwrap(), s[0][1].as_f64().unwrap()),
        None => {
            let c = &p["correlation"];
            let names: Vec<&str> = c["packages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let i = names.iter().position(|x| *x == package).unwrap();
            names
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter_map(|(j, q)| c["matrix"][i][j].as_f64().map(|r| (*q, r)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                .unwrap()
        }
    };
    let corr = table(dom, "p-corr");
    assert_eq!(corr[0][0], first);
    assert!(
        (corr[0][1].parse::<f64>().unwrap() - r).abs() < 6e-4,
        "{corr:?}"
    );
}

/// The page the test drives the report from: the report in an iframe (same origin with
/// `--allow-file-access-from-files`), each step run 300 ms after the last, and a snapshot of
/// the report's dashboard, its fragment and its `<img>` count after each step.
const HARNESS: &str = r#"<!doctype html><meta charset=utf-8><body><iframe id=f width=1200 height=800></iframe><script>
const f = document.getElementById("f");
const snap = (tag) => {
  const d = f.contentDocument, m = document.createElement("div");
  m.className = "snap";
  m.setAttribute("data-tag", tag);
  m.setAttribute("data-hash", f.contentWindow.location.hash);
  m.setAttribute("data-img", String(d.querySelectorAll("img").length));
  m.append(document.importNode(d.getElementById("dash"), true));
  document.body.append(m);
};
const search = (name) => {
  const d = f.contentDocument;
  d.getElementById("package").value = name;
  d.getElementById("controls").requestSubmit();
};
const steps = [
  () => snap("loaded"),
  () => { const s = f.contentDocument.getElementById("period"); s.value = "2026-Q2"; s.dispatchEvent(new Event("change")); },
  () => snap("period"),
  () => search("scipy"),
  () => snap("package"),
  () => search(HOSTILE),
  () => snap("hostile"),
];
f.addEventListener("load", () => {
  let i = 0;
  const next = () => { if (i < steps.length) { steps[i++](); setTimeout(next, 300); } };
  next();
}, { once: true });
f.src = REPORT;
</script>"#;

/// The harness's snapshot `tag`: its fragment, `<img>` count and dashboard.
fn snapshot<'a>(dom: &'a str, tag: &str) -> (String, usize, &'a str) {
    let start = dom
        .find(&format!("data-tag=\"{tag}\""))
        .unwrap_or_else(|| panic!("no snapshot {tag}: {dom}"));
    let rest = &dom[start..];
    let end = rest[1..].find("data-tag=").map_or(rest.len(), |e| e + 1);
    let attr = |name: &str| {
        let a = &rest[rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2..];
        a[..a.find('"').unwrap()].to_owned()
    };
    (
        attr("data-hash"),
        attr("data-img").parse().unwrap(),
        &rest[..end],
    )
}

#[test]
fn dashboard_in_a_headless_browser() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let out = d.path().join("report");
    output_ok(
        Command::new(bin())
            .args(["synth", "--rows", "60000", "--seed", "5", "--out"])
            .arg(&data),
    );
    // A day's records again, from another host, importing a package named like markup.
    let day = data.join("date=2026-05-12");
    let file = std::fs::read_dir(&day).unwrap().next().unwrap().unwrap();
    let mut planted = pyusage_record::dataset::read(&file.path()).unwrap();
    assert!(!planted.is_empty());
    for (i, r) in planted.iter_mut().enumerate() {
        r.host = "evil".into();
        r.record_id = format!("evil-{i}");
        r.package = HOSTILE.into();
        r.distribution = None;
    }
    pyusage_record::dataset::write(&data, &planted).unwrap();
    output_ok(
        Command::new(bin())
            .arg("analyze")
            .arg(&data)
            .arg("--out")
            .arg(&out),
    );
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    // Self-contained: nothing fetched, the planted name escaped everywhere.
    let lower = html.to_lowercase();
    for external in [
        "src=\"http",
        "src=http",
        "href=\"http",
        "href=http",
        "url(http",
        "<link",
    ] {
        assert!(!lower.contains(external), "{external}");
    }
    assert!(!html.contains("<img"), "the planted name as markup");
    assert!(html.contains("\\u003cimg src=x onerror=alert(1)>"));

    // Loaded from a fragment: March, numpy.
    let march = period(&report, "2026-03");
    let dom = browse(
        d.path(),
        &["--dump-dom"],
        &url(&page, &[("period", "2026-03"), ("package", "numpy")]),
    );
    assert!(!dom.contains("id=\"static\""), "the script took over");
    assert_eq!(
        text(element(&dom, "period-title", "</h2>").unwrap()),
        format!("Period 2026-03 (month) — {} records", march["rows"])
    );
    assert_eq!(
        table(&dom, "t-users"),
        ranked(&march["top_packages_by_user"])
    );
    assert_eq!(table(&dom, "t-jobs"), ranked(&march["top_packages_by_job"]));
    // CPU-hours by package (synth writes CPU times), one decimal as shown.
    let cpu: Vec<Vec<String>> = march["cpu_by_package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            vec![
                c["package"].as_str().unwrap().to_owned(),
                c["processes"].to_string(),
                format!("{:.1}", c["cpu_hours_split"].as_f64().unwrap()),
                format!("{:.1}", c["cpu_hours"].as_f64().unwrap()),
            ]
        })
        .collect();
    assert!(!cpu.is_empty());
    assert_eq!(table(&dom, "t-cpu"), cpu);
    // Sampled CPU by package and what never ran (synth samples most processes).
    let pct = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{:.1} %", x * 100.0))
            .unwrap_or_default()
    };
    let rows = |list: &str, cells: &dyn Fn(&Value) -> Vec<String>| -> Vec<Vec<String>> {
        march[list].as_array().unwrap().iter().map(cells).collect()
    };
    let sampled = rows("sampled_cpu_by_package", &|c| {
        vec![
            c["package"].as_str().unwrap().to_owned(),
            c["processes"].to_string(),
            c["jobs"].to_string(),
            c["self_samples"].to_string(),
            c["inclusive_samples"].to_string(),
            pct(&c["self_share"]),
            pct(&c["inclusive_share"]),
            format!("{:.1}", c["cpu_hours_self"].as_f64().unwrap()),
        ]
    });
    assert!(!sampled.is_empty());
    assert_eq!(table(&dom, "t-sampled"), sampled);
    let idle = rows("imported_not_on_cpu", &|c| {
        vec![
            c["package"].as_str().unwrap().to_owned(),
            c["jobs"].to_string(),
            c["jobs_on_cpu"].to_string(),
            pct(&c["share_never_on_cpu"]),
        ]
    });
    assert!(!idle.is_empty());
    assert_eq!(table(&dom, "t-not-on-cpu"), idle);
    // numpy's callers: the first package by name with callers.
    let callers = march["package_callers"].as_object().unwrap();
    let (first, list) = callers.iter().next().unwrap();
    let want: Vec<Vec<String>> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            vec![
                x["key"].as_str().unwrap().to_owned(),
                x["count"].to_string(),
                x["of"].to_string(),
                pct(&x["share"]),
            ]
        })
        .collect();
    assert!(!want.is_empty(), "callers of {first}");
    assert_eq!(table(&dom, "t-callers-0"), want);
    check_panel(&dom, &report, march, "numpy");
    // Highlighted in the users per month: March only.
    let months = element(&dom, "p-months", "</table>").unwrap();
    assert_eq!(months.matches("class=\"in\"").count(), 1);

    // By interaction: another period picked, then another package searched.
    let harness = d.path().join("harness.html");
    let target = url(&page, &[("period", "2026-03"), ("package", "numpy")]);
    std::fs::write(
        &harness,
        HARNESS
            .replace("REPORT", &serde_json::to_string(&target).unwrap())
            .replace("HOSTILE", &serde_json::to_string(HOSTILE).unwrap()),
    )
    .unwrap();
    let dom = browse(
        d.path(),
        &["--dump-dom", "--allow-file-access-from-files"],
        &format!("file://{}", harness.display()),
    );
    let q2 = period(&report, "2026-Q2");
    let (hash, _, loaded) = snapshot(&dom, "loaded");
    assert_eq!(hash, "#period=2026-03&amp;package=numpy");
    assert_eq!(
        table(loaded, "t-users"),
        ranked(&march["top_packages_by_user"])
    );
    let (hash, _, picked) = snapshot(&dom, "period");
    assert_eq!(hash, "#period=2026-Q2&amp;package=numpy");
    assert_eq!(
        table(picked, "t-users"),
        ranked(&q2["top_packages_by_user"])
    );
    assert_ne!(table(picked, "t-users"), table(loaded, "t-users"));
    check_panel(picked, &report, q2, "numpy");
    let (hash, _, searched) = snapshot(&dom, "package");
    assert_eq!(hash, "#period=2026-Q2&amp;package=scipy");
    check_panel(searched, &report, q2, "scipy");
    // The planted name, searched: shown as text, no element made of it.
    let (_, images, hostile) = snapshot(&dom, "hostile");
    assert_eq!(images, 0);
    assert_eq!(
        text(element(hostile, "pkg-title", "</h2>").unwrap()),
        format!("Package {HOSTILE} in 2026-Q2")
    );
    assert!(
        element(hostile, "p-sizes", "</table>").is_some(),
        "its jobs"
    );
    // Any package is followed: its counts, and its users in the month it was planted in.
    let users = counts_of(q2, HOSTILE)[0].clone();
    let may = counts_of(period(&report, "2026-05"), HOSTILE)[0].clone();
    assert!(may != "0");
    assert_eq!(table(hostile, "p-counts")[0][1], users);
    let months = table(hostile, "p-months");
    assert!(
        months.contains(&vec!["2026-05".to_owned(), may]),
        "{months:?}"
    );

    // A screenshot for people (PYUSAGE_DASHBOARD_PNG keeps a copy).
    let png = d.path().join("dashboard.png");
    browse(
        d.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,2000",
        ],
        &url(&page, &[("period", "2026-Q2"), ("package", "xarray")]),
    );
    let shot = std::fs::read(&png).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 50_000,
        "{}",
        shot.len()
    );
    if let Some(keep) = std::env::var_os("PYUSAGE_DASHBOARD_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }
}
