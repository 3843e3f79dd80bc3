//! `pyusage ingest`: the central end of the syslog path (run by rsyslog's `omprog`, records
//! on stdin), or a merge of node datasets (`--from-dir`), into one de-duplicated Hive
//! Parquet dataset. The engine is the `pyusage-ingest` crate; this file maps flags to its
//! options. stdout belongs to omprog's protocol: everything else goes to stderr.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use pyusage_ingest::{
    compact::CompactOptions,
    lanes::{LaneHash, MAX_LANES},
    merge,
    protocol::{self, Marks, Polled},
    Ingest, Lane, Options,
};
use pyusage_record::error_line;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset root to write (`date=…/` partitions; state in `.ingest/`, malformed messages
    /// in `_quarantine.jsonl`).
    #[arg(long)]
    out: PathBuf,
    /// Merge these node data directories (or dataset roots) instead of reading stdin.
    #[arg(long, num_args = 1..)]
    from_dir: Vec<PathBuf>,
    /// Compact every partition now (merge its small files) and exit.
    #[arg(long, conflicts_with = "from_dir")]
    compact: bool,
    /// First part of the Parquet file names: `<name>-<first number>.parquet`.
    #[arg(long, default_value = "ingest")]
    name: String,
    /// This instance's lane, when several ingests write the dataset at once (one omprog action
    /// each, every node routed to one of them by its host name, as in
    /// packaging/rsyslog/pyusage-central-lanes.conf): lane K > 0 keeps its state in
    /// `.ingest/lane-K/`, its malformed messages in `_quarantine-lane-K.jsonl`, and names its
    /// files `<name>-lK-…`; lane 0 is the dataset's own state.
    #[arg(long, conflicts_with_all = ["from_dir", "compact"])]
    lane: Option<u16>,
    /// How many lanes write the dataset (rsyslog's `hash64mod($hostname, N)`; at most 64),
    /// fixed when a new dataset is first opened; an ingest with another count is refused. A
    /// lane counts records of another lane's nodes as `misrouted`. `--from-dir` and
    /// `--compact` work on every lane (each lane's lock taken: run them with the collector
    /// stopped), a node's records going to its lane; for them the default is the dataset's
    /// count, for the omprog path 1.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_LANES)))]
    lanes: Option<u16>,
    /// The hash rsyslog's `hash64mod` routes nodes by: `djb`, rsyslog's own (its default
    /// build, Debian's), or `xxh64` where its `fmhash.so` links libxxhash
    /// (`--enable-fmhash-xxhash`). Fixed with the lane count; the default is the dataset's for
    /// `--from-dir`/`--compact`, else `djb`.
    #[arg(long, value_enum)]
    lane_hash: Option<HashArg>,
    /// Records per Parquet file written from the log (before compaction).
    #[arg(long, default_value_t = 100_000)]
    flush_records: usize,
    /// Seconds after which records in the log are written to Parquet even if fewer.
    #[arg(long, default_value_t = 30)]
    flush_secs: u64,
    /// De-duplication hashes kept in memory (~40 bytes each; whole days of `process_start`,
    /// the least recently used dropped first and read back from disk when needed).
    #[arg(long, default_value_t = 20_000_000)]
    index_entries: usize,
    /// Compact a partition once it has this many small files.
    #[arg(long, default_value_t = 8)]
    compact_min_files: usize,
    /// Compacted file size to aim for, MiB (files under half of it are small).
    #[arg(long, default_value_t = 256)]
    compact_target_mib: u64,
    /// omprog's `beginTransactionMark`.
    #[arg(long, default_value = "BEGIN TRANSACTION")]
    begin_mark: String,
    /// omprog's `commitTransactionMark`.
    #[arg(long, default_value = "COMMIT TRANSACTION")]
    commit_mark: String,
}

/// `--lane-hash`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HashArg {
    Djb,
    Xxh64,
}

/// Runs it.
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    // The maintenance commands work on the dataset as it is; an omprog lane says which it is
    // (a one-lane command line against a dataset of lanes is refused, not made lane 0).
    let maintenance = !a.from_dir.is_empty() || a.compact;
    let recorded = match maintenance {
        true => pyusage_ingest::lanes::recorded(&a.out)?,
        false => None,
    };
    let lanes = a.lanes.or(recorded.map(|l| l.lanes)).unwrap_or(1);
    let hash = match a.lane_hash {
        Some(HashArg::Djb) => LaneHash::Djb,
        Some(HashArg::Xxh64) => LaneHash::Xxh64,
        None => recorded.map(|l| l.hash).unwrap_or_default(),
    };
    let lane = a.lane.unwrap_or(0);
    anyhow::ensure!(
        lane < lanes,
        "--lane {lane} needs --lanes above {lane} (lanes are numbered from 0; --lanes is {lanes})"
    );
    let opts = Options {
        name: a.name,
        lane: Lane {
            index: lane,
            count: lanes,
            hash,
        },
        flush_records: a.flush_records.max(1),
        flush_after: Duration::from_secs(a.flush_secs),
        index_entries: a.index_entries,
        compact: CompactOptions {
            min_files: a.compact_min_files,
            target_bytes: a.compact_target_mib << 20,
            ..CompactOptions::default()
        },
        ..Options::new(&a.out)
    };
    if maintenance {
        // Every lane, in lane order.
        let mut lanes = (0..lanes)
            .map(|index| {
                let opts = Options {
                    lane: Lane {
                        index,
                        count: lanes,
                        hash,
                    },
                    ..opts.clone()
                };
                Ingest::open(opts, &mut || {})
                    .with_context(|| format!("opening lane {index} of {}", a.out.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut bad = false;
        if a.compact {
            for (index, ing) in lanes.iter_mut().enumerate() {
                let c = ing.compact_all()?;
                eprintln!(
                    "lane {index}: compacted {} files into {}, {} running snapshots left out",
                    c.inputs, c.outputs, c.superseded
                );
            }
        } else {
            let m = merge::merge(&mut lanes, &a.from_dir)?;
            for e in &m.errors {
                eprintln!("pyusage: skipped: {}", error_line(e));
            }
            bad = !m.errors.is_empty();
            eprintln!(
                "merged {} files: {} records read, {} new, {} already in another lane than \
                 their host's",
                m.files, m.records, m.accepted, m.in_other_lane
            );
        }
        for (index, ing) in lanes.into_iter().enumerate() {
            let st = ing.finish()?;
            eprintln!("lane {index}: {}", serde_json::to_string(&st)?);
        }
        return Ok(if bad {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    let marks = Marks {
        begin: a.begin_mark.into_bytes(),
        commit: a.commit_mark.into_bytes(),
    };
    let mut input = Polled::new(std::io::stdin());
    let mut out = std::io::stdout().lock();
    let st = protocol::serve(opts, &marks, &mut input, &mut out)?;
    eprintln!("pyusage ingest: {}", serde_json::to_string(&st)?);
    Ok(ExitCode::SUCCESS)
}
