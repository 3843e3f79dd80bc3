"""pyusage's report tables computed with DuckDB, as an expert user would write them.

    baseline_duckdb.py DATASET [--threads N] [--check REPORT.json] [--top N] [--out FILE]

- One scan of the Parquet files into a narrow in-memory table: only the columns used, the
  month key (year * 12 + month0 of process_start, UTC) and the node bin computed once, the
  user label (username, else 'uid:<n>'), 64-bit hashes for the process (host, pid,
  process_start) and the job id, ENUM types for the low-cardinality strings (package,
  version, environment kind, BLAS). DuckDB needs an ENUM's values before casting to it, so
  the domains of those four dictionary-encoded columns are read first (one small query);
  materialising them as VARCHAR instead costs several times more.
- Month-level keys built once from it — (month, package, user, version), (month, job,
  package, node bin or off compute nodes), (month, job, nodes) on compute nodes, (month,
  job, BLAS) — and rolled up to quarters, years and `all` by mapping months to buckets and
  counting distinct again (distinct counts do not add across months; keys do). Per-process
  counts are per month and add up (a process starts in one month). For the job tables, the
  jobs seen in one month only are counted once per month and added up; only the few jobs
  over several months have their keys rolled up per bucket.
- Co-occurrence: each job's package set, jobs grouped by set (per month once, the same
  split), then over the distinct sets C = Sᵀ·diag(n)·S for the pair-row packages (each
  set's 64-bit mask over the pair rows, expanded with numpy).
Floats, orders and the pair-row choice are those of pyusage (baseline_common.py).
"""
import os
import sys
import time

import duckdb
import numpy as np

import baseline_common as bc

# Bucket of a month (m = year * 12 + month0) per kind, in SQL.
BUCKET = {
    "month": "m",
    "quarter": "(m // 12) * 4 + (m % 12) // 3",
    "year": "m // 12",
    "all": "0",
}
# model.rs node_bin: how many of 1, 2, 4, …, 32768 are below the node count.
BIN = " + ".join(f"(nodes > {1 << j})::UTINYINT" for j in range(16))


