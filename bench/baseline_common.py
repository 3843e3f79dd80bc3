"""What the two baselines (baseline_duckdb.py, baseline_polars.py) share: the report's tables
from integer counts, with the definitions of analysis/src/report.rs and counts.rs, and the
table-by-table check against pyusage's report.json. No data is read here: each baseline
computes the counts its own way (one scan, month-level keys rolled up), then hands them over.

Counts, per period kind (month, quarter, year, all) and bucket (the integer `bucket` of
counts.rs: year*12+month0, year*4+quarter0, year, 0), as plain dicts keyed by package name
(or (package, version), nodes, (package, bin), env kind, BLAS name):
  rows, by_user, by_job, by_process, signaled, versioned_users, version_users, env_kinds,
  package_env_kinds ((package, env kind) → processes), cpu_processes, cpu_us, cpu_split_ns
  (per package: processes with a known CPU time, their CPU µs, and split over their
  non-stdlib packages in ns, rounded down per process),
  jobs, job_sizes, job_packages, package_sizes, blas, and pairs: (rows, cols, matrix) with
  matrix[r][c] = jobs using both rows[r] and cols[c] (numpy array).
Sampled CPU (processes with cpu_sampling = 'sampled', each process's largest count per
package, non-stdlib packages): s_totals ([processes, samples, samples as µs] per bucket),
s_processes, s_own, s_incl, s_us (per package: sampled processes, self and inclusive samples,
self samples as µs = self * 10^6 // hz per process), s_callers ((package, caller) → samples),
and the distinct job counts s_jobs (jobs in which a sampled process imported the package) and
s_on (of those, jobs in which it had inclusive samples).
"""
import argparse
import json
import math
import sys

KINDS = ("month", "quarter", "year", "all")
SLICES = ("mpi4py", "multiprocessing", "dask")
MAX_PAIR_ROWS = 64
MAX_NODES = 1 << 16
# The columns the analysis reads (analysis/src/scan.rs).
COLUMNS = ["package", "username", "uid", "job_id", "host", "pid", "process_start", "num_nodes",
           "is_staff", "is_compute", "version", "env_kind", "blas", "exit"]


def bucket(kind, m):
    """counts.rs PeriodKind::bucket of a month (year * 12 + month0)."""
    if kind == "month":
        return m
    if kind == "quarter":
        return (m // 12) * 4 + (m % 12) // 3
    if kind == "year":
        return m // 12
    return 0


def label(kind, b):
    if kind == "month":
        return f"{b // 12}-{b % 12 + 1:02}"
    if kind == "quarter":
        return f"{b // 4}-Q{b % 4 + 1}"
    if kind == "year":
        return str(b)
    return "all"


TABLES = ("rows", "by_process", "signaled", "env_kinds", "by_user", "versioned_users",
          "version_users", "by_job", "job_packages", "package_sizes", "jobs", "job_sizes", "blas",
          "package_env_kinds", "cpu_processes", "cpu_us", "cpu_split_ns", "s_totals",
          "s_processes", "s_own", "s_incl", "s_us", "s_callers", "s_jobs", "s_on")


def kind_counts(kind, months, month_rows, procs, envs, pkg_envs, cpu, sampled):
    """The counts of one granularity, started with what adds up over months: rows, processes
    (all and signalled), environment kinds and (package, environment kind) processes, CPU
    time, and the sampled CPU's process-level sums (`sampled`: (month, processes, samples, µs),
    (month, package, processes, self, inclusive, self µs) and (month, package, caller,
    samples) rows), from (month, …) rows. Returns the counts and an `add(table, bucket, key,
    n)` for the distinct counts the caller's engine computes."""
    c = {"buckets": sorted({bucket(kind, m) for m in months})}
    for name in TABLES:
        c[name] = {}

    def add(table, b, key, v):
        d = c[table].setdefault(b, {})
        d[key] = d.get(key, 0) + v

    for m, n in month_rows:
        b = bucket(kind, m)
        c["rows"][b] = c["rows"].get(b, 0) + n
    for m, p, n, s in procs:
        add("by_process", bucket(kind, m), p, n)
        add("signaled", bucket(kind, m), p, s)
    for m, e, n in envs:
        add("env_kinds", bucket(kind, m), e, n)
    for m, p, e, n in pkg_envs:
        add("package_env_kinds", bucket(kind, m), (p, e), n)
    for m, p, n, us, ns in cpu:
        for table, v in (("cpu_processes", n), ("cpu_us", us), ("cpu_split_ns", ns)):
            add(table, bucket(kind, m), p, v)
    totals, packages, callers = sampled
    for m, n, samples, us in totals:
        t = c["s_totals"].setdefault(bucket(kind, m), [0, 0, 0])
        for i, v in enumerate((n, samples, us)):
            t[i] += v
    for m, p, n, own, incl, us in packages:
        for table, v in (("s_processes", n), ("s_own", own), ("s_incl", incl), ("s_us", us)):
            add(table, bucket(kind, m), p, v)
    for m, p, q, n in callers:
        add("s_callers", bucket(kind, m), (p, q), n)
    return c, add


def node_bin(n):
    """model.rs node_bin: 0 for one node, k for (2^(k-1), 2^k]."""
    return (max(n, 1) - 1).bit_length()


def pearson(n, a, b, ab):
    # The same formula, in the same order, as counts::pearson: bit-identical results.
    n, a, b, ab = float(n), float(a), float(b), float(ab)
    cov = n * ab - a * b
    var = (n * a - a * a) * (n * b - b * b)
    return cov / math.sqrt(var) if var > 0.0 else None


def share(part, whole):
    return part / whole if whole > 0 else None


def clamp_top(top):
    return max(1, min(top, MAX_PAIR_ROWS - len(SLICES)))


def pair_rows(job_packages, top):
    """counts::pair_rows: the `top` packages by jobs (count descending, then name), then the
    slice packages present; at most 64."""
    ids = sorted((p for p, c in job_packages.items() if c > 0), key=lambda p: (-job_packages[p], p))
    rows = ids[:top]
    for s in SLICES:
        if job_packages.get(s, 0) > 0 and s not in rows:
            rows.append(s)
    return rows[:MAX_PAIR_ROWS]


def ranked(d, top):
    v = sorted(((p, c) for p, c in d.items() if c > 0), key=lambda x: (-x[1], x[0]))
    return [{"package": p, "count": c} for p, c in v[:top]]


def shares(m, of=None):
    if of is None:
        of = sum(m.values())
    v = sorted(m.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"key": k, "count": c, "of": of, "share": share(c, of)} for k, c in v]


