"""The tables of `pyusage analyze`, computed independently with DuckDB SQL from the same
Parquet dataset (a test helper and a benchmark baseline; not a runtime dependency).

    duckdb_tables.py check DATASET REPORT.json   # compare with pyusage's report; exit 1 on a mismatch
    duckdb_tables.py bench DATASET [THREADS]     # compute every table of every period, print seconds

Definitions follow docs/analysis.md: rows with is_staff = false; job-based tables also need
is_compute and a job; processes are (host, pid, process_start); users are username, else
"uid:<n>"; node bins are named by their largest node count (2^k). Sampled CPU: rows of
processes with cpu_sampling = 'sampled' (and a rate and counts), each process's largest count
per package, non-stdlib packages.
"""
import json
import math
import sys
import time

import duckdb

PERIODS = {
    "month": "strftime(ts, '%Y-%m')",
    "quarter": "CAST(year(ts) AS VARCHAR) || '-Q' || CAST(quarter(ts) AS VARCHAR)",
    "year": "CAST(year(ts) AS VARCHAR)",
    "all": "'all'",
}
SLICES = ["mpi4py", "multiprocessing", "dask"]


def connect(root, threads=None):
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    src = f"read_parquet('{root}/date=*/*.parquet')"
    cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    # Datasets older than the CPU-time columns: unknown CPU time.
    cpu = "cpu_user_us + cpu_sys_us" if {"cpu_user_us", "cpu_sys_us"} <= cols else "CAST(NULL AS BIGINT)"
    # Older than the sampler's columns: nothing sampled.
    if {"cpu_sampling", "cpu_sample_hz", "cpu_samples_total", "cpu_samples_self",
            "cpu_samples_inclusive", "cpu_samples_callers"} <= cols:
        samples = """cpu_sampling = 'sampled' AND cpu_sample_hz > 0 AND cpu_samples_total IS NOT NULL
                     AND cpu_samples_self IS NOT NULL AND cpu_samples_inclusive IS NOT NULL AS samp,
                     cpu_sample_hz AS hz, cpu_samples_total AS tot, cpu_samples_self AS own,
                     cpu_samples_inclusive AS incl, cpu_samples_callers AS callers"""
    else:
        samples = """false AS samp, CAST(NULL AS UINTEGER) AS hz, CAST(NULL AS UBIGINT) AS tot,
                     CAST(NULL AS UBIGINT) AS own, CAST(NULL AS UBIGINT) AS incl,
                     CAST([] AS STRUCT(package VARCHAR, samples UBIGINT)[]) AS callers"""
    con.execute(
        f"""CREATE VIEW t AS SELECT package, version, env_kind, blas, exit, job_id, num_nodes, {cpu} AS cpu,
              {samples},
              is_compute, coalesce(username, 'uid:' || CAST(uid AS VARCHAR)) AS u,
              (host, pid, process_start) AS proc,
              make_timestamp(epoch_us(process_start)) AS ts
            FROM read_parquet('{root}/date=*/*.parquet') WHERE NOT is_staff"""
    )
    return con


