//! The CPU back end end to end (Parquet on disk → report) against hand-computed values, and
//! the planted structure of the synthetic data.
use std::path::Path;

use pyusage_analysis::{
    counts::PeriodKind,
    filter::Filter,
    report::{Analysis, PeriodReport},
    run::{analyze, Device, Options},
    scan::Selection,
    synth::{generate, Params},
};
use pyusage_record::{dataset::write, Record};

fn run(
    root: &Path,
    kinds: &[PeriodKind],
    filter: Option<&str>,
    range: (Option<&str>, Option<&str>),
) -> Analysis {
    let o = Options {
        selection: Selection {
            root: root.to_path_buf(),
            from: range.0.map(str::to_owned),
            to: range.1.map(str::to_owned),
            filter: filter.map(|f| Filter::parse(f).unwrap()),
            hosts: None,
        },
        device: Device::Cpu,
        kinds: kinds.to_vec(),
        top: 20,
        cache: None,
        jobs: None,
    };
    analyze(&o, &|_| {}, &|_| {}).unwrap().0
}

fn one(a: &Analysis, kind: &str) -> PeriodReport {
    let p = &a.periods[kind];
    assert_eq!(
        p.len(),
        1,
        "{kind}: {:?}",
        p.iter().map(|r| &r.period).collect::<Vec<_>>()
    );
    p[0].clone()
}

const JAN: i64 = 1_767_225_600_000_000; // 2026-01-01
const DAY: i64 = 86_400_000_000;

/// (package, user, job, host, pid, start, nodes, version, blas, exit, env, compute)
type Spec<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    i32,
    i64,
    u32,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    &'a str,
    bool,
);

