"""The tables of `pyusage analyze` for every period, with polars (benchmark baseline only; the
definitions are those of tests/e2e/duckdb_tables.py, which the tests check against pyusage).

    analyze_polars.py DATASET
"""
import sys
import time

import polars as pl

root = sys.argv[1]
t0 = time.time()
t = (
    pl.scan_parquet(f"{root}/date=*/*.parquet", hive_partitioning=False)
    .filter(~pl.col("is_staff"))
    .select(
        "package", "version", "env_kind", "blas", "exit", "job_id", "num_nodes", "is_compute",
        pl.coalesce(pl.col("username"), pl.lit("uid:") + pl.col("uid").cast(pl.Utf8)).alias("u"),
        pl.struct("host", "pid", "process_start").alias("proc"),
        pl.col("process_start").dt.convert_time_zone("UTC").alias("ts"),
    )
    .collect()
)
periods = {
    "month": pl.col("ts").dt.strftime("%Y-%m"),
    "quarter": pl.col("ts").dt.year().cast(pl.Utf8) + "-Q" + pl.col("ts").dt.quarter().cast(pl.Utf8),
    "year": pl.col("ts").dt.year().cast(pl.Utf8),
    "all": pl.lit("all"),
}
rows = 0
for kind, P in periods.items():
    d = t.lazy().with_columns(P.alias("p"))
    job = d.filter(pl.col("is_compute") & pl.col("job_id").is_not_null())
    binx = pl.when(pl.col("num_nodes") <= 1).then(1).otherwise(
        (2 ** (pl.col("num_nodes").cast(pl.Float64).log(2).ceil())).cast(pl.Int64))
    jp = job.select("p", "job_id", "package").unique()
    jb = (d.filter(pl.col("package").is_in(["numpy", "scipy"]) & pl.col("job_id").is_not_null())
          .group_by("p", "job_id").agg(pl.col("blas").drop_nulls().unique()))
    q = [
        d.group_by("p").len(),
        d.group_by("p", "package").agg(pl.col("u").n_unique()),
        d.filter(pl.col("job_id").is_not_null()).group_by("p", "package").agg(pl.col("job_id").n_unique()),
        d.group_by("p", "package").agg(pl.col("proc").n_unique(),
                                       pl.col("proc").filter(pl.col("exit") == "signaled").n_unique().alias("signaled")),
        job.group_by("p").agg(pl.col("job_id").n_unique()),
        job.group_by("p", "num_nodes").agg(pl.col("job_id").n_unique()),
        job.group_by("p", "package").agg(pl.col("job_id").n_unique()),
        job.with_columns(binx.alias("bin")).group_by("p", "package", "bin").agg(pl.col("job_id").n_unique()),
        jp.join(jp, on=["p", "job_id"]).group_by("p", "package", "package_right").len(),
        d.filter(pl.col("version").is_not_null()).group_by("p", "package", "version").agg(pl.col("u").n_unique()),
        d.filter(pl.col("version").is_not_null()).group_by("p", "package").agg(pl.col("u").n_unique()),
        d.filter(pl.col("env_kind") != "stdlib").group_by("p", "env_kind").agg(pl.col("proc").n_unique()),
        jb.with_columns(pl.when(pl.col("blas").list.len() == 0).then(pl.lit(["unknown"]))
                        .otherwise(pl.col("blas")).alias("blas")).explode("blas", empty_as_null=True).group_by("p", "blas").len(),
    ]
    rows += sum(x.height for x in pl.collect_all(q))
print(f"polars: {time.time() - t0:.2f} s ({rows} result rows)")
