//! A process's CPU time for its records: at the exit, from the kernel's counters that the exit
//! program read (`ExitCpu`); for a `running` snapshot, from `/proc/<pid>/stat`.
//!
//! The kernel samples `utime`/`stime` at timer ticks (a thread that runs between ticks may be
//! charged nothing, one that wakes on them too much) but counts the scheduler runtime
//! (`sum_exec_runtime`) exactly. Like the kernel's own `cputime_adjust`, which `/proc`, `times`
//! and `getrusage` go through, the exact runtime is the total and the ticks only give the
//! proportion of user to system time.
use tracer_common::user::ExitCpu;

/// A process's CPU time, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    /// In user mode.
    pub user_us: u64,
    /// In the kernel on the process's behalf.
    pub sys_us: u64,
}

impl CpuTime {
    /// The exact runtime split in the proportion `utime:stime` (kernel `cputime_adjust`: no
    /// system ticks means all user, no user ticks all system).
    pub fn at_exit(raw: ExitCpu) -> CpuTime {
        let (utime, stime, rtime) = (raw.utime_ns, raw.stime_ns, raw.runtime_ns);
        let sys_ns = if stime == 0 {
            0
        } else if utime == 0 {
            rtime
        } else {
            // u128: the product of two ns counts overflows u64 after ~4 CPU-seconds each.
            (stime as u128 * rtime as u128 / (utime as u128 + stime as u128)) as u64
        };
        CpuTime {
            user_us: (rtime - sys_ns) / 1000,
            sys_us: sys_ns / 1000,
        }
    }

    /// A live process's CPU time from `/proc/<pid>/stat` (all its threads, live and reaped).
    /// Its `utime`/`stime` are already the kernel's `cputime_adjust` of the exact runtime, in
    /// clock ticks (10 ms at the usual `USER_HZ` = 100): that resolution is what a snapshot
    /// gets. (`/proc/<pid>/schedstat`'s exact runtime is the main thread's only.)
    pub fn of_live(pid: u32) -> Option<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::from_stat(&stat, crate::seed::clk_tck())
    }

    /// Parses the text of `/proc/<pid>/stat` with `tck` ticks per second.
    fn from_stat(stat: &str, tck: u64) -> Option<CpuTime> {
        // Fields after the parenthesised command (which may contain spaces and parentheses):
        // state is field 3, utime 14, stime 15.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let us = |ticks: u64| ticks.saturating_mul(1_000_000) / tck.max(1);
        Some(CpuTime {
            user_us: us(utime),
            sys_us: us(stime),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(utime_ns: u64, stime_ns: u64, runtime_ns: u64) -> CpuTime {
        CpuTime::at_exit(ExitCpu {
            utime_ns,
            stime_ns,
            runtime_ns,
        })
    }

    #[test]
    fn the_exact_runtime_is_split_in_the_ticks_proportion() {
        // 3:1 ticks, 2 s exact: 1.5 s user, 0.5 s system.
        assert_eq!(
            split(300_000_000, 100_000_000, 2_000_000_000),
            CpuTime {
                user_us: 1_500_000,
                sys_us: 500_000
            }
        );
        // The total is the runtime, not the ticks, whatever they sum to.
        let t = split(40_000_000, 8_000_000, 51_234_567);
        assert_eq!(t.user_us + t.sys_us, 51_234);
        assert!(t.user_us > 4 * t.sys_us);
    }

    #[test]
    fn no_ticks_of_one_kind_gives_all_to_the_other() {
        // A process shorter than a tick: no ticks at all, all user (as the kernel does).
        assert_eq!(
            split(0, 0, 1_999_999),
            CpuTime {
                user_us: 1_999,
                sys_us: 0
            }
        );
        assert_eq!(
            split(0, 4_000_000, 3_000_000),
            CpuTime {
                user_us: 0,
                sys_us: 3_000
            }
        );
        assert_eq!(
            split(4_000_000, 0, 3_000_000),
            CpuTime {
                user_us: 3_000,
                sys_us: 0
            }
        );
    }

    #[test]
    fn large_counts_do_not_overflow() {
        // A day of CPU on 128 cores, mostly system.
        let day = 86_400 * 128 * 1_000_000_000u64;
        let t = split(day / 4, 3 * (day / 4), day);
        assert_eq!(t.user_us + t.sys_us, day / 1000);
        assert_eq!(t.sys_us, 3 * day / 4 / 1000);
    }

    #[test]
    fn stat_times_are_read_after_an_awkward_command() {
        let stat = "4242 (a) b (c) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    123 45 0 0 20 0 2 0 5000 0 0";
        assert_eq!(
            CpuTime::from_stat(stat, 100),
            Some(CpuTime {
                user_us: 1_230_000,
                sys_us: 450_000
            })
        );
        assert_eq!(CpuTime::from_stat("4242 (x) R 1", 100), None);
    }

    #[test]
    fn a_live_process_has_cpu_time() {
        // Burn a little CPU so there is a tick to see.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let t = CpuTime::of_live(std::process::id()).expect("own /proc stat");
        assert!(x > 0 && t.user_us + t.sys_us >= 10_000, "{t:?}");
    }
}
