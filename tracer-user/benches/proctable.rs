//! The processor's per-event work, replayed: what the process table and the record path cost
//! for one Python start, without the kernel, the ring buffer or the VM's scheduling noise.
//!
//! Usage: `cargo bench -p tracer-user --bench proctable -- STRACE [STARTS] [ROUNDS]`, where
//! STRACE is `strace -f -qq -e trace=openat,mmap,execve -o STRACE python ...` of a real start
//! (`bench/proctable.sh` makes one of the reference start). Each replayed start is the events
//! the kernel side would send for it: the exec, every open of a module file or archive, every
//! failed `.pyc` probe, every executable mapping of a descriptor, and the exit. The table asks
//! its `/proc` facts of a stand-in (the process is long gone), but reads the packages'
//! metadata from the real files, as the daemon does. Prints µs per start for the table's
//! events, the records' building and their JSON lines, the fastest and the median round, then
//! µs per CPU sample counted into a process's samples.
use std::{path::PathBuf, time::Instant};

use pyusage_daemon::{
    elf::ElfCache,
    proctable::{Identity, ProcFacts, ProcTable},
    records::{build, Node, Users},
};
use tracer_common::user::{Event, ExecInfo, OpenInfo};

/// The daemon's allocator (`cli/src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `/proc` answers of a live, ordinary process of uid 0 outside a job.
struct Facts;
impl ProcFacts for Facts {
    fn cwd(&self, _: u32) -> Option<PathBuf> {
        Some("/tmp".into())
    }
    fn cgroup(&self, _: u32) -> Option<String> {
        Some("0::/user.slice\n".into())
    }
    fn fd_path(&self, _: u32, _: i32) -> Option<PathBuf> {
        None
    }
    fn exe(&self, _: u32) -> Option<PathBuf> {
        None
    }
    fn is_interpreter(&self, _: u32, _: &mut ElfCache) -> Option<bool> {
        Some(true)
    }
    fn identity(&self, _: u32) -> Option<Identity> {
        Some(Identity {
            ppid: 1,
            mnt_ns: 1,
            uid: 0,
        })
    }
}

/// One strace line's event, for the process `tgid` at `t` ns (`None`: nothing the kernel
/// side would send).
fn event(line: &str, tgid: u32, t: u64) -> Option<Event> {
    let call = line.split_once(char::is_whitespace)?.1.trim_start();
    let ret = call.rsplit_once(" = ")?.1.split_whitespace().next()?;
    let ret: i32 = ret
        .parse()
        .ok()
        .or_else(|| ret.starts_with("0x").then_some(0))?;
    let quoted = || call.split('"').nth(1).map(|p| p.as_bytes().to_vec());
    if call.starts_with("execve(") {
        let filename = quoted()?;
        return Some(Event::Exec(ExecInfo {
            tgid,
            ppid: 1,
            uid: 0,
            gid: 0,
            mnt_ns: 1,
            ktime_ns: t,
            args: [&filename[..], b"\0-c\0import numpy"].concat(),
            filename,
            env: b"PATH=/usr/bin\0HOME=/root\0".to_vec(),
            flags: 0,
            promoted: false,
            exe: None,
            groups: None,
        }));
    }
    if call.starts_with("mmap(") {
        let args: Vec<&str> = call.split(", ").collect();
        let fd: i32 = args.get(4)?.parse().ok()?;
        return (args.get(2)?.contains("PROT_EXEC") && fd >= 0).then_some(Event::MapExec {
            tgid,
            tid: tgid,
            fd,
            ktime_ns: t,
        });
    }
    if !call.starts_with("openat(") {
        return None;
    }
    let path = quoted()?;
    let write = call.contains("O_WRONLY") || call.contains("O_RDWR");
    let module = [
        &b".py"[..],
        b".pyc",
        b".so",
        b".zip",
        b".egg",
        b".pyz",
        b".whl",
    ]
    .iter()
    .any(|s| path.ends_with(s))
        || path.windows(4).any(|w| w == b".so.");
    let sent = match (write, ret >= 0) {
        (true, _) => false,
        (false, true) => module,
        (false, false) => path.ends_with(b".pyc"),
    };
    sent.then(|| {
        Event::Open(OpenInfo {
            tgid,
            tid: tgid,
            ktime_ns: t,
            ret,
            dfd: -100,
            write,
            opened: (ret >= 0 && path.starts_with(b"/")).then(|| leaf_first(&path)),
            path,
            opened_partial: false,
        })
    })
}

