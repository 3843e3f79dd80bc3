//! `--jobs`: a synthetic dataset joined to a `sacct --parsable2` file made from its own jobs
//! (with step lines, array and het ids, `Unknown` elapsed times, `CANCELLED by …`, jobs the
//! file lacks and lines it cannot read), checked against node-hours and outcomes computed
//! here from the records directly.
use std::collections::{BTreeMap, BTreeSet};

use pyusage_analysis::{
    accounting::OUTCOMES,
    counts::PeriodKind,
    run::{analyze, merge, partial, Device, Options},
    scan::Selection,
    synth::{generate, Params},
};
use pyusage_record::dataset::write;

/// Per package: accounted jobs, node-seconds, jobs per outcome.
type Expected = (u64, u64, [u64; 6]);

#[test]
fn node_hours_and_outcomes_per_package_and_account() {
    let recs = generate(Params {
        rows: 40_000,
        seed: 21,
        users: 200,
    });
    let d = tempfile::tempdir().unwrap();
    for c in recs.chunks(10_000) {
        write(d.path(), c).unwrap();
    }
    // The jobs with job rows (the paper's filter: not staff, compute node, in a job).
    let mut jobs: BTreeMap<String, (u32, String, BTreeSet<String>)> = BTreeMap::new();
    for r in recs.iter().filter(|r| !r.is_staff && r.is_compute) {
        if let Some(j) = &r.job_id {
            let e = jobs.entry(j.clone()).or_insert((
                r.num_nodes,
                r.account.clone().unwrap_or_default(),
                BTreeSet::new(),
            ));
            e.2.insert(r.package.clone());
        }
    }
    assert!(
        jobs.keys().any(|j| j.contains('_')),
        "array jobs in the data"
    );
    let states = [
        "COMPLETED",
        "TIMEOUT",
        "FAILED",
        "OUT_OF_MEMORY",
        "CANCELLED by 4242",
        "NODE_FAIL",
    ];
    let mut sacct =
        String::from("JobID|JobIDRaw|JobName|NNodes|ElapsedRaw|State|Account|Partition\n");
    let mut expect_pkg: BTreeMap<String, Expected> = BTreeMap::new();
    let mut expect_acct: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut unaccounted = 0;
    for (i, (job, (nodes, account, packages))) in jobs.iter().enumerate() {
        if i % 10 == 9 {
            unaccounted += 1; // not in the file
            continue;
        }
        let elapsed = (i * 37 % 5000) as u64;
        let unknown = i % 13 == 5;
        let o = i % states.len();
        let secs = if unknown { 0 } else { elapsed * *nodes as u64 };
        let raw = if job.contains('_') {
            "99999999".to_owned()
        } else {
            job.clone()
        };
        sacct.push_str(&format!(
            "{job}|{raw}|python|{nodes}|{}|{}|{account}|cpu\n",
            if unknown {
                "Unknown".to_owned()
            } else {
                elapsed.to_string()
            },
            states[o]
        ));
        sacct.push_str(&format!(
            "{job}.batch|{raw}.batch|batch|1|{elapsed}|COMPLETED|{account}|\n"
        ));
        for p in packages {
            let e = expect_pkg.entry(p.clone()).or_default();
            e.0 += 1;
            e.1 += secs;
            e.2[o.min(5)] += 1;
        }
        let a = expect_acct.entry(account.clone()).or_default();
        a.0 += 1;
        a.1 += secs;
    }
    sacct.push_str("123_[5-9]|123|python|1|0|PENDING|m0001|cpu\nbroken line\n");
    let file = d.path().join("sacct.txt");
    std::fs::write(&file, &sacct).unwrap();

    let o = Options {
        selection: Selection {
            root: d.path().to_path_buf(),
            from: None,
            to: None,
            filter: None,
            hosts: None,
        },
        device: Device::Cpu,
        kinds: vec![PeriodKind::All, PeriodKind::Month],
        top: 20,
        cache: None,
        jobs: Some(file.clone()),
    };
    let notes = std::sync::Mutex::new(Vec::new());
    let (a, _) = analyze(&o, &|l| notes.lock().unwrap().push(l.to_owned()), &|_| {}).unwrap();
    let notes = notes.into_inner().unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[1].contains(":") && notes[1].contains("line skipped"));
    let all = &a.periods["all"][0];
    let t = all.accounting.as_ref().expect("accounting tables");
    assert_eq!(t.jobs_without_accounting, unaccounted);
    // The top 20 by node-hours, ties by name.
    let mut want: Vec<(&String, &Expected)> = expect_pkg.iter().collect();
    want.sort_by(|x, y| y.1 .1.cmp(&x.1 .1).then_with(|| x.0.cmp(y.0)));
    want.truncate(20);
    assert_eq!(t.node_hours_by_package.len(), 20);
    for (got, (p, (jobs, secs, outcomes))) in t.node_hours_by_package.iter().zip(&want) {
        assert_eq!((&got.package, got.jobs), (*p, *jobs));
        assert_eq!(got.node_hours, *secs as f64 / 3600.0, "{p}");
        let shares = &t.outcomes_by_package[*p];
        for (k, name) in OUTCOMES.iter().enumerate() {
            let n = shares
                .iter()
                .find(|s| s.key == *name)
                .map_or(0, |s| s.count);
            assert_eq!(n, outcomes[k], "{p} {name}");
        }
        assert!(shares.iter().all(|s| s.of == *jobs));
    }
    let top_account = t.by_account.first().unwrap();
    let best = expect_acct
        .iter()
        .max_by(|x, y| x.1 .1.cmp(&y.1 .1).then_with(|| y.0.cmp(x.0)))
        .unwrap();
    assert_eq!(
        (&top_account.account, top_account.jobs),
        (best.0, best.1 .0)
    );
    // Months partition the jobs: each month's tables exist, and a job over two months counts
    // in both, so the months' jobs add up to at least the whole range's.
    let months = &a.periods["month"];
    let month_jobs: u64 = months
        .iter()
        .map(|m| m.accounting.as_ref().unwrap().node_hours_by_package[0].jobs)
        .sum();
    assert!(month_jobs > 0);

    // HTML and CSV carry them.
    let html = pyusage_analysis::html::render(&a).unwrap();
    assert!(html.contains("Node-hours by package") && html.contains("Accounts by node-hours"));
    let csv_dir = tempfile::tempdir().unwrap();
    let files = pyusage_analysis::export::write_csv(&a, csv_dir.path()).unwrap();
    let hours = std::fs::read_to_string(csv_dir.path().join("node_hours.csv")).unwrap();
    assert!(files.iter().any(|f| f.ends_with("accounts.csv")));
    assert!(hours.lines().count() > 20, "{hours}");
    // The same join through shards and merge: the same bytes.
    let single = serde_json::to_string(&a).unwrap();
    let p = d.path().join("all.state");
    partial(
        &Options {
            jobs: None,
            ..o.clone()
        },
        &p,
        &|_| {},
    )
    .unwrap();
    let acct = pyusage_analysis::accounting::Accounting::read(&file).unwrap();
    let merged = merge(&[p], &o.kinds, 20, Some(&acct)).unwrap();
    assert!(serde_json::to_string(&merged).unwrap() == single);
    // Without --jobs, no accounting tables at all (the report is as before).
    let (plain, _) = analyze(&Options { jobs: None, ..o }, &|_| {}, &|_| {}).unwrap();
    assert!(plain.periods["all"][0].accounting.is_none());
    assert!(!serde_json::to_string(&plain)
        .unwrap()
        .contains("node_hours"));
}
