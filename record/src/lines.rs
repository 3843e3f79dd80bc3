//! Records as JSON lines, as the spool stores them: byte for byte what `serde_json` makes of a
//! [`Record`], followed by `\n`, with the serialisation of a process's fields shared.
//!
//! A process's records (one per package it imported, ~80 for an import-heavy start) repeat
//! its ~30 process, user and job fields, about half of each line. Writing the lines was the
//! largest single cost of the daemon's record path, so those fields are serialised once per
//! run of records that have them equal, and each record writes only its identity and its
//! package's fields. The three parts are serialised by `serde` from views that borrow the
//! record (the same attributes as [`Record`]'s), never by hand: a test checks the lines
//! against `serde_json::to_vec` on odd records.
use serde::Serialize;

use crate::{CallerSamples, EnvKind, Exit, JobSource, Micros, Record, Source};

/// A record's identity: `{"record_id":…,"seq":…}`.
#[derive(Serialize)]
struct Identity<'a> {
    record_id: &'a str,
    seq: u64,
}

/// The fields a process's records share (in [`Record`]'s order, between `seq` and `package`).
#[derive(Serialize, PartialEq)]
struct ProcessPart<'a> {
    source: &'a Source,
    sources: &'a [Source],
    host: &'a str,
    system: &'a Option<String>,
    subsystem: &'a Option<String>,
    is_compute: bool,
    pid: i32,
    ppid: i32,
    root_pid: i32,
    #[serde(with = "crate::ts")]
    process_start: Micros,
    #[serde(with = "crate::ts_opt")]
    process_end: Option<Micros>,
    exit: &'a Exit,
    exit_code: Option<i32>,
    exit_signal: &'a Option<String>,
    executable: &'a str,
    python_version: &'a Option<String>,
    main: &'a Option<String>,
    uid: u32,
    username: &'a Option<String>,
    is_staff: bool,
    in_container: bool,
    container_runtime: &'a Option<String>,
    blas: &'a Option<String>,
    job_id: &'a Option<String>,
    step_id: &'a Option<String>,
    job_source: &'a Option<JobSource>,
    rank: Option<i32>,
    n_ranks: Option<u32>,
    num_nodes: u32,
    qos: &'a Option<String>,
    account: &'a Option<String>,
    partition: &'a Option<String>,
}

/// A record's own fields, from `package` to the end.
#[derive(Serialize)]
struct PackagePart<'a> {
    package: &'a str,
    distribution: &'a Option<String>,
    version: &'a Option<String>,
    env_kind: &'a EnvKind,
    env_prefix: &'a Option<String>,
    first_path: &'a str,
    n_files: u32,
    #[serde(with = "crate::ts")]
    first_seen: Micros,
    cpu_user_us: Option<u64>,
    cpu_sys_us: Option<u64>,
    cpu_sampling: &'a Option<String>,
    cpu_sample_hz: Option<u32>,
    cpu_samples_total: Option<u64>,
    cpu_samples_self: Option<u64>,
    cpu_samples_inclusive: Option<u64>,
    cpu_samples_callers: &'a [CallerSamples],
}