def run(root, threads, top):
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    verbose = bool(os.environ.get("BASELINE_TIMES"))
    t0 = [time.time()]

    def ex(sql):
        r = con.execute(sql)
        if verbose:
            print(f"  {time.time() - t0[0]:5.2f} {' '.join(sql.split())[:90]}", file=sys.stderr)
            t0[0] = time.time()
        return r

    def q(sql):
        return ex(sql).fetchall()

    src = f"read_parquet('{root}/date=*/*.parquet', hive_partitioning = false)"
    # ENUM types need their values first: the domains of the four low-cardinality string
    # columns (dictionary-encoded, so cheap to read), then strings are never materialised.
    doms = ex(f"""SELECT list(DISTINCT package), list(DISTINCT version), list(DISTINCT env_kind),
                         list(DISTINCT blas) FROM {src}""").fetchone()
    for typ, dom in zip(("pk", "ver", "envk", "bl"), doms):
        values = ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(v for v in dom if v is not None) or [""])
        con.execute(f"CREATE TYPE {typ} AS ENUM ({values})")
    # The one scan: narrow, typed, keys computed once.
    ex(f"""CREATE TEMP TABLE t AS
        SELECT CAST(year(s) * 12 + month(s) - 1 AS USMALLINT) AS m,
               package::pk AS package, version::ver AS version, env_kind::envk AS env,
               blas::bl AS blas,
               CASE WHEN username IS NULL THEN hash('uid:' || CAST(uid AS VARCHAR))
                    ELSE hash(username) END AS u,
               CASE WHEN job_id IS NOT NULL THEN hash(job_id) END AS job,
               hash(host, pid, process_start) AS proc,
               CAST(least(num_nodes, {bc.MAX_NODES - 1}) AS USMALLINT) AS nodes,
               is_compute AS compute, exit = 'signaled' AS sig,
               package IN ('numpy', 'scipy') AS numpyish, env_kind <> 'stdlib' AS nonstd,
               cpu_user_us + cpu_sys_us AS cpu,
               coalesce(cpu_sampling = 'sampled' AND cpu_sample_hz > 0
                        AND cpu_samples_total IS NOT NULL AND cpu_samples_self IS NOT NULL
                        AND cpu_samples_inclusive IS NOT NULL, false) AS samp,
               cpu_sample_hz AS hz, cpu_samples_total AS tot, cpu_samples_self AS own,
               cpu_samples_inclusive AS incl, cpu_samples_callers AS callers
        FROM (SELECT *, make_timestamp(epoch_us(process_start)) AS s FROM {src}
              WHERE NOT is_staff)""")
    # Month-level keys: users by package and version; (month, job, package, node bin on a
    # compute node, or 255 off them); the node counts of each job on compute nodes; the BLAS
    # seen in numpy/scipy jobs.
    ex("CREATE TEMP TABLE ku AS SELECT DISTINCT m, package, u, version FROM t")
    ex(f"""CREATE TEMP TABLE kj AS
           SELECT DISTINCT m, job, package,
                  CASE WHEN compute THEN ({BIN}) ELSE CAST(255 AS UTINYINT) END AS bin
           FROM t WHERE job IS NOT NULL""")
    ex("CREATE TEMP TABLE kn AS SELECT DISTINCT m, job, nodes FROM t WHERE job IS NOT NULL AND compute")
    ex("CREATE TEMP TABLE kb AS SELECT DISTINCT m, job, blas FROM t WHERE job IS NOT NULL AND numpyish")
    # Per-month counts that add up over months: rows, processes, environment kinds.
    month_rows = q("SELECT m, count(*) FROM t GROUP BY ALL")
    procs = q("""SELECT m, package, count(*), count(*) FILTER (sig) FROM
                 (SELECT m, package, proc, bool_or(sig) AS sig FROM t GROUP BY ALL)
                 GROUP BY ALL""")
    envs = q("""SELECT m, env, count(*) FROM (SELECT DISTINCT m, env, proc FROM t WHERE nonstd)
                GROUP BY ALL""")
    pkg_envs = q("""SELECT m, package, env, count(*) FROM
                    (SELECT DISTINCT m, package, env, proc FROM t WHERE env IS NOT NULL)
                    GROUP BY ALL""")
    # CPU time per process (its largest record), charged to its non-stdlib packages.
    cpu = q("""WITH p AS (SELECT m, proc, max(cpu) AS cpu FROM t GROUP BY ALL),
                    k AS (SELECT DISTINCT m, proc, package FROM t WHERE nonstd),
                    n AS (SELECT m, proc, count(*) AS n FROM k GROUP BY ALL)
               SELECT k.m, k.package, count(*), sum(p.cpu), sum(p.cpu * 1000 // n.n)
               FROM k JOIN p USING (m, proc) JOIN n USING (m, proc)
               WHERE p.cpu IS NOT NULL GROUP BY ALL""")
    # Sampled CPU: each sampled process's largest counts (its final record's), per month;
    # the jobs in which a sampled process imported a package (and had it on the CPU).
    s_totals = q("""SELECT m, count(*), sum(tot), sum(us) FROM
                    (SELECT m, proc, max(tot) AS tot, max(tot * 1000000 // hz) AS us
                     FROM t WHERE samp GROUP BY ALL) GROUP BY ALL""")
    s_pkgs = q("""SELECT m, package, count(*), sum(own), sum(incl), sum(us) FROM
                  (SELECT m, proc, package, max(own) AS own, max(incl) AS incl,
                          max(own * 1000000 // hz) AS us
                   FROM t WHERE samp AND nonstd GROUP BY ALL) GROUP BY ALL""")
    s_callers = q("""WITH x AS (SELECT m, proc, package, unnest(callers) AS c FROM t
                                WHERE samp AND nonstd)
                     SELECT m, package, caller, sum(n) FROM
                     (SELECT m, proc, package, x.c.package AS caller, max(x.c.samples) AS n FROM x
                      WHERE x.c.package <> CAST(x.package AS VARCHAR) GROUP BY ALL) GROUP BY ALL""")
    ex("""CREATE TEMP TABLE ks AS SELECT DISTINCT m, job, package, incl > 0 AS oncpu FROM t
          WHERE samp AND nonstd AND job IS NOT NULL""")
    sampled = (s_totals, s_pkgs, s_callers)
    ex("DROP TABLE t")
    months = sorted(m for m, _ in month_rows)

    # Jobs over several months (rare): their keys are rolled up per bucket; every other
    # job's counts add up over months.
    ex("""CREATE TEMP TABLE multi AS SELECT job FROM (SELECT DISTINCT m, job FROM kj)
          GROUP BY job HAVING count(*) > 1""")
    for k in ("kj", "kn", "kb"):
        ex(f"CREATE TEMP TABLE {k}_m AS SELECT * FROM {k} WHERE job IN (SELECT job FROM multi)")
        ex(f"CREATE TEMP VIEW {k}_s AS SELECT * FROM {k} WHERE job NOT IN (SELECT job FROM multi)")
    single = job_tables(q, "m", "_s")
    counts = {}
    for kind in bc.KINDS:
        B = BUCKET[kind]
        c, add = bc.kind_counts(kind, months, month_rows, procs, envs, pkg_envs, cpu, sampled)
        counts[kind] = c
        for b, p, n, on in q(f"""SELECT {B} AS m, package, count(DISTINCT job),
                                        count(DISTINCT job) FILTER (oncpu)
                                 FROM ks GROUP BY ALL"""):
            add("s_jobs", b, p, n)
            add("s_on", b, p, on)
        # This kind's keys: the month keys with months mapped to buckets; every count below
        # is a distinct count over them, so duplicates across months collapse.
        ub = "ku" if kind == "month" else f"(SELECT DISTINCT {B} AS m, package, u, version FROM ku)"
        for b, p, n, nv in q(f"""SELECT m, package, count(*), count(*) FILTER (v) FROM
                (SELECT m, package, u, bool_or(version IS NOT NULL) AS v FROM {ub} GROUP BY ALL)
                GROUP BY ALL"""):
            c["by_user"].setdefault(b, {})[p] = n
            c["versioned_users"].setdefault(b, {})[p] = nv
        # Versions: only those of the packages the report lists (the top by users).
        top_users = {b: {p for p, _ in sorted(d.items(), key=lambda x: (-x[1], x[0]))[:top]}
                     for b, d in c["by_user"].items()}
        for b, p, v, n in q(f"""SELECT m, package, version, count(*) FROM
                               (SELECT DISTINCT m, package, version, u FROM {ub}
                                WHERE version IS NOT NULL) GROUP BY ALL"""):
            if p in top_users.get(b, ()):
                c["version_users"].setdefault(b, {})[(p, v)] = n
        # Job tables: the jobs of one month counted once per month and added up; the jobs
        # over several months counted again over their keys mapped to buckets.
        for name, per in single.items():
            for m, v in per.items():
                b = bc.bucket(kind, m)
                if name == "jobs":
                    c[name][b] = c[name].get(b, 0) + v
                else:
                    for key, n in v.items():
                        add(name, b, key, n)
        for name, per in job_tables(q, B, "_m").items():
            for b, v in per.items():
                if name == "jobs":
                    c[name][b] = c[name].get(b, 0) + v
                else:
                    for key, n in v.items():
                        add(name, b, key, n)
        c["pairs"] = pairs(ex, kind, c, top)
    return counts


