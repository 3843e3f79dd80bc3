//! The boot clock, read once here: the clock of the kernel's events (`bpf_ktime_get_boot_ns`),
//! which the process table compares everything with (preload messages, seeding, the process
//! connector's converted timestamps).
use nix::time::{clock_gettime, ClockId};

/// `clock` now, in ns; `None` if it cannot be read (it cannot fail on Linux).
pub fn ns(clock: ClockId) -> Option<u64> {
    let t = clock_gettime(clock).ok()?;
    let s = u64::try_from(t.tv_sec()).ok()?;
    let ns = u64::try_from(t.tv_nsec()).ok()?;
    s.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// Now on the boot clock, ns (0 if unreadable).
pub fn boot_ns() -> u64 {
    ns(ClockId::CLOCK_BOOTTIME).unwrap_or(0)
}
