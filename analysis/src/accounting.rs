//! `--jobs FILE`: the scheduler's accounting, joined to the records by job id. Reads `sacct
//! --parsable2` output (`|`-separated, a header line naming the fields), the way the paper
//! joined its data with Slurm's: node-hours and outcomes per package, and by account.
//!
//! Why by hand and not the `csv` crate's reader alone: the format is csv-like, but the
//! interesting part is Slurm's values — step lines (`123.batch`, `123.0`) to skip, array and
//! heterogeneous ids (`123_4` with its raw id, `123+1`), pending array ranges (`123_[4-7]`),
//! `Unknown` or empty elapsed times and states such as `CANCELLED by 1234` — so each line is
//! split with `csv` and interpreted here, and a bad line costs only itself (`FILE:LINE: why`).
use std::{collections::BTreeMap, path::Path};

use rustc_hash::FxHashMap;

use crate::model::{Names, NO_JOB};

/// Job outcomes reported, in this order; every other state counts as `OTHER`.
pub const OUTCOMES: [&str; 6] = [
    "COMPLETED",
    "TIMEOUT",
    "FAILED",
    "OUT_OF_MEMORY",
    "CANCELLED",
    "OTHER",
];

/// One job as the scheduler accounted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobInfo {
    /// Nodes × elapsed seconds, when the elapsed time is known.
    pub node_seconds: Option<u64>,
    /// Index into [`OUTCOMES`].
    pub outcome: u8,
    /// Index into [`Accounting::accounts`].
    pub account: u32,
}

/// The accounting of the jobs in a file, by job id (as the records spell it).
#[derive(Debug, Default, Clone)]
pub struct Accounting {
    /// Job id → its accounting: the `JobID` (`123`, `123_4`, `123+1`) and, when given, the
    /// `JobIDRaw` (the id an array task's cgroup carries).
    pub jobs: BTreeMap<String, JobInfo>,
    /// Account names (`""` for none).
    pub accounts: Vec<String>,
    /// Lines that could not be read, as `FILE:LINE: reason`.
    pub bad_lines: Vec<String>,
    /// Step lines skipped.
    pub steps: u64,
}

/// The file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// Opening or reading it.
    #[error("{path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No header line naming the fields this needs.
    #[error("{path}: not `sacct --parsable2` output: the header lacks {missing} (need JobID, NNodes, ElapsedRaw, State, Account)")]
    Header {
        /// The file.
        path: String,
        /// The first missing field.
        missing: &'static str,
    },
}