fn records(spec: &[Spec<'_>]) -> Vec<Record> {
    let mut rs = generate(Params {
        rows: spec.len(),
        seed: 1,
        users: 3,
    });
    for (i, (r, s)) in rs.iter_mut().zip(spec).enumerate() {
        r.package = s.0.into();
        r.username = Some(s.1.into());
        r.is_staff = s.1.starts_with("staff");
        r.job_id = s.2.map(str::to_owned);
        r.host = s.3.into();
        r.pid = s.4;
        r.process_start = s.5;
        r.num_nodes = s.6;
        r.version = s.7.map(str::to_owned);
        r.blas = s.8.map(str::to_owned);
        r.exit = s.9.parse().unwrap();
        r.env_kind = s.10.parse().unwrap();
        r.is_compute = s.11;
        r.seq = i as u64 + 1;
    }
    rs
}

#[test]
fn hand_computed_tables() {
    let t0 = JAN + DAY;
    let spec: Vec<Spec<'_>> = vec![
        // job 1: alice, 2 nodes, two ranks on two hosts; numpy+scipy, openblas; one rank killed.
        (
            "numpy",
            "alice",
            Some("1"),
            "n1",
            10,
            t0,
            2,
            Some("1.26"),
            Some("openblas"),
            "exited",
            "conda",
            true,
        ),
        (
            "scipy",
            "alice",
            Some("1"),
            "n1",
            10,
            t0,
            2,
            Some("1.11"),
            None,
            "exited",
            "conda",
            true,
        ),
        (
            "numpy",
            "alice",
            Some("1"),
            "n2",
            10,
            t0,
            2,
            Some("1.26"),
            Some("openblas"),
            "signaled",
            "conda",
            true,
        ),
        // A running snapshot of the same process and package as the row above: not a new process.
        (
            "numpy",
            "alice",
            Some("1"),
            "n2",
            10,
            t0,
            2,
            Some("1.26"),
            Some("openblas"),
            "running",
            "conda",
            true,
        ),
        // job 2: bob, 1 node; numpy (no BLAS seen) and json (stdlib).
        (
            "numpy",
            "bob",
            Some("2"),
            "n3",
            20,
            t0,
            1,
            Some("2.0"),
            None,
            "exited",
            "venv",
            true,
        ),
        (
            "json",
            "bob",
            Some("2"),
            "n3",
            20,
            t0,
            1,
            None,
            None,
            "exited",
            "stdlib",
            true,
        ),
        // bob outside a job, on a login node.
        (
            "yaml",
            "bob",
            None,
            "login",
            21,
            t0,
            1,
            Some("6.0"),
            None,
            "exited",
            "user",
            false,
        ),
        // job 3: carol on a login node (not compute): counts by job, not in job-based tables.
        (
            "numpy",
            "carol",
            Some("3"),
            "login",
            30,
            t0,
            1,
            Some("2.0"),
            Some("mkl"),
            "exited",
            "system",
            false,
        ),
        // staff: excluded by the paper's default filter.
        (
            "numpy",
            "staff1",
            Some("4"),
            "n4",
            40,
            t0,
            8,
            Some("2.0"),
            None,
            "exited",
            "system",
            true,
        ),
    ];
    let d = tempfile::tempdir().unwrap();
    write(d.path(), &records(&spec)).unwrap();
    let a = run(
        d.path(),
        &[PeriodKind::All, PeriodKind::Month],
        None,
        (None, None),
    );
    assert_eq!(a.header.rows, 8);
    let r = one(&a, "all");
    let pairs = |l: &[pyusage_analysis::report::Count]| {
        l.iter()
            .map(|c| (c.package.clone(), c.count))
            .collect::<Vec<_>>()
    };
    let v = |x: &[(&str, u64)]| {
        x.iter()
            .map(|(p, c)| (p.to_string(), *c))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pairs(&r.top_packages_by_user),
        v(&[("numpy", 3), ("json", 1), ("scipy", 1), ("yaml", 1)])
    );
    assert_eq!(
        pairs(&r.top_packages_by_job),
        v(&[("numpy", 3), ("json", 1), ("scipy", 1)])
    );
    // Processes: alice n1, alice n2, bob n3, carol → numpy 4 (the snapshot is the same process).
    assert_eq!(
        pairs(&r.top_packages_by_process),
        v(&[("numpy", 4), ("json", 1), ("scipy", 1), ("yaml", 1)])
    );
    // Job-based: jobs 1 and 2 only (job 3 is on a login node, job 4 is staff).
    assert_eq!(r.correlation.jobs, 2);
    assert_eq!(
        r.job_sizes
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
    assert_eq!(
        r.package_by_job_size["numpy"]
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
    assert_eq!(
        r.package_by_job_size["scipy"]
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [(2, 1)]
    );
    // Correlations over 2 jobs: numpy is in both (undefined); scipy vs json: r = -1.
    let c = &r.correlation;
    let at = |p: &str| c.packages.iter().position(|x| x == p).unwrap();
    assert_eq!(c.matrix[at("numpy")][at("scipy")], None);
    assert_eq!(c.matrix[at("scipy")][at("json")], Some(-1.0));
    assert_eq!(c.matrix[at("json")][at("json")], Some(1.0));
    // Versions: numpy users alice (1.26), bob and carol (2.0).
    let numpy: Vec<(String, u64, u64)> = r.versions["numpy"]
        .iter()
        .map(|s| (s.key.clone(), s.count, s.of))
        .collect();
    assert_eq!(
        numpy,
        [("2.0".to_string(), 2, 3), ("1.26".to_string(), 1, 3)]
    );
    // Environment kinds (processes, stdlib excluded): conda 2 (alice n1, n2), venv, user, system.
    let env: Vec<(String, u64)> = r
        .env_kinds
        .iter()
        .map(|s| (s.key.clone(), s.count))
        .collect();
    assert_eq!(
        env,
        v(&[("conda", 2), ("system", 1), ("user", 1), ("venv", 1)])
    );
    // BLAS among numpy/scipy jobs: job 1 openblas, job 2 none seen, job 3 mkl.
    let blas: Vec<(String, u64, u64)> = r
        .blas_in_numpy_jobs
        .iter()
        .map(|s| (s.key.clone(), s.count, s.of))
        .collect();
    assert_eq!(
        blas,
        [
            ("mkl".to_string(), 1, 3),
            ("openblas".to_string(), 1, 3),
            ("unknown".to_string(), 1, 3)
        ]
    );
    assert_eq!(r.blas_in_numpy_jobs[0].share, Some(1.0 / 3.0));
    // Signaled: one numpy process of four.
    assert_eq!(
        (
            r.signaled[0].key.as_str(),
            r.signaled[0].count,
            r.signaled[0].of
        ),
        ("numpy", 1, 4)
    );
    assert_eq!(r.monthly_users["numpy"]["2026-01"], 3);
    assert_eq!(one(&a, "month").period, "2026-01");

    // --filter replaces the defaults: staff back in, job tables on every node.
    let f = run(
        d.path(),
        &[PeriodKind::All],
        Some("package != json"),
        (None, None),
    );
    let r = one(&f, "all");
    assert_eq!(f.header.rows, 8);
    assert_eq!(r.top_packages_by_user[0].count, 4);
    assert_eq!(r.correlation.jobs, 4);
    assert!(r.top_packages_by_user.iter().all(|c| c.package != "json"));
    let f = run(
        d.path(),
        &[PeriodKind::All],
        Some("username == bob and is_compute == false or exit == signaled"),
        (None, None),
    );
    assert_eq!(f.header.rows, 2);
}

/// One record of a sampled process: (host, pid, start, job, package, env kind, running,
/// sampling status, rate, (total, self, inclusive), callers).
type Sampled<'a> = (
    &'a str,
    i32,
    i64,
    Option<&'a str>,
    &'a str,
    &'a str,
    bool,
    Option<&'a str>,
    u32,
    Option<(u64, u64, u64)>,
    &'a [(&'a str, u64)],
);