def period(kind, b, c, months, top):
    """One period's tables, as pyusage's report.json has them (report.rs Period::report)."""
    g = lambda table: c[table].get(b, {})  # noqa: E731
    by_user = ranked(g("by_user"), top)
    by_process = ranked(g("by_process"), top)
    singles = g("job_packages")
    n = c["jobs"].get(b, 0)
    rows, cols, mat = c["pairs"].get(b, ([], [], None))
    col = {p: i for i, p in enumerate(cols)}

    def pair(r, q):
        i = col.get(q)
        return int(mat[r, i]) if i is not None else 0

    def corr(r, q):
        return pearson(n, singles.get(rows[r], 0), singles.get(q, 0), pair(r, q))

    shown = list(range(min(len(rows), top)))
    matrix = [[corr(r, rows[q]) for q in shown] for r in shown]
    slices = {}
    for s in SLICES:
        if s not in rows:
            continue
        r = rows.index(s)
        v = [(q, corr(r, q)) for q, cnt in singles.items() if cnt > 0 and q != s]
        v = [[q, x] for q, x in v if x is not None]
        v.sort(key=lambda qx: (-qx[1], qx[0]))
        slices[s] = v[:top]
    versions = {}
    vu = g("version_users")
    per_pkg = {}
    for (p, ver), cnt in vu.items():
        if cnt > 0:
            per_pkg.setdefault(p, {})[ver] = cnt
    for x in by_user:
        p = x["package"]
        if per_pkg.get(p):
            versions[p] = shares(per_pkg[p], g("versioned_users").get(p, 0))
    sig = g("signaled")
    sizes = g("package_sizes")
    by_size = {}
    for (p, bn), cnt in sizes.items():
        if cnt > 0 and singles.get(p, 0) > 0:
            by_size.setdefault(p, {})[str(1 << bn)] = cnt
    in_period = [m for m in months["buckets"] if bucket(kind, m) == b]
    mu = months["by_user"]
    users, jobs_, procs = g("by_user"), g("by_job"), g("by_process")
    every = [p for p in set(users) | set(procs) if users.get(p, 0) > 0 or procs.get(p, 0) > 0]
    package_counts = sorted(
        ({"package": p, "users": users.get(p, 0), "jobs": jobs_.get(p, 0),
          "processes": procs.get(p, 0)} for p in every),
        key=lambda x: (-x["users"], x["package"]))
    pe = {}
    for (p, e), cnt in g("package_env_kinds").items():
        if cnt > 0:
            pe.setdefault(p, {})[e] = cnt
    package_env_kinds = {x["package"]: shares(pe.get(x["package"], {}), x["count"])
                         for x in by_process}
    cn, cus, cns = g("cpu_processes"), g("cpu_us"), g("cpu_split_ns")
    cpu = sorted((p for p, n in cn.items() if n > 0), key=lambda p: (-cns.get(p, 0), p))[:top]
    cpu_by_package = [{"package": p, "processes": cn[p], "cpu_hours": cus.get(p, 0) / 3.6e9,
                       "cpu_hours_split": cns.get(p, 0) / 3.6e12} for p in cpu]
    # Sampled CPU (report.rs sampled_cpu_by_package, imported_not_on_cpu, package_callers).
    st = c["s_totals"].get(b, [0, 0, 0])
    sn, so, si, su, sj, son = (g(t) for t in ("s_processes", "s_own", "s_incl", "s_us", "s_jobs", "s_on"))
    srows = sorted((p for p, n in sn.items() if n > 0), key=lambda p: (-so.get(p, 0), p))[:top]
    sampled_cpu_by_package = [
        {"package": p, "processes": sn[p], "jobs": sj.get(p, 0), "self_samples": so.get(p, 0),
         "inclusive_samples": si.get(p, 0), "self_share": share(so.get(p, 0), st[1]),
         "inclusive_share": share(si.get(p, 0), st[1]), "cpu_hours_self": su.get(p, 0) / 3.6e9}
        for p in srows]
    idle = sorted((p for p, n in sj.items() if n > 0), key=lambda p: (-sj[p], p))[:top]
    imported_not_on_cpu = [
        {"package": p, "jobs": sj[p], "jobs_on_cpu": son.get(p, 0),
         "share_never_on_cpu": share(sj[p] - son.get(p, 0), sj[p])} for p in idle]
    by_callee = {}
    for (p, q), k in g("s_callers").items():
        if k > 0:
            by_callee.setdefault(p, {})[q] = k
    package_callers = {}
    for x in sampled_cpu_by_package:
        own = x["self_samples"]
        cs = shares(by_callee.get(x["package"], {}), own)[:top]
        if own > 0 and cs:
            package_callers[x["package"]] = cs
    return {
        "period": label(kind, b),
        "rows": c["rows"].get(b, 0),
        "top_packages_by_user": by_user,
        "top_packages_by_job": ranked(g("by_job"), top),
        "top_packages_by_process": by_process,
        "job_sizes": {str(k): v for k, v in sorted(g("job_sizes").items()) if v > 0},
        "package_by_job_size": by_size,
        "correlation": {
            "jobs": n,
            "packages": [rows[r] for r in shown],
            "matrix": matrix,
            "clip_view": [0.6, 0.8],
        },
        "correlation_slices": slices,
        "versions": versions,
        "env_kinds": shares({k: v for k, v in g("env_kinds").items() if v > 0}),
        "blas_in_numpy_jobs": shares({k: v for k, v in g("blas").items() if v > 0}),
        "signaled": [{"key": x["package"], "count": sig.get(x["package"], 0), "of": x["count"],
                      "share": share(sig.get(x["package"], 0), x["count"])} for x in by_process],
        "monthly_users": {x["package"]: {label("month", m): mu.get(m, {}).get(x["package"], 0)
                                         for m in in_period} for x in by_user},
        "package_counts": package_counts,
        "package_env_kinds": package_env_kinds,
        "cpu_by_package": cpu_by_package,
        "sampled_cpu": {"processes": st[0], "samples": st[1], "cpu_hours": st[2] / 3.6e9},
        "sampled_cpu_by_package": sampled_cpu_by_package,
        "imported_not_on_cpu": imported_not_on_cpu,
        "package_callers": package_callers,
    }