/// The three views of `r`. Every field is named (no `..`), so that a field added to
/// [`Record`] does not compile until it is placed in one of them.
fn parts(r: &Record) -> (Identity<'_>, ProcessPart<'_>, PackagePart<'_>) {
    let Record {
        record_id,
        seq,
        source,
        sources,
        host,
        system,
        subsystem,
        is_compute,
        pid,
        ppid,
        root_pid,
        process_start,
        process_end,
        exit,
        exit_code,
        exit_signal,
        executable,
        python_version,
        main,
        uid,
        username,
        is_staff,
        in_container,
        container_runtime,
        blas,
        job_id,
        step_id,
        job_source,
        rank,
        n_ranks,
        num_nodes,
        qos,
        account,
        partition,
        package,
        distribution,
        version,
        env_kind,
        env_prefix,
        first_path,
        n_files,
        first_seen,
        cpu_user_us,
        cpu_sys_us,
        cpu_sampling,
        cpu_sample_hz,
        cpu_samples_total,
        cpu_samples_self,
        cpu_samples_inclusive,
        cpu_samples_callers,
    } = r;
    (
        Identity {
            record_id,
            seq: *seq,
        },
        ProcessPart {
            source,
            sources,
            host,
            system,
            subsystem,
            is_compute: *is_compute,
            pid: *pid,
            ppid: *ppid,
            root_pid: *root_pid,
            process_start: *process_start,
            process_end: *process_end,
            exit,
            exit_code: *exit_code,
            exit_signal,
            executable,
            python_version,
            main,
            uid: *uid,
            username,
            is_staff: *is_staff,
            in_container: *in_container,
            container_runtime,
            blas,
            job_id,
            step_id,
            job_source,
            rank: *rank,
            n_ranks: *n_ranks,
            num_nodes: *num_nodes,
            qos,
            account,
            partition,
        },
        PackagePart {
            package,
            distribution,
            version,
            env_kind,
            env_prefix,
            first_path,
            n_files: *n_files,
            first_seen: *first_seen,
            cpu_user_us: *cpu_user_us,
            cpu_sys_us: *cpu_sys_us,
            cpu_sampling,
            cpu_sample_hz: *cpu_sample_hz,
            cpu_samples_total: *cpu_samples_total,
            cpu_samples_self: *cpu_samples_self,
            cpu_samples_inclusive: *cpu_samples_inclusive,
            cpu_samples_callers,
        },
    )
}

/// Appends `records` to `out` as JSON lines: for each, exactly `serde_json::to_writer` of it
/// and `\n`.
pub fn write(records: &[Record], out: &mut Vec<u8>) -> serde_json::Result<()> {
    // The previous record's process part, and where its serialisation lies in `out`.
    let mut shared: Option<(ProcessPart<'_>, std::ops::Range<usize>)> = None;
    for r in records {
        let (id, process, package) = parts(r);
        // `{"record_id":…,"seq":…` (its closing brace dropped).
        serde_json::to_writer(&mut *out, &id)?;
        out.pop();
        // `,"source":…,"partition":…`: copied from the previous line when equal.
        match &shared {
            Some((prev, at)) if *prev == process => {
                let at = at.clone();
                out.extend_from_within(at);
            }
            _ => {
                let start = out.len();
                serde_json::to_writer(&mut *out, &process)?;
                out.pop();
                out[start] = b',';
                shared = Some((process, start..out.len()));
            }
        }
        // `,"package":…}`.
        let start = out.len();
        serde_json::to_writer(&mut *out, &package)?;
        out[start] = b',';
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(records: &[Record]) -> Vec<u8> {
        let mut want = Vec::new();
        for r in records {
            serde_json::to_writer(&mut want, r).unwrap();
            want.push(b'\n');
        }
        want
    }

    #[test]
    fn lines_are_serde_json_byte_for_byte() {
        let odd = Record::odd_examples();
        // Each odd record alone, all in a row, and runs of one process's records (the shared
        // part copied) broken by others.
        for r in &odd {
            let mut out = Vec::new();
            write(std::slice::from_ref(r), &mut out).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected(std::slice::from_ref(r)))
            );
        }
        let mut runs = Vec::new();
        for (i, r) in odd.iter().enumerate() {
            for k in 0..3 {
                let mut same = r.clone();
                same.seq = (i * 10 + k) as u64;
                same.record_id = format!("id-{i}-{k}");
                same.package = format!("pkg_{k}");
                same.n_files = k as u32;
                runs.push(same);
            }
        }
        runs.extend(odd.iter().cloned());
        let mut out = b"already there\n".to_vec();
        write(&runs, &mut out).unwrap();
        let mut want = b"already there\n".to_vec();
        want.extend(expected(&runs));
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        // And they read back.
        for (line, r) in out.split(|&b| b == b'\n').skip(1).zip(&runs) {
            assert_eq!(&serde_json::from_slice::<Record>(line).unwrap(), r);
        }
    }
}