fn sampled_records(spec: &[Sampled<'_>]) -> Vec<Record> {
    let mut rs = generate(Params {
        rows: spec.len(),
        seed: 1,
        users: 3,
    });
    for (i, (r, s)) in rs.iter_mut().zip(spec).enumerate() {
        (r.host, r.pid, r.process_start) = (s.0.into(), s.1, s.2);
        r.job_id = s.3.map(str::to_owned);
        r.package = s.4.into();
        r.env_kind = s.5.parse().unwrap();
        r.exit = if s.6 { "running" } else { "exited" }.parse().unwrap();
        r.is_staff = false;
        r.cpu_sampling = s.7.map(str::to_owned);
        r.cpu_sample_hz = s.7.map(|_| s.8);
        r.cpu_samples_total = s.9.map(|c| c.0);
        r.cpu_samples_self = s.9.map(|c| c.1);
        r.cpu_samples_inclusive = s.9.map(|c| c.2);
        r.cpu_samples_callers =
            s.10.iter()
                .map(|&(package, samples)| pyusage_record::CallerSamples {
                    package: package.into(),
                    samples,
                })
                .collect();
        r.seq = i as u64 + 1;
        r.record_id = format!("s-{i}");
    }
    rs
}

#[test]
fn hand_computed_sampled_tables() {
    let (jan, feb) = (JAN + DAY, JAN + 33 * DAY);
    let on = Some("sampled");
    let spec: Vec<Sampled<'_>> = vec![
        // P1, job 7, January, 10 Hz, 1,000 samples: numpy under xarray and dask (its running
        // snapshot had fewer), xarray, the standard library's json, tqdm never on the CPU.
        (
            "n1",
            1,
            jan,
            Some("7"),
            "numpy",
            "conda",
            true,
            on,
            10,
            Some((300, 100, 150)),
            &[("xarray", 90)],
        ),
        (
            "n1",
            1,
            jan,
            Some("7"),
            "numpy",
            "conda",
            false,
            on,
            10,
            Some((1000, 400, 500)),
            &[("xarray", 300), ("dask", 100)],
        ),
        (
            "n1",
            1,
            jan,
            Some("7"),
            "xarray",
            "conda",
            false,
            on,
            10,
            Some((1000, 50, 400)),
            &[],
        ),
        (
            "n1",
            1,
            jan,
            Some("7"),
            "json",
            "stdlib",
            false,
            on,
            10,
            Some((1000, 30, 30)),
            &[],
        ),
        (
            "n1",
            1,
            jan,
            Some("7"),
            "tqdm",
            "conda",
            false,
            on,
            10,
            Some((1000, 0, 0)),
            &[],
        ),
        // P2, job 7 again, February, 20 Hz, 200 samples.
        (
            "n2",
            2,
            feb,
            Some("7"),
            "numpy",
            "conda",
            false,
            on,
            20,
            Some((200, 100, 100)),
            &[("pandas", 50)],
        ),
        (
            "n2",
            2,
            feb,
            Some("7"),
            "pandas",
            "conda",
            false,
            on,
            20,
            Some((200, 20, 70)),
            &[],
        ),
        (
            "n2",
            2,
            feb,
            Some("7"),
            "tqdm",
            "conda",
            false,
            on,
            20,
            Some((200, 0, 0)),
            &[],
        ),
        // P3 unsupported, P4 not sampled: in none of the tables.
        (
            "n3",
            3,
            jan,
            Some("8"),
            "numpy",
            "conda",
            false,
            Some("unsupported:python-3.7"),
            10,
            None,
            &[],
        ),
        (
            "n4",
            4,
            jan,
            None,
            "numpy",
            "conda",
            false,
            None,
            0,
            None,
            &[],
        ),
        // P5, job 9, January: tqdm imported, 50 samples elsewhere.
        (
            "n5",
            5,
            jan,
            Some("9"),
            "tqdm",
            "conda",
            false,
            on,
            10,
            Some((50, 0, 0)),
            &[],
        ),
    ];
    let d = tempfile::tempdir().unwrap();
    write(d.path(), &sampled_records(&spec)).unwrap();
    let a = run(
        d.path(),
        &[PeriodKind::Month, PeriodKind::Quarter],
        None,
        (None, None),
    );
    let rows = |r: &PeriodReport| -> Vec<(String, u64, u64, u64, u64)> {
        r.sampled_cpu_by_package
            .iter()
            .map(|c| {
                let (p, n, j) = (c.package.clone(), c.processes, c.jobs);
                (p, n, j, c.self_samples, c.inclusive_samples)
            })
            .collect()
    };
    let idle = |r: &PeriodReport| -> Vec<(String, u64, u64)> {
        r.imported_not_on_cpu
            .iter()
            .map(|c| (c.package.clone(), c.jobs, c.jobs_on_cpu))
            .collect()
    };
    let callers = |r: &PeriodReport, p: &str| -> Vec<(String, u64, u64)> {
        r.package_callers[p]
            .iter()
            .map(|s| (s.key.clone(), s.count, s.of))
            .collect()
    };
    let s = |x: &str| x.to_owned();
    let (m1, m2) = (&a.periods["month"][0], &a.periods["month"][1]);
    assert_eq!(
        (m1.sampled_cpu.processes, m1.sampled_cpu.samples),
        (2, 1050)
    );
    assert_eq!(m1.sampled_cpu.cpu_hours, 105e6 / 3.6e9);
    assert_eq!(
        rows(m1),
        [
            (s("numpy"), 1, 1, 400, 500),
            (s("xarray"), 1, 1, 50, 400),
            (s("tqdm"), 2, 2, 0, 0)
        ]
    );
    let numpy = &m1.sampled_cpu_by_package[0];
    assert_eq!(numpy.self_share, Some(400.0 / 1050.0));
    assert_eq!(numpy.inclusive_share, Some(500.0 / 1050.0));
    assert_eq!(numpy.cpu_hours_self, 40e6 / 3.6e9);
    assert_eq!(
        idle(m1),
        [(s("tqdm"), 2, 0), (s("numpy"), 1, 1), (s("xarray"), 1, 1)]
    );
    assert_eq!(m1.imported_not_on_cpu[0].share_never_on_cpu, Some(1.0));
    assert_eq!(
        callers(m1, "numpy"),
        [(s("xarray"), 300, 400), (s("dask"), 100, 400)]
    );
    assert_eq!(m1.package_callers.len(), 1, "xarray has no callers");
    assert_eq!((m2.sampled_cpu.processes, m2.sampled_cpu.samples), (1, 200));
    assert_eq!(callers(m2, "numpy"), [(s("pandas"), 50, 100)]);
    // The quarter: job 7 once, though in two months; rates per process (10 and 20 Hz).
    let q = &a.periods["quarter"][0];
    assert_eq!((q.sampled_cpu.processes, q.sampled_cpu.samples), (3, 1250));
    assert_eq!(
        rows(q),
        [
            (s("numpy"), 2, 1, 500, 600),
            (s("xarray"), 1, 1, 50, 400),
            (s("pandas"), 1, 1, 20, 70),
            (s("tqdm"), 3, 2, 0, 0)
        ]
    );
    assert_eq!(q.sampled_cpu_by_package[0].cpu_hours_self, 45e6 / 3.6e9);
    assert_eq!(q.sampled_cpu_by_package[0].self_share, Some(0.4));
    assert_eq!(
        idle(q),
        [
            (s("tqdm"), 2, 0),
            (s("numpy"), 1, 1),
            (s("pandas"), 1, 1),
            (s("xarray"), 1, 1)
        ]
    );
    assert_eq!(
        callers(q, "numpy"),
        [
            (s("xarray"), 300, 500),
            (s("dask"), 100, 500),
            (s("pandas"), 50, 500)
        ]
    );
    assert_eq!(q.package_callers["numpy"][0].share, Some(0.6));
}

