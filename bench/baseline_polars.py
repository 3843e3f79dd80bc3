"""pyusage's report tables computed with polars, as an expert user would write them.

    baseline_polars.py DATASET [--threads N] [--check REPORT.json] [--top N] [--out FILE]

(--threads sets POLARS_MAX_THREADS before polars is imported.)

- One lazy scan of the Parquet files, collected once into a narrow table: only the columns
  used, the month key (year * 12 + month0 of process_start, UTC) computed once, Categorical
  package, version, environment kind and BLAS (polars' global categories), 64-bit hashes for
  the user label (username, else 'uid:<n>'), the job id and the process (host, pid,
  process_start).
- Month-level keys built once from it — (month, package, user, version); (month, job,
  package, compute node, node bin); (month, job, nodes) on compute nodes; (month, job,
  BLAS) — then, per kind, months mapped to buckets and distinct counts taken again
  (n_unique per group, which polars runs several times faster than de-duplicating keys
  first; distinct counts do not add across months, keys do). Per-process counts are per
  month and add up. For the job tables, the jobs seen in one month only are counted once
  per month and added up; only the few jobs over several months are rolled up per bucket.
  Each stage's queries run together (collect_all).
- Co-occurrence: each job's package set (physical category codes), jobs grouped by set (per
  month once, the same split), then over the distinct sets C = Sᵀ·diag(n)·S for the
  pair-row packages (a 64-bit mask per set, expanded with numpy).
Floats, orders and the pair-row choice are those of pyusage (baseline_common.py).
"""
import os
import sys
import time

import baseline_common as bc

if __name__ == "__main__":
    A = bc.args(__doc__)
    if A.threads:
        os.environ["POLARS_MAX_THREADS"] = str(A.threads)

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

