//! The mergeable state end to end: shards written with `--partial` and merged give the single
//! run's report byte for byte; `--cache` reuses partitions exactly while their files are
//! unchanged and notices every change (a rewritten file, a new host's file in an old
//! partition, a deleted partition, a corrupt entry), always printing the cold run's bytes.
use std::path::{Path, PathBuf};

use pyusage_analysis::{
    cache::CacheStats,
    counts::PeriodKind,
    export::write_json,
    filter::Filter,
    report::Analysis,
    run::{analyze, merge, partial, AnalyzeError, Device, Options},
    scan::{HostGlob, Selection},
    synth::{stream, Params},
};
use pyusage_record::{dataset::write, Record};

fn options(root: &Path, cache: Option<&Path>) -> Options {
    Options {
        selection: Selection {
            root: root.to_path_buf(),
            from: None,
            to: None,
            filter: None,
            hosts: None,
        },
        device: Device::Cpu,
        kinds: PeriodKind::ALL.to_vec(),
        top: 20,
        cache: cache.map(Path::to_path_buf),
        jobs: None,
    }
}

fn json(a: &Analysis) -> String {
    let mut out = Vec::new();
    write_json(a, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The report of a run (and the cache's account of it).
fn report(o: &Options) -> (String, Option<CacheStats>) {
    let (a, stats) = analyze(o, &|_| {}, &|_| {}).unwrap();
    (json(&a), stats.cache)
}

/// A year of synthetic data in several files per partition.
fn dataset(rows: usize, seed: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut s = stream(Params {
        rows,
        seed,
        users: 300,
    });
    loop {
        let chunk: Vec<Record> = s.by_ref().take(25_000).collect();
        if chunk.is_empty() {
            break;
        }
        write(d.path(), &chunk).unwrap();
    }
    d
}

fn dates(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_prefix("date=").map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

/// Writes the state of `o` restricted to dates [from, to] and hosts `hosts` to `out`.
fn shard(o: &Options, from: &str, to: &str, hosts: Option<&str>, out: &Path) -> PathBuf {
    let mut o = o.clone();
    o.selection.from = Some(from.into());
    o.selection.to = Some(to.into());
    o.selection.hosts = hosts.map(|h| HostGlob::new(h).unwrap());
    partial(&o, out, &|_| {}).unwrap();
    out.to_path_buf()
}

#[test]
fn merged_shards_match_a_single_run_byte_for_byte() {
    let d = dataset(150_000, 3);
    let o = options(d.path(), None);
    let (single, _) = report(&o);
    let all = dates(d.path());
    assert!(all.len() > 100, "a year of partitions: {}", all.len());
    let t = tempfile::tempdir().unwrap();
    // Four date shards (as a job array per quarter would run them).
    let q = all.len() / 4;
    let bounds = [
        (&all[0], &all[q - 1]),
        (&all[q], &all[2 * q - 1]),
        (&all[2 * q], &all[3 * q - 1]),
        (&all[3 * q], &all[all.len() - 1]),
    ];
    let parts: Vec<PathBuf> = bounds
        .iter()
        .enumerate()
        .map(|(i, (f, to))| shard(&o, f, to, None, &t.path().join(format!("q{i}.state"))))
        .collect();
    let merged = json(&merge(&parts, &PeriodKind::ALL, 20, None).unwrap());
    assert!(single.len() > 10_000);
    assert!(merged == single, "date shards: merged report differs");
    // Host groups crossed with dates: nodes 0–1999 by half-year, the others (and the login
    // nodes) whole.
    let (first, mid, last) = (&all[0], &all[all.len() / 2], &all[all.len() - 1]);
    let next = &all[all.len() / 2 + 1];
    let hosts = [
        shard(&o, first, mid, Some("nid00[01]*"), &t.path().join("h1a")),
        shard(&o, next, last, Some("nid00[01]*"), &t.path().join("h1b")),
        shard(
            &o,
            first,
            last,
            Some("{nid00[2-9]*,login*}"),
            &t.path().join("h2"),
        ),
    ];
    let merged = json(&merge(&hosts, &PeriodKind::ALL, 20, None).unwrap());
    assert!(merged == single, "host shards: merged report differs");
    // A shard's state does not depend on thread scheduling: the same shard, the same bytes.
    let again = shard(&o, bounds[1].0, bounds[1].1, None, &t.path().join("again"));
    assert_eq!(
        std::fs::read(&parts[1]).unwrap(),
        std::fs::read(again).unwrap()
    );
}

#[test]
fn overlapping_or_differently_filtered_shards_are_refused() {
    let d = dataset(30_000, 4);
    let o = options(d.path(), None);
    let all = dates(d.path());
    let t = tempfile::tempdir().unwrap();
    let (a, m, z) = (&all[0], &all[all.len() / 2], &all[all.len() - 1]);
    let first = shard(&o, a, m, None, &t.path().join("a"));
    let overlapping = shard(&o, m, z, None, &t.path().join("b"));
    let err = merge(&[first.clone(), overlapping], &PeriodKind::ALL, 20, None).unwrap_err();
    assert!(matches!(err, AnalyzeError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains(&format!("date={m}")), "{err}");
    let mut f = o.clone();
    f.selection.filter = Some(Filter::parse("is_staff == false").unwrap());
    let next = &all[all.len() / 2 + 1];
    let filtered = shard(&f, next, z, None, &t.path().join("c"));
    let err = merge(&[first.clone(), filtered], &PeriodKind::ALL, 20, None).unwrap_err();
    assert!(err.to_string().contains("filter"), "{err}");
    // Not a state at all.
    let junk = t.path().join("junk");
    std::fs::write(&junk, b"date,package\n").unwrap();
    let err = merge(&[first, junk], &PeriodKind::ALL, 20, None).unwrap_err();
    assert!(
        err.to_string().contains("not a pyusage analysis state"),
        "{err}"
    );
}

/// Records of a host that was not there before, starting on `date`'s noon.
fn new_host_records(date: &str, n: usize) -> Vec<Record> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    let noon = day
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    stream(Params {
        rows: n,
        seed: 99,
        users: 10,
    })
    .enumerate()
    .map(|(i, mut r)| {
        r.host = "login-new".into();
        r.record_id = format!("new-{i}");
        r.seq = 1 + i as u64;
        r.process_start = noon + i as i64;
        r
    })
    .collect()
}

#[test]
fn the_cache_reuses_unchanged_partitions_and_notices_every_change() {
    let d = dataset(60_000, 5);
    let c = tempfile::tempdir().unwrap();
    let cold = |d: &Path| report(&options(d, None)).0;
    let cached = options(d.path(), Some(c.path()));
    let n = dates(d.path()).len() as u64;

    let (first, stats) = report(&cached);
    let s = stats.unwrap();
    assert_eq!((s.hits, s.misses, s.stale), (0, n, 0));
    assert!(
        first == cold(d.path()),
        "a filling run prints the cold report"
    );
    let (again, stats) = report(&cached);
    assert_eq!(stats.unwrap().hits, n, "every partition reused");
    assert!(again == first, "a cached run prints the cold report");

    // One more day of data: only that partition is read.
    let all = dates(d.path());
    let last = chrono::NaiveDate::parse_from_str(all.last().unwrap(), "%Y-%m-%d").unwrap();
    let new_day = (last + chrono::Days::new(1)).format("%Y-%m-%d").to_string();
    write(d.path(), &new_host_records(&new_day, 500)).unwrap();
    let (r, stats) = report(&cached);
    let s = stats.unwrap();
    assert_eq!((s.hits, s.misses, s.stale), (n, 1, 0));
    assert!(r == cold(d.path()), "new day");

    // A new host's file in an old partition.
    let old = &all[all.len() / 3];
    write(d.path(), &new_host_records(old, 300)).unwrap();
    let (r, stats) = report(&cached);
    let s = stats.unwrap();
    assert_eq!((s.misses, s.stale), (1, 1), "{s:?}");
    assert!(r == cold(d.path()), "new host in an old partition");

    // A file rewritten with other content, under the same name.
    let dir = d.path().join(format!("date={}", all[10]));
    let victim = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut records = pyusage_record::dataset::read(&victim).unwrap();
    records.truncate(records.len() / 2);
    std::fs::remove_file(&victim).unwrap();
    write(d.path(), &records).unwrap();
    assert!(victim.exists(), "same name (host + first seq)");
    let (r, stats) = report(&cached);
    assert_eq!(stats.unwrap().stale, 1);
    assert!(r == cold(d.path()), "rewritten file");

    // A deleted partition: its entry is dropped, its rows gone from the report.
    std::fs::remove_dir_all(d.path().join(format!("date={}", all[20]))).unwrap();
    let (r, stats) = report(&cached);
    let s = stats.unwrap();
    assert_eq!((s.misses, s.pruned), (0, 1), "{s:?}");
    assert!(r == cold(d.path()), "deleted partition");

    // A corrupt entry is a miss, not an error.
    let config = std::fs::read_dir(c.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let entry = config.join(format!("date={}.state", all[30]));
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&entry, bytes).unwrap();
    let (r, stats) = report(&cached);
    let s = stats.unwrap();
    assert_eq!((s.misses, s.stale), (1, 1), "{s:?}");
    assert!(r == cold(d.path()), "corrupt entry");

    // Another filter is another configuration: its own entries, its own report.
    let mut filtered = cached.clone();
    filtered.selection.filter = Some(Filter::parse("env_kind != conda").unwrap());
    let (r, stats) = report(&filtered);
    assert_eq!(stats.unwrap().hits, 0);
    let mut cold_filtered = options(d.path(), None);
    cold_filtered.selection.filter = filtered.selection.filter.clone();
    assert!(r == report(&cold_filtered).0);
    assert_eq!(std::fs::read_dir(c.path()).unwrap().count(), 2);
}
