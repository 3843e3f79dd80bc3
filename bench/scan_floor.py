"""The floor under any report: one scan of the columns the analysis reads, and nothing else.

    scan_floor.py duckdb DATASET [--threads N]    one DuckDB query over the 14 projected
                                                  columns: count(DISTINCT …) of each
    scan_floor.py pyarrow DATASET [--threads N]   pyarrow decodes the same columns into memory

Prints the seconds it took.
"""
import argparse
import glob
import time

from baseline_common import COLUMNS


def duckdb_floor(root, threads):
    import duckdb

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    cols = ", ".join(f"count(DISTINCT {c})" for c in COLUMNS)
    return con.execute(f"""SELECT count(*), {cols}
        FROM read_parquet('{root}/date=*/*.parquet', hive_partitioning = false)""").fetchone()[0]


def pyarrow_floor(root, threads):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if threads:
        pa.set_cpu_count(int(threads))
        pa.set_io_thread_count(int(threads))
    files = sorted(glob.glob(f"{root}/date=*/*.parquet"))
    return pq.read_table(files, columns=COLUMNS, partitioning=None).num_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("tool", choices=["duckdb", "pyarrow"])
    ap.add_argument("dataset")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    t0 = time.time()
    rows = (duckdb_floor if a.tool == "duckdb" else pyarrow_floor)(a.dataset, a.threads)
    print(f"{a.tool} floor: {time.time() - t0:.2f} s ({rows} rows)")


if __name__ == "__main__":
    main()