def job_tables(q, B, x):
    """The job tables over kj{x}, kn{x}, kb{x} with months mapped by B: {table: {bucket: …}}."""
    t = {k: {} for k in ("by_job", "job_packages", "package_sizes", "jobs", "job_sizes", "blas")}
    for b, p, n, nc in q(f"""SELECT {B} AS m, package, count(DISTINCT job),
                                    count(DISTINCT job) FILTER (bin < 255)
                             FROM kj{x} GROUP BY ALL"""):
        t["by_job"].setdefault(b, {})[p] = n
        if nc:
            t["job_packages"].setdefault(b, {})[p] = nc
    for b, p, bn, n in q(f"""SELECT {B} AS m, package, bin, count(DISTINCT job) FROM kj{x}
                             WHERE bin < 255 GROUP BY ALL"""):
        t["package_sizes"].setdefault(b, {})[(p, bn)] = n
    for b, n in q(f"SELECT {B} AS m, count(DISTINCT job) FROM kn{x} GROUP BY ALL"):
        t["jobs"][b] = n
    for b, nodes, n in q(f"SELECT {B} AS m, nodes, count(DISTINCT job) FROM kn{x} GROUP BY ALL"):
        t["job_sizes"].setdefault(b, {})[nodes] = n
    for b, name, n in q(f"""SELECT {B} AS m, CAST(blas AS VARCHAR), count(DISTINCT job) FROM kb{x}
                            WHERE blas IS NOT NULL GROUP BY ALL"""):
        t["blas"].setdefault(b, {})[name] = n
    # Jobs with numpy/scipy rows but no BLAS seen in them.
    for b, n in q(f"""SELECT {B} AS m, count(DISTINCT job)
                             - count(DISTINCT job) FILTER (blas IS NOT NULL) FROM kb{x}
                      GROUP BY ALL"""):
        if n:
            t["blas"].setdefault(b, {})["unknown"] = n
    return t