impl Accounting {
    /// Reads `sacct --parsable2` output (`--delimiter` other than `|` is not supported).
    pub fn read(path: &Path) -> Result<Accounting, AccountingError> {
        let p = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| AccountingError::Read {
            path: p.clone(),
            source,
        })?;
        Accounting::parse(&p, &String::from_utf8_lossy(&text))
    }

    /// Parses the text of a file named `path` (for messages): `sacct --parsable2` output, or
    /// Slurm's job completion log (`JobCompType=jobcomp/filetxt`: one `Key=Value …` line per
    /// job), which a cluster without slurmdbd still writes.
    pub fn parse(path: &str, text: &str) -> Result<Accounting, AccountingError> {
        if text.trim_start().starts_with("JobId=") {
            return Ok(Accounting::parse_jobcomp(path, text));
        }
        let mut lines = text.lines().enumerate();
        let header: Vec<&str> = lines
            .next()
            .map(|(_, l)| l.split('|').map(str::trim).collect())
            .unwrap_or_default();
        let col = |name: &'static str| {
            header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or(AccountingError::Header {
                    path: path.to_owned(),
                    missing: name,
                })
        };
        let (id, nodes, elapsed, state, account) = (
            col("JobID")?,
            col("NNodes")?,
            col("ElapsedRaw")?,
            col("State")?,
            col("Account")?,
        );
        let raw = col("JobIDRaw").ok();
        let mut a = Accounting::default();
        let mut accounts: FxHashMap<String, u32> = FxHashMap::default();
        for (n, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('|').collect();
            let bad = |why: String| format!("{path}:{}: {why}", n + 1);
            let get = |i: usize| f.get(i).map(|s| s.trim()).unwrap_or("");
            if f.len() < header.len() {
                a.bad_lines.push(bad(format!(
                    "{} fields, the header has {}",
                    f.len(),
                    header.len()
                )));
                continue;
            }
            let job = get(id);
            if job.contains('.') {
                a.steps += 1; // a step (`123.batch`, `123.0`): the job's own line counts
                continue;
            }
            if job.is_empty() || job.contains('[') {
                a.bad_lines.push(bad(format!(
                    "job id {job:?}: not a job (a pending array range?)"
                )));
                continue;
            }
            let Ok(nnodes) = get(nodes).parse::<u64>() else {
                a.bad_lines
                    .push(bad(format!("NNodes {:?} is not a number", get(nodes))));
                continue;
            };
            // `Unknown` (still running, or never started) and empty: no node-hours.
            let secs = get(elapsed).parse::<u64>().ok();
            let next = accounts.len() as u32;
            let acct = *accounts.entry(get(account).to_owned()).or_insert(next);
            let info = JobInfo {
                node_seconds: secs.map(|s| s.saturating_mul(nnodes)),
                outcome: outcome(get(state)),
                account: acct,
            };
            a.jobs.insert(job.to_owned(), info);
            if let Some(r) = raw.map(get).filter(|r| !r.is_empty() && *r != job) {
                a.jobs.insert(r.to_owned(), info);
            }
        }
        let mut by_id: Vec<(String, u32)> = accounts.into_iter().collect();
        by_id.sort_by_key(|x| x.1);
        a.accounts = by_id.into_iter().map(|x| x.0).collect();
        Ok(a)
    }

    /// The job completion log: `JobId=`, `JobState=`, `NodeCnt=`, `StartTime=`, `EndTime=`
    /// (local time, to the second) and `Account=` of each line.
    fn parse_jobcomp(path: &str, text: &str) -> Accounting {
        let mut a = Accounting::default();
        let mut accounts: FxHashMap<String, u32> = FxHashMap::default();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|t| t.strip_prefix(k)?.strip_prefix('='))
            };
            let time = |k: &str| {
                chrono::NaiveDateTime::parse_from_str(field(k)?, "%Y-%m-%dT%H:%M:%S").ok()
            };
            let (Some(job), Some(nodes)) = (
                field("JobId"),
                field("NodeCnt").and_then(|x| x.parse::<u64>().ok()),
            ) else {
                a.bad_lines
                    .push(format!("{path}:{}: no JobId or NodeCnt", n + 1));
                continue;
            };
            let secs = match (time("StartTime"), time("EndTime")) {
                (Some(s), Some(e)) if e >= s => Some((e - s).num_seconds() as u64),
                _ => None,
            };
            let next = accounts.len() as u32;
            let acct = *accounts
                .entry(field("Account").unwrap_or("").to_owned())
                .or_insert(next);
            a.jobs.insert(
                job.to_owned(),
                JobInfo {
                    node_seconds: secs.map(|s| s.saturating_mul(nodes)),
                    outcome: outcome(field("JobState").unwrap_or("")),
                    account: acct,
                },
            );
        }
        let mut by_id: Vec<(String, u32)> = accounts.into_iter().collect();
        by_id.sort_by_key(|x| x.1);
        a.accounts = by_id.into_iter().map(|x| x.0).collect();
        a
    }

    /// The accounting keyed as the analysis keys jobs ([`crate::model::Chunk::job`]): numeric
    /// ids directly, others through `names.odd_jobs` (ids the data never used are left out).
    pub fn by_key(&self, names: &Names) -> FxHashMap<u64, JobInfo> {
        let odd = names.odd_jobs.lock().expect("lock");
        self.jobs
            .iter()
            .filter_map(|(id, &info)| {
                let key = match id.parse::<u64>() {
                    Ok(x) if x < 1 << 63 => x,
                    _ => 1 << 63 | odd.get(id)? as u64,
                };
                (key != NO_JOB).then_some((key, info))
            })
            .collect()
    }
}