BUCKET = {
    "month": lambda m: m,
    "quarter": lambda m: (m // 12) * 4 + (m % 12) // 3,
    "year": lambda m: m // 12,
    "all": lambda m: pl.lit(0, dtype=pl.UInt16),
}


def run(root, top):
    verbose = bool(os.environ.get("BASELINE_TIMES"))
    t0 = [time.time()]

    def lap(what):
        if verbose:
            print(f"  {time.time() - t0[0]:5.2f} {what}", file=sys.stderr)
            t0[0] = time.time()

    cat = pl.Categorical
    ts = pl.col("process_start")
    nodes = pl.col("num_nodes").clip(upper_bound=bc.MAX_NODES - 1).cast(pl.UInt16)
    # The one scan.
    t = (
        pl.scan_parquet(f"{root}/date=*/*.parquet", hive_partitioning=False)
        .select(bc.COLUMNS + ["cpu_user_us", "cpu_sys_us"] + SAMPLED)
        .filter(~pl.col("is_staff"))
        .select(
            m=(ts.dt.year().cast(pl.UInt16) * 12 + ts.dt.month().cast(pl.UInt16) - 1),
            package=pl.col("package").cast(cat),
            version=pl.col("version").cast(cat),
            env=pl.col("env_kind").cast(cat),
            blas=pl.col("blas").cast(cat),
            u=pl.coalesce(pl.col("username"), pl.lit("uid:") + pl.col("uid").cast(pl.String)).hash(),
            job=pl.when(pl.col("job_id").is_not_null()).then(pl.col("job_id").hash()),
            proc=pl.struct("host", "pid", "process_start").hash(),
            nodes=nodes,
            # The node bin (model.rs node_bin) as the power of two 1 << bin, on compute nodes.
            binbit=pl.when(pl.col("is_compute")).then(
                pl.lit(2, dtype=pl.UInt32).pow(
                    pl.sum_horizontal([(nodes > (1 << j)).cast(pl.UInt32) for j in range(16)])))
            .otherwise(pl.lit(0, dtype=pl.UInt32)),
            compute=pl.col("is_compute"),
            sig=pl.col("exit") == "signaled",
            numpyish=pl.col("package").is_in(["numpy", "scipy"]),
            nonstd=pl.col("env_kind") != "stdlib",
            cpu=pl.col("cpu_user_us").cast(pl.UInt64) + pl.col("cpu_sys_us").cast(pl.UInt64),
            samp=((pl.col("cpu_sampling") == "sampled") & (pl.col("cpu_sample_hz") > 0)
                  & pl.col("cpu_samples_total").is_not_null()
                  & pl.col("cpu_samples_self").is_not_null()
                  & pl.col("cpu_samples_inclusive").is_not_null()).fill_null(False),
            hz=pl.col("cpu_sample_hz").cast(pl.UInt64),
            tot=pl.col("cpu_samples_total").cast(pl.UInt64),
            own=pl.col("cpu_samples_self").cast(pl.UInt64),
            incl=pl.col("cpu_samples_inclusive").cast(pl.UInt64),
            callers=pl.col("cpu_samples_callers"),
        )
        .collect()
    )
    lap(f"scan ({t.height} rows, {t.estimated_size() >> 20} MiB)")
    t = t.lazy()
    job = pl.col("job").is_not_null()
    nu = lambda c: pl.col(c).n_unique()  # noqa: E731
    # CPU time per process (its largest record), charged to its non-stdlib packages.
    kp = t.filter("nonstd").select("m", "proc", "package").unique()
    cpu_q = (kp.join(t.group_by("m", "proc").agg(pl.col("cpu").max()), on=["m", "proc"])
             .join(kp.group_by("m", "proc").len(name="n"), on=["m", "proc"])
             .filter(pl.col("cpu").is_not_null())
             .group_by("m", "package")
             .agg(pl.len(), pl.col("cpu").sum(), (pl.col("cpu") * 1000 // pl.col("n")).sum().alias("split")))
    # Sampled CPU: each sampled process's largest counts (its final record's), per month; the
    # jobs in which a sampled process imported a package (and had it on the CPU).
    ts_ = t.filter("samp")
    tsn = ts_.filter("nonstd")
    per_us = lambda c: (pl.col(c) * 1_000_000 // pl.col("hz")).max()  # noqa: E731
    s_totals_q = (ts_.group_by("m", "proc").agg(pl.col("tot").max(), us=per_us("tot"))
                  .group_by("m").agg(pl.len(), pl.col("tot").sum(), pl.col("us").sum()))
    s_pkgs_q = (tsn.group_by("m", "proc", "package")
                .agg(pl.col("own").max(), pl.col("incl").max(), us=per_us("own"))
                .group_by("m", "package")
                .agg(pl.len(), pl.col("own").sum(), pl.col("incl").sum(), pl.col("us").sum()))
    s_callers_q = (tsn.select("m", "proc", "package", "callers")
                   .explode("callers", empty_as_null=True)
                   .drop_nulls("callers")
                   .with_columns(caller=pl.col("callers").struct.field("package"),
                                 n=pl.col("callers").struct.field("samples"))
                   .filter(pl.col("caller") != pl.col("package").cast(pl.String))
                   .group_by("m", "proc", "package", "caller").agg(pl.col("n").max())
                   .group_by("m", "package", "caller").agg(pl.col("n").sum()))
    ks_q = (tsn.filter(job).select("m", "job", "package", oncpu=pl.col("incl") > 0).unique())
    month_rows, procs, envs, pkg_envs, cpu, ku, kj, kn, kb, s_totals, s_pkgs, s_callers, ks = pl.collect_all([
        t.group_by("m").len(),
        t.group_by("m", "package").agg(n=nu("proc"), s=pl.col("proc").filter("sig").n_unique()),
        t.filter("nonstd").group_by("m", "env").agg(nu("proc")),
        t.filter(pl.col("env").is_not_null()).group_by("m", "package", "env").agg(nu("proc")),
        cpu_q,
        t.select("m", "package", "u", "version").unique(),
        t.filter(job).select("m", "job", "package", "compute", "binbit").unique(),
        t.filter(job & pl.col("compute")).select("m", "job", "nodes").unique(),
        t.filter(job & pl.col("numpyish")).select("m", "job", "blas").unique(),
        s_totals_q, s_pkgs_q, s_callers_q, ks_q,
    ])
    sampled = (list(s_totals.iter_rows()), list(s_pkgs.iter_rows()), list(s_callers.iter_rows()))
    del t
    lap("month-level keys")
    names = {code: name for code, name in ku.select(
        pl.col("package").unique().to_physical().alias("code"),
        pl.col("package").unique().cast(pl.String).alias("name")).iter_rows()}
    months = sorted(month_rows["m"].to_list())
    # Jobs over several months (rare): their keys are rolled up per bucket; every other
    # job's counts (and package sets) add up over months.
    multi = kj.select("m", "job").unique().group_by("job").len().filter(pl.col("len") > 1)
    (kj_m, kn_m, kb_m), (kj_s, kn_s, kb_s) = (
        [k.join(multi, on="job", how=how) for k in (kj, kn, kb)] for how in ("semi", "anti"))
    js = job_sets(kj.lazy()).collect()
    ssm, *single = pl.collect_all([
        js.lazy().join(multi.lazy(), on="job", how="anti").group_by("m", "s").len(),
        *job_tables(kj_s.lazy(), kn_s.lazy(), kb_s.lazy()),
    ])
    lap("month-level job counts")
    counts = {}
    for kind in bc.KINDS:
        B = BUCKET[kind]
        c, add = bc.kind_counts(
            kind, months, month_rows.iter_rows(), procs.iter_rows(), envs.iter_rows(),
            pkg_envs.iter_rows(), cpu.iter_rows(), sampled)
        counts[kind] = c
        # This kind's keys: the month keys with months mapped to buckets; every count below
        # is a distinct count over them (n_unique), so duplicates across months collapse.
        b_ = B(pl.col("m")).cast(pl.UInt16).alias("m")
        ub = ku.lazy().with_columns(b_)
        if kind == "month":
            ss = js.lazy().group_by("m", "s").len()
        else:
            ss = pl.concat([
                ssm.lazy().with_columns(b_),
                job_sets(kj_m.lazy().with_columns(b_)).group_by("m", "s").len(),
            ]).group_by("m", "s").agg(pl.col("len").sum())
        s_jobs, users, vusers, sets, *multi = pl.collect_all([
            ks.lazy().with_columns(b_).group_by("m", "package").agg(
                nu("job"), on=pl.col("job").filter("oncpu").n_unique()),
            ub.group_by("m", "package").agg(
                nu("u"), nv=pl.col("u").filter(pl.col("version").is_not_null()).n_unique()),
            ub.filter(pl.col("version").is_not_null()).group_by("m", "package", "version")
              .agg(nu("u")),
            ss.with_row_index("id").explode("s", empty_as_null=True),
            *job_tables(*(x.lazy().with_columns(b_) for x in (kj_m, kn_m, kb_m))),
        ])
        lap(f"{kind}: rolled up")
        for b, p, n, on in s_jobs.iter_rows():
            add("s_jobs", b, p, n)
            add("s_on", b, p, on)
        for b, p, n, nv in users.iter_rows():
            c["by_user"].setdefault(b, {})[p] = n
            c["versioned_users"].setdefault(b, {})[p] = nv
        # Versions: only those of the packages the report lists (the top by users).
        top_users = {b: {p for p, _ in sorted(d.items(), key=lambda x: (-x[1], x[0]))[:top]}
                     for b, d in c["by_user"].items()}
        for b, p, v, n in vusers.iter_rows():
            if p in top_users.get(b, ()):
                c["version_users"].setdefault(b, {})[(p, v)] = n
        # Job tables: the jobs of one month counted once per month and added up; the jobs
        # over several months counted again over their keys mapped to buckets.
        for frames, month in ((single, True), (multi, False)):
            for name, f in zip(JOB_TABLES, frames):
                for row in f.iter_rows():
                    b = bc.bucket(kind, row[0]) if month else row[0]
                    if name == "jobs":
                        c["jobs"][b] = c["jobs"].get(b, 0) + row[1]
                        continue
                    key = row[1] if len(row) == 3 else row[1:-1]
                    if name == "package_sizes":
                        key = (key[0], key[1].bit_length() - 1)
                    table = name
                    if name == "blas_unknown":
                        table, key = "blas", "unknown"
                    if row[-1]:
                        add(table, b, key, row[-1])
        c["pairs"] = pairs(sets, names, c, top)
        lap(f"{kind}: tables")
    return counts


# The sampler's columns (record/src/lib.rs).
SAMPLED = ["cpu_sampling", "cpu_sample_hz", "cpu_samples_total", "cpu_samples_self",
           "cpu_samples_inclusive", "cpu_samples_callers"]

JOB_TABLES = ("by_job", "job_packages", "package_sizes", "jobs", "job_sizes", "blas",
              "blas_unknown")


def job_tables(kj, kn, kb):
    """The job tables' queries over job keys (months already mapped), in JOB_TABLES order."""
    nu = lambda c: pl.col(c).n_unique()  # noqa: E731
    kjc = kj.filter("compute")
    known = pl.col("blas").is_not_null()
    return [
        kj.group_by("m", "package").agg(nu("job")),
        kjc.group_by("m", "package").agg(nu("job")),
        kjc.group_by("m", "package", "binbit").agg(nu("job")),
        kn.group_by("m").agg(nu("job")),
        kn.group_by("m", "nodes").agg(nu("job")),
        kb.filter(known).group_by("m", "blas").agg(nu("job")),
        kb.group_by("m").agg(n=nu("job") - pl.col("job").filter(known).n_unique()),
    ]


def job_sets(kj):
    """(bucket, job, its package set on compute nodes as sorted category codes)."""
    return kj.filter("compute").group_by("m", "job").agg(
        s=pl.col("package").to_physical().unique().sort())


def pairs(sets, names, c, top):
    """{bucket: (pair rows, packages, matrix)} from the distinct package sets (exploded)."""
    codes = sorted(names)
    col = np.full(max(codes) + 1 if codes else 1, -1, dtype=np.int64)
    for i, code in enumerate(codes):
        col[code] = i
    cols = [names[code] for code in codes]
    mm = sets["m"].to_numpy()
    sid = sets["id"].to_numpy().astype(np.int64)
    nn = sets["len"].to_numpy().astype(np.int64)
    pc = col[sets["s"].to_numpy().astype(np.int64)]
    out = {}
    for b in c["buckets"]:
        rows = bc.pair_rows(c["job_packages"].get(b, {}), top)
        sel = mm == b
        s, n, p = sid[sel], nn[sel], pc[sel]
        bit = np.zeros(len(cols), dtype=np.uint64)
        for r, name in enumerate(rows):
            bit[cols.index(name)] = np.uint64(1) << np.uint64(r)
        order = np.argsort(s, kind="stable")
        s, n, p = s[order], n[order], p[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, np.int64)
        mask = np.bitwise_or.reduceat(bit[p], starts) if len(s) else np.zeros(0, np.uint64)
        mask = np.repeat(mask, np.diff(np.r_[starts, len(s)]))
        mat = np.zeros((len(rows), len(cols)), dtype=np.int64)
        for r in range(len(rows)):
            hit = (mask >> np.uint64(r)) & np.uint64(1) == 1
            mat[r] = np.bincount(p[hit], weights=n[hit], minlength=len(cols))
        out[b] = (rows, cols, mat)
    return out


def main():
    a = A
    top = bc.clamp_top(a.top)
    t0 = time.time()
    counts = run(a.dataset, top)
    periods = bc.report(counts, top)
    bc.finish("polars", a, periods, time.time() - t0)


if __name__ == "__main__":
    main()