def tables(con, kind):
    """Every table of one granularity: {name: rows}."""
    P = PERIODS[kind]
    job = "is_compute AND job_id IS NOT NULL"
    binx = "CASE WHEN num_nodes <= 1 THEN 1 ELSE CAST(pow(2, ceil(log2(num_nodes))) AS BIGINT) END"
    q = {
        "rows": f"SELECT {P}, count(*) FROM t GROUP BY ALL",
        "user": f"SELECT {P}, package, count(DISTINCT u) FROM t GROUP BY ALL",
        "job": f"SELECT {P}, package, count(DISTINCT job_id) FROM t WHERE job_id IS NOT NULL GROUP BY ALL",
        "process": f"SELECT {P}, package, count(DISTINCT proc) FROM t GROUP BY ALL",
        "jobs": f"SELECT {P}, count(DISTINCT job_id) FROM t WHERE {job} GROUP BY ALL",
        "job_sizes": f"SELECT {P}, num_nodes, count(DISTINCT job_id) FROM t WHERE {job} GROUP BY ALL",
        "singles": f"SELECT {P}, package, count(DISTINCT job_id) FROM t WHERE {job} GROUP BY ALL",
        "pkg_size": f"SELECT {P}, package, {binx}, count(DISTINCT job_id) FROM t WHERE {job} GROUP BY ALL",
        "pairs": f"""WITH jp AS (SELECT DISTINCT {P} AS p, job_id, package FROM t WHERE {job})
                   SELECT a.p, a.package, b.package, count(*) FROM jp a JOIN jp b
                   ON a.p = b.p AND a.job_id = b.job_id GROUP BY ALL""",
        "versions": f"SELECT {P}, package, version, count(DISTINCT u) FROM t WHERE version IS NOT NULL GROUP BY ALL",
        "versioned": f"SELECT {P}, package, count(DISTINCT u) FROM t WHERE version IS NOT NULL GROUP BY ALL",
        "env": f"SELECT {P}, env_kind, count(DISTINCT proc) FROM t WHERE env_kind <> 'stdlib' GROUP BY ALL",
        "blas": f"""WITH jb AS (SELECT {P} AS p, job_id,
                       list(DISTINCT blas) FILTER (WHERE blas IS NOT NULL) AS bs
                     FROM t WHERE package IN ('numpy', 'scipy') AND job_id IS NOT NULL GROUP BY ALL),
                   x AS (SELECT p, unnest(CASE WHEN coalesce(len(bs), 0) = 0 THEN ['unknown'] ELSE bs END) AS b FROM jb)
                   SELECT p, b, count(*) FROM x GROUP BY ALL""",
        "cpu": f"""WITH p AS (SELECT {P} AS p, proc, max(cpu) AS cpu FROM t GROUP BY ALL),
                   k AS (SELECT DISTINCT {P} AS p, proc, package FROM t WHERE env_kind <> 'stdlib'),
                   n AS (SELECT p, proc, count(*) AS n FROM k GROUP BY ALL)
                   SELECT k.p, k.package, count(*), sum(p.cpu), sum(p.cpu * 1000 // n.n)
                   FROM k JOIN p USING (p, proc) JOIN n USING (p, proc)
                   WHERE p.cpu IS NOT NULL GROUP BY ALL""",
        "pkg_env": f"SELECT {P}, package, env_kind, count(DISTINCT proc) FROM t WHERE env_kind IS NOT NULL GROUP BY ALL",
        # Sampled CPU: each sampled process's largest counts (its final record's).
        "s_total": f"""WITH p AS (SELECT {P} AS p, proc, max(tot) AS tot, max(tot * 1000000 // hz) AS us
                                 FROM t WHERE samp GROUP BY ALL)
                       SELECT p, count(*), sum(tot), sum(us) FROM p GROUP BY ALL""",
        "s_pkg": f"""WITH x AS (SELECT {P} AS p, proc, package, max(own) AS own, max(incl) AS incl,
                                      max(own * 1000000 // hz) AS us
                               FROM t WHERE samp AND env_kind <> 'stdlib' GROUP BY ALL)
                     SELECT p, package, count(*), sum(own), sum(incl), sum(us) FROM x GROUP BY ALL""",
        "s_jobs": f"""SELECT {P}, package, count(DISTINCT job_id), count(DISTINCT job_id) FILTER (WHERE incl > 0)
                      FROM t WHERE samp AND env_kind <> 'stdlib' AND job_id IS NOT NULL GROUP BY ALL""",
        "s_callers": f"""WITH x AS (SELECT {P} AS p, proc, package, unnest(callers) AS c FROM t
                                    WHERE samp AND env_kind <> 'stdlib'),
                              m AS (SELECT p, proc, package, x.c.package AS caller, max(x.c.samples) AS n
                                    FROM x WHERE x.c.package <> x.package GROUP BY ALL)
                         SELECT p, package, caller, sum(n) FROM m GROUP BY ALL""",
        "signaled": f"""SELECT {P}, package, count(DISTINCT proc) FILTER (WHERE exit = 'signaled'),
                       count(DISTINCT proc) FROM t GROUP BY ALL""",
    }
    return {name: con.execute(sql).fetchall() for name, sql in q.items()}