/// `CANCELLED by 1234` → CANCELLED; `NODE_FAIL`, `PREEMPTED`, … → OTHER.
fn outcome(state: &str) -> u8 {
    let s = state.split_whitespace().next().unwrap_or("");
    OUTCOMES[..5]
        .iter()
        .position(|o| o.eq_ignore_ascii_case(s))
        .unwrap_or(5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_values_are_read_or_named() {
        let text = "JobID|JobIDRaw|NNodes|ElapsedRaw|State|Account|Partition\n\
            100|100|4|3600|COMPLETED|m1|cpu\n\
            100.batch|100.batch|1|3600|COMPLETED|m1|\n\
            100.0|100.0|4|3590|COMPLETED|m1|\n\
            123_4|130|1|Unknown|RUNNING|m2|cpu\n\
            123_[5-7]|123|1|0|PENDING|m2|cpu\n\
            200+1|201|2|60|CANCELLED by 1234|m1|cpu\n\
            300|300|two|60|FAILED|m3|cpu\n\
            301|301|1|120|TIMEOUT||cpu\n\
            302|302|1|\n\
            303|303|8|10|OUT_OF_MEMORY|m3|cpu\n";
        let a = Accounting::parse("f", text).unwrap();
        assert_eq!(a.steps, 2);
        assert_eq!(a.jobs["100"].node_seconds, Some(14_400));
        assert_eq!(OUTCOMES[a.jobs["100"].outcome as usize], "COMPLETED");
        // An array task by its id and its raw id; unknown elapsed: no node-hours.
        assert_eq!(a.jobs["123_4"], a.jobs["130"]);
        assert_eq!(a.jobs["130"].node_seconds, None);
        assert_eq!(OUTCOMES[a.jobs["130"].outcome as usize], "OTHER");
        assert_eq!(OUTCOMES[a.jobs["200+1"].outcome as usize], "CANCELLED");
        assert_eq!(a.jobs["201"].node_seconds, Some(120));
        assert_eq!(OUTCOMES[a.jobs["301"].outcome as usize], "TIMEOUT");
        assert_eq!(a.accounts[a.jobs["301"].account as usize], "");
        assert_eq!(OUTCOMES[a.jobs["303"].outcome as usize], "OUT_OF_MEMORY");
        assert_eq!(a.bad_lines.len(), 3, "{:?}", a.bad_lines);
        assert!(a.bad_lines[0].starts_with("f:6: job id \"123_[5-7]\""));
        assert!(a.bad_lines[1].starts_with("f:8: NNodes \"two\""));
        assert!(a.bad_lines[2].starts_with("f:10: 4 fields"));
        let jc = Accounting::parse(
            "jc",
            "JobId=7 UserId=root(0) Name=wrap JobState=TIMEOUT Partition=debug \
             StartTime=2026-11-29T10:00:00 EndTime=2026-11-29T10:01:05 NodeList=n1 NodeCnt=2 \
             Account=m9 ExitCode=0:15\n\
             JobId=8 JobState=CANCELLED StartTime=Unknown EndTime=Unknown NodeCnt=1 Account=\n\
             garbage\n",
        )
        .unwrap();
        assert_eq!(jc.jobs["7"].node_seconds, Some(130));
        assert_eq!(OUTCOMES[jc.jobs["7"].outcome as usize], "TIMEOUT");
        assert_eq!(jc.accounts[jc.jobs["7"].account as usize], "m9");
        assert_eq!(jc.jobs["8"].node_seconds, None);
        assert_eq!(jc.bad_lines, ["jc:3: no JobId or NodeCnt"]);
        let err = Accounting::parse("g", "JobID|State\n1|COMPLETED\n").unwrap_err();
        assert!(err.to_string().contains("lacks NNodes"), "{err}");
        // Keys as the analysis has them: numbers directly, others only if the data has them.
        let names = Names::default();
        names.odd_jobs.lock().unwrap().id("123_4");
        let k = a.by_key(&names);
        assert!(k.contains_key(&100) && k.contains_key(&130));
        assert!(k.contains_key(&(1 << 63)));
        assert_eq!(k.len(), a.jobs.len() - 1, "200+1 is not in the data");
    }
}