def pairs(ex, kind, c, top):
    """{bucket: (pair rows, packages, matrix)} over the jobs' distinct package sets. The sets
    of jobs that ran in one month only are counted per month once and added up into coarser
    buckets (their set is the same there); only the few jobs over several months have their
    sets rebuilt per bucket."""
    B = BUCKET[kind]
    if kind == "month":
        ex("""CREATE TEMP TABLE js AS SELECT m, job, list(DISTINCT package ORDER BY package) AS s
              FROM kj WHERE bin < 255 GROUP BY m, job""")
        ex("""CREATE TEMP TABLE ssm AS SELECT m, s, count(*) AS n FROM js
              WHERE job NOT IN (SELECT job FROM multi) GROUP BY ALL""")
        ss = "SELECT m, s, count(*) AS n FROM js GROUP BY ALL"
    else:
        ss = f"""SELECT m, s, sum(n) AS n FROM (
                   SELECT {B} AS m, s, n FROM ssm
                   UNION ALL
                   SELECT m, s, 1 AS n FROM (
                     SELECT {B} AS m, list(DISTINCT package ORDER BY package) AS s
                     FROM kj_m WHERE bin < 255
                     GROUP BY 1, job))
                 GROUP BY ALL"""
    sets = ex(f"""WITH ss AS ({ss}), ids AS (SELECT *, row_number() OVER () AS id FROM ss)
                  SELECT m, id, n, enum_code(unnest(s)) AS package FROM ids""").fetchnumpy()
    mm, sid, nn = sets["m"], sets["id"].astype(np.int64), sets["n"].astype(np.int64)
    pc = sets["package"].astype(np.int64)
    names = ex("SELECT enum_range(NULL::pk)").fetchone()[0]
    t0 = time.time()
    out = {}
    for b in c["buckets"]:
        rows = bc.pair_rows(c["job_packages"].get(b, {}), top)
        sel = mm == b
        s, n, p = sid[sel], nn[sel], pc[sel]
        # Each set's mask over the pair rows.
        bit = np.zeros(len(names), dtype=np.uint64)
        for r, name in enumerate(rows):
            bit[names.index(name)] = np.uint64(1) << np.uint64(r)
        order = np.argsort(s, kind="stable")
        s, n, p = s[order], n[order], p[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        mask = np.bitwise_or.reduceat(bit[p], starts) if len(s) else np.zeros(0, np.uint64)
        mask = np.repeat(mask, np.diff(np.r_[starts, len(s)]))
        mat = np.zeros((len(rows), len(names)), dtype=np.int64)
        for r in range(len(rows)):
            hit = (mask >> np.uint64(r)) & np.uint64(1) == 1
            mat[r] = np.bincount(p[hit], weights=n[hit], minlength=len(names))
        out[b] = (rows, names, mat)
    if os.environ.get("BASELINE_TIMES"):
        print(f"  {time.time() - t0:5.2f} (numpy: pair counts of {len(out)} buckets)", file=sys.stderr)
    return out


def main():
    a = bc.args(__doc__)
    top = bc.clamp_top(a.top)
    t0 = time.time()
    counts = run(a.dataset, a.threads, top)
    periods = bc.report(counts, top)
    bc.finish("duckdb", a, periods, time.time() - t0)


if __name__ == "__main__":
    main()