#[test]
fn periods_pruning_and_planted_structure() {
    let recs = generate(Params {
        rows: 60_000,
        seed: 11,
        users: 500,
    });
    let d = tempfile::tempdir().unwrap();
    for c in recs.chunks(25_000) {
        write(d.path(), c).unwrap();
    }
    let a = run(d.path(), &PeriodKind::ALL, None, (None, None));
    let kept = recs.iter().filter(|r| !r.is_staff).count() as u64;
    assert_eq!(a.header.rows, kept);
    let months = &a.periods["month"];
    // A year of jobs, the last ones running into January of the next.
    assert_eq!(months.len(), 13);
    assert_eq!(months.iter().map(|p| p.rows).sum::<u64>(), kept);
    assert_eq!(months[0].period, "2026-01");
    assert_eq!(months[12].period, "2027-01");
    let q: Vec<&str> = a.periods["quarter"]
        .iter()
        .map(|q| q.period.as_str())
        .collect();
    assert_eq!(q, ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4", "2027-Q1"]);
    let years = &a.periods["year"];
    assert_eq!(years.len(), 2);
    let (year, next) = (years[0].clone(), &years[1]);
    let all = one(&a, "all");
    assert_eq!(year.rows + next.rows, all.rows);
    // A job over the new year counts in both years, once in `all`.
    let jobs = |r: &PeriodReport| r.correlation.jobs;
    assert!(jobs(&year) + jobs(next) > jobs(&all));
    // Distinct users per package in a quarter never exceed the year's; they do not add up.
    for c in &year.top_packages_by_user {
        let per_q: Vec<u64> = a.periods["quarter"]
            .iter()
            .map(|q| {
                q.top_packages_by_user
                    .iter()
                    .find(|x| x.package == c.package)
                    .map_or(0, |x| x.count)
            })
            .collect();
        assert!(per_q.iter().all(|&n| n <= c.count), "{}", c.package);
        if c.package == "numpy" {
            assert!(
                per_q.iter().sum::<u64>() > c.count,
                "users come back across quarters"
            );
        }
    }
    // Processes and rows add up across months (a process lives in one month).
    let procs = |r: &PeriodReport| {
        r.top_packages_by_process
            .iter()
            .find(|c| c.package == "numpy")
            .unwrap()
            .count
    };
    assert_eq!(months.iter().map(procs).sum::<u64>(), procs(&all));
    // Planted: numpy first, xarray → dask, thousand-node jobs use mpi4py, MKL ≈ 1/6 of users.
    assert_eq!(year.top_packages_by_user[0].package, "numpy");
    let dask = &year.correlation_slices["dask"];
    let xd = dask.iter().find(|(p, _)| p == "xarray").unwrap().1;
    assert!(xd > 0.5, "xarray→dask {xd}");
    assert_eq!(dask[0].0, "xarray");
    assert!(year.package_by_job_size["mpi4py"]
        .keys()
        .any(|&n| n >= 1024));
    let mkl = year
        .blas_in_numpy_jobs
        .iter()
        .find(|s| s.key == "mkl")
        .unwrap()
        .share
        .unwrap();
    assert!((0.08..0.30).contains(&mkl), "mkl {mkl}");
    let sig = year
        .signaled
        .iter()
        .find(|s| s.key == "numpy")
        .unwrap()
        .share
        .unwrap();
    assert!(
        (0.02..0.10).contains(&sig),
        "5% of processes are killed: {sig}"
    );
    assert_eq!(year.monthly_users["numpy"].len(), 12);
    // The HTML report: every figure of the headline period (drawn for readers without
    // scripts), titled, with the filters; the period picker; nothing external.
    let html = pyusage_analysis::html::render(&a).unwrap();
    for title in [
        "(fig. 3)",
        "(fig. 4)",
        "(fig. 5)",
        "(fig. 6)",
        "Correlation with dask (fig. 7)",
        "Correlation with mpi4py (fig. 7)",
        "Users per month",
        "is_staff == false",
        "Tables by all",
        "<option value=\"2026-Q2\">2026-Q2</option>",
        "Sampled CPU-hours by package (self)",
        "Sampled CPU by package",
        "Imported but never on the CPU",
        "Callers of numpy (its self samples)",
    ] {
        assert!(html.contains(title), "{title}");
    }
    // Figs. 3–6, a fig. 7 per slice package present (dask, mpi4py, multiprocessing), users
    // per month, sampled CPU by package.
    let slices = year.correlation_slices.len();
    assert!(slices >= 2);
    assert_eq!(html.matches("<svg").count(), 6 + slices);
    // The dashboard's data and script inline; nothing fetched.
    assert_eq!(html.matches("<script").count(), 2);
    assert!(!html.contains(" src=") && !html.contains("<link"));
    assert!(html.contains("<script type=\"application/json\" id=data>{"));
    // Pruning: a date range keeps only its partitions.
    let some = run(
        d.path(),
        &[PeriodKind::Month],
        None,
        (Some("2026-03-01"), Some("2026-05-31")),
    );
    let labels: Vec<&str> = some.periods["month"]
        .iter()
        .map(|p| p.period.as_str())
        .collect();
    assert_eq!(labels, ["2026-03", "2026-04", "2026-05"]);
    assert_eq!(some.periods["month"], months[2..5].to_vec());
}