def pearson(n, a, b, ab):
    # The same formula, in the same order, as counts::pearson.
    n, a, b, ab = float(n), float(a), float(b), float(ab)
    cov = n * ab - a * b
    var = (n * a - a * a) * (n * b - b * b)
    return cov / math.sqrt(var) if var > 0 else None


def ranked(d, top):
    return sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def by_period(rows, width):
    """{period: {key: value}} from (period, *key, value) rows."""
    out = {}
    for r in rows:
        key = r[1:width + 1] if width > 1 else r[1]
        out.setdefault(r[0], {})[key] = r[width + 1] if len(r) == width + 2 else r[width + 1:]
    return out


def check(root, report_path):
    rep = json.load(open(report_path))
    top = rep["top"]
    con = connect(root)
    months = by_period(tables(con, "month")["user"], 1)
    failures = []

    def same(what, ours, theirs):
        if ours != theirs:
            failures.append(f"{what}:\n  pyusage {ours}\n  duckdb  {theirs}")

    compared = 0
    for kind, reports in rep["periods"].items():
        t = tables(con, kind)
        rows = dict(t["rows"])
        user, job, proc = (by_period(t[k], 1) for k in ("user", "job", "process"))
        jobs = dict(t["jobs"])
        sizes = by_period(t["job_sizes"], 1)
        singles = by_period(t["singles"], 1)
        pkg_size = by_period(t["pkg_size"], 2)
        pairs = by_period(t["pairs"], 2)
        versions = by_period(t["versions"], 2)
        versioned = by_period(t["versioned"], 1)
        env = by_period(t["env"], 1)
        blas = by_period(t["blas"], 1)
        sig = by_period(t["signaled"], 1)
        pkg_env = by_period(t["pkg_env"], 2)
        cpu = by_period(t["cpu"], 1)
        s_total = {r[0]: r[1:] for r in t["s_total"]}
        s_pkg = by_period(t["s_pkg"], 1)
        s_jobs = by_period(t["s_jobs"], 1)
        s_callers = by_period(t["s_callers"], 2)
        for r in reports:
            p = r["period"]
            w = f"{kind} {p}"
            compared += 1
            same(f"{w} rows", r["rows"], rows.get(p, 0))
            for name, d in (("user", user), ("job", job), ("process", proc)):
                same(f"{w} top by {name}", [(c["package"], c["count"]) for c in r[f"top_packages_by_{name}"]],
                     [(k, v) for k, v in ranked(d.get(p, {}), top)])
            same(f"{w} job sizes", {int(k): v for k, v in r["job_sizes"].items()}, sizes.get(p, {}))
            ours = {(pk, int(n)): c for pk, m in r["package_by_job_size"].items() for n, c in m.items()}
            same(f"{w} package x job size", ours, pkg_size.get(p, {}))
            n = jobs.get(p, 0)
            same(f"{w} jobs", r["correlation"]["jobs"], n)
            s = singles.get(p, {})
            pr = pairs.get(p, {})
            corr = lambda a, b: pearson(n, s.get(a, 0), s.get(b, 0), pr.get((a, b), 0))
            pk = r["correlation"]["packages"]
            same(f"{w} correlation", r["correlation"]["matrix"], [[corr(a, b) for b in pk] for a in pk])
            for sl, lst in r["correlation_slices"].items():
                theirs = [(q, corr(sl, q)) for q in s if q != sl and corr(sl, q) is not None]
                theirs = sorted(theirs, key=lambda x: (-x[1], x[0]))[:top]
                same(f"{w} slice {sl}", [tuple(x) for x in lst], theirs)
            for pkg, lst in r["versions"].items():
                of = versioned.get(p, {}).get(pkg, 0)
                vs = {v: c for (pk2, v), c in versions.get(p, {}).items() if pk2 == pkg}
                same(f"{w} versions {pkg}", [(x["key"], x["count"], x["of"]) for x in lst],
                     [(v, c, of) for v, c in sorted(vs.items(), key=lambda kv: (-kv[1], kv[0]))])
            for name, d in (("env_kinds", env), ("blas_in_numpy_jobs", blas)):
                d = d.get(p, {})
                tot = sum(d.values())
                same(f"{w} {name}", [(x["key"], x["count"], x["of"]) for x in r[name]],
                     [(k, c, tot) for k, c in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))])
            sg = sig.get(p, {})
            same(f"{w} signaled", [(x["key"], x["count"], x["of"]) for x in r["signaled"]],
                 [(c["package"], sg[c["package"]][0], sg[c["package"]][1]) for c in r["top_packages_by_process"]])
            u, j, pr_ = (d.get(p, {}) for d in (user, job, proc))
            theirs = [(k, u.get(k, 0), j.get(k, 0), pr_.get(k, 0)) for k in set(u) | set(pr_)]
            same(f"{w} package counts", [(c["package"], c["users"], c["jobs"], c["processes"]) for c in r["package_counts"]],
                 sorted(theirs, key=lambda x: (-x[1], x[0])))
            same(f"{w} package env kinds packages", sorted(r["package_env_kinds"]),
                 sorted(c["package"] for c in r["top_packages_by_process"]))
            for pkg, lst in r["package_env_kinds"].items():
                of = pr_.get(pkg, 0)
                es = {e: c for (pk2, e), c in pkg_env.get(p, {}).items() if pk2 == pkg}
                same(f"{w} env kinds of {pkg}", [(x["key"], x["count"], x["of"]) for x in lst],
                     [(e, c, of) for e, c in sorted(es.items(), key=lambda kv: (-kv[1], kv[0]))])
            cp = sorted(cpu.get(p, {}).items(), key=lambda kv: (-kv[1][2], kv[0]))[:top]
            same(f"{w} cpu by package",
                 [(x["package"], x["processes"], x["cpu_hours"], x["cpu_hours_split"]) for x in r["cpu_by_package"]],
                 [(k, n, us / 3.6e9, ns / 3.6e12) for k, (n, us, ns) in cp])
            for pkg, per in r["monthly_users"].items():
                same(f"{w} monthly {pkg}", per, {m: months[m].get(pkg, 0) for m in per})
            # Sampled CPU.
            n_s, all_s, us_s = s_total.get(p, (0, 0, 0))
            same(f"{w} sampled cpu", r["sampled_cpu"],
                 {"processes": n_s, "samples": all_s or 0, "cpu_hours": (us_s or 0) / 3.6e9})
            sp, sj = s_pkg.get(p, {}), s_jobs.get(p, {})
            share_of = lambda part, whole: part / whole if whole else None  # noqa: E731
            rows_s = sorted(sp.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top]
            same(f"{w} sampled cpu by package",
                 [(x["package"], x["processes"], x["jobs"], x["self_samples"], x["inclusive_samples"],
                   x["self_share"], x["inclusive_share"], x["cpu_hours_self"]) for x in r["sampled_cpu_by_package"]],
                 [(k, n, sj.get(k, (0, 0))[0], own, incl, share_of(own, all_s), share_of(incl, all_s), us / 3.6e9)
                  for k, (n, own, incl, us) in rows_s])
            idle = sorted(sj.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
            same(f"{w} imported not on cpu",
                 [(x["package"], x["jobs"], x["jobs_on_cpu"], x["share_never_on_cpu"]) for x in r["imported_not_on_cpu"]],
                 [(k, j, on, share_of(j - on, j)) for k, (j, on) in idle])
            sc = s_callers.get(p, {})
            theirs = {}
            for k, (n, own, incl, us) in rows_s:
                cs = sorted(((c, m) for (pk2, c), m in sc.items() if pk2 == k and m > 0),
                            key=lambda x: (-x[1], x[0]))[:top]
                if own > 0 and cs:
                    theirs[k] = [(c, m, own, share_of(m, own)) for c, m in cs]
            same(f"{w} package callers",
                 {k: [(x["key"], x["count"], x["of"], x["share"]) for x in v] for k, v in r["package_callers"].items()},
                 theirs)
    if failures:
        print("\n".join(failures[:20]))
        print(f"{len(failures)} mismatches")
        sys.exit(1)
    print(f"duckdb agrees on {compared} periods")


def bench(root, threads):
    con = connect(root, threads)
    t0 = time.time()
    n = 0
    for kind in PERIODS:
        n += sum(len(v) for v in tables(con, kind).values())
    print(f"duckdb: {time.time() - t0:.2f} s ({n} result rows)")


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        bench(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