def report(counts, top):
    """{kind: [period, ...]} from {kind: counts}; counts["month"] must be present."""
    months = {"buckets": counts["month"]["buckets"], "by_user": counts["month"]["by_user"]}
    return {kind: [period(kind, b, c, months, top) for b in c["buckets"]]
            for kind, c in counts.items()}


def check(tool, ours, report_path):
    """Compares every table of every period with pyusage's report; prints and returns 0 when
    all agree, else lists mismatches and returns 1."""
    rep = json.load(open(report_path))["periods"]
    bad = []
    periods = tables = 0
    if sorted(rep) != sorted(ours):
        bad.append(f"period kinds: pyusage {sorted(rep)}, {tool} {sorted(ours)}")
    for kind in rep:
        theirs, mine = rep[kind], ours.get(kind, [])
        if [p["period"] for p in theirs] != [p["period"] for p in mine]:
            bad.append(f"{kind} periods: pyusage {[p['period'] for p in theirs]}, "
                       f"{tool} {[p['period'] for p in mine]}")
            continue
        for a, b in zip(theirs, mine):
            periods += 1
            for t in sorted(set(a) | set(b)):
                tables += 1
                if a.get(t) != b.get(t):
                    bad.append(f"{kind} {a['period']} {t}:\n  pyusage {str(a.get(t))[:400]}\n"
                               f"  {tool:7} {str(b.get(t))[:400]}")
    if bad:
        print("\n".join(bad[:20]))
        print(f"{tool}: {len(bad)} mismatches ({periods} periods, {tables} tables compared)")
        return 1
    print(f"{tool} agrees on {periods} periods, {tables} tables")
    return 0


def args(doc):
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("dataset", help="dataset root (date=YYYY-MM-DD/*.parquet)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--top", type=int, default=None,
                    help="packages per top list (default: the report's under --check, else 20)")
    ap.add_argument("--check", metavar="REPORT.json",
                    help="compare every table of every period with pyusage's report")
    ap.add_argument("--out", metavar="FILE", help="write the periods as JSON")
    a = ap.parse_args()
    if a.top is None:
        a.top = json.load(open(a.check)).get("top", 20) if a.check else 20
    return a


def finish(tool, a, periods, seconds):
    """Prints the compute time, writes --out, runs --check (not timed); exits."""
    print(f"{tool}: {seconds:.2f} s ({sum(len(v) for v in periods.values())} periods)", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"periods": periods}, f)
    if a.check:
        sys.exit(check(tool, periods, a.check))