/// `path`'s components leaf first, each NUL-terminated (the kernel's form of an opened path).
fn leaf_first(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1);
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
        out.extend_from_slice(c);
        out.push(0);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(trace) = args.first() else {
        eprintln!("usage: proctable STRACE [STARTS] [ROUNDS]");
        std::process::exit(2);
    };
    let starts: u32 = args.get(1).map_or(200, |s| s.parse().expect("STARTS"));
    let rounds: usize = args.get(2).map_or(7, |s| s.parse().expect("ROUNDS"));
    let text = std::fs::read_to_string(trace).expect("reading the strace file");
    // The traced process's own lines (its first pid's: the main thread), in order; a call
    // strace split around another thread's (`<unfinished ...>`) is left out.
    let first_pid = text
        .split_whitespace()
        .next()
        .expect("an empty trace")
        .to_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(first_pid.as_str()))
        .collect();
    let node = Node {
        host: "bench".into(),
        system: None,
        subsystem: None,
        is_compute: true,
        staff_group: None,
    };
    let mut users = Users::new(None);
    let (mut table_us, mut build_us, mut json_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut events = 0usize;
    let mut records = 0usize;
    let mut out = Vec::new();
    for round in 0..rounds {
        let mut table = ProcTable::new(1_700_000_000_000_000, 1);
        // Each start's events, made before the clock runs.
        let streams: Vec<Vec<Event>> = (0..starts)
            .map(|i| {
                let tgid = 100_000 + i;
                let t0 = (round as u64 * 1000 + i as u64 + 1) * 1_000_000_000;
                let mut evs: Vec<Event> = lines
                    .iter()
                    .enumerate()
                    .filter_map(|(k, l)| event(l, tgid, t0 + k as u64 * 1000))
                    .collect();
                evs.push(Event::Exit {
                    tgid,
                    exit_code: 0,
                    cpu: None,
                    ktime_ns: t0 + 500_000_000,
                });
                evs
            })
            .collect();
        events = streams[0].len();
        let (mut table_t, mut build_t, mut json_t) = (0f64, 0f64, 0f64);
        for evs in streams {
            let t = Instant::now();
            let mut finished = Vec::new();
            for ev in evs {
                finished.extend(table.handle(ev, &Facts));
            }
            table_t += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let recs: Vec<_> = finished
                .iter()
                .flat_map(|f| build(f, &node, &mut users))
                .collect();
            build_t += t.elapsed().as_secs_f64();
            records = recs.len();
            let t = Instant::now();
            out.clear();
            pyusage_record::lines::write(&recs, &mut out).expect("JSON lines");
            json_t += t.elapsed().as_secs_f64();
        }
        let per = |s: f64| s * 1e6 / starts as f64;
        table_us.push(per(table_t));
        build_us.push(per(build_t));
        json_us.push(per(json_t));
    }
    println!(
        "{events} events and {records} records a start, {starts} starts a round, {rounds} rounds"
    );
    for (name, mut v) in [
        ("table", table_us),
        ("records", build_us),
        ("json", json_us),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:8} {:7.1} us/start fastest, {:7.1} median ({:.0} ns/event fastest)",
            v[0],
            v[v.len() / 2],
            v[0] * 1000.0 / events as f64
        );
    }
    println!(
        "samples  {:7.3} us/sample fastest (32 frames in 8 packages, counted as the processor does)",
        samples(rounds)
    );
}

/// µs per CPU sample counted into a process's samples (`proctable::samples::Samples::add`):
/// 32-frame stacks of 64 resolved code objects in 8 packages; the fastest of `rounds`.
fn samples(rounds: usize) -> f64 {
    use pyusage_daemon::proctable::samples::Samples;
    use tracer_common::user::SampleInfo;
    const N: usize = 100_000;
    let code = |i: u64| 0x7f00_0000_0000 + i * 0x1a0;
    let stacks: Vec<SampleInfo> = (0..N as u64)
        .map(|k| SampleInfo {
            tgid: 1,
            tid: 1,
            ktime_ns: k,
            user_ip: 0,
            frames: (0..32).map(|d| code((k + d * 7) % 64)).collect(),
            flags: 0,
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let mut s = Samples::default();
        for i in 0..64 {
            s.resolved(code(i), Some((i % 8) as u32), |_, _| None);
        }
        let batch = stacks.clone();
        let t = Instant::now();
        for x in batch {
            s.add(x, None);
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / N as f64);
        assert_eq!(s.total, N as u64);
    }
    best
}
