//! Dropping privileges once attached. The daemon needs root (or CAP_BPF + CAP_PERFMON) only to
//! load and attach; afterwards the ring buffer and maps are used through file descriptors it
//! already holds. It keeps:
//! - `CAP_DAC_READ_SEARCH`: to read `*.dist-info`, `pyvenv.cfg` and `conda-meta` in users'
//!   environments whatever their permissions;
//! - `CAP_SYS_PTRACE`: to read `/proc/<pid>/{root,cwd,exe}` of other users' processes (paths in
//!   containers, relative script paths, embedded interpreters).
//!
//! Every other capability is removed from the effective, permitted, inheritable and bounding
//! sets, and `no_new_privs` is set, so neither the daemon nor anything it could run can regain
//! them. With `user` configured (the shipped configuration: `pyusage`) it also stops being
//! root: it becomes that user, keeping only these two capabilities across the switch, and
//! owns its data directory.
use caps::{CapSet, Capability, CapsHashSet};

/// Capabilities kept after attaching.
pub const KEPT: &[Capability] = &[Capability::CAP_DAC_READ_SEARCH, Capability::CAP_SYS_PTRACE];

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Reading or changing a capability set.
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    /// Switching to the daemon's user.
    #[error("{what}: {source}")]
    Switch {
        /// The step.
        what: &'static str,
        /// The system's answer.
        source: std::io::Error,
    },
}

fn check(what: &'static str, r: libc::c_int) -> Result<(), PrivilegeError> {
    if r == 0 {
        Ok(())
    } else {
        Err(PrivilegeError::Switch {
            what,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Drops everything but [`KEPT`], and, given a user, becomes that user (uid, gid, no
/// supplementary groups) keeping [`KEPT`] across the switch. Without root (capabilities
/// already absent) this is a no-op.
///
/// The switch applies to every thread of the process (glibc makes each thread follow), so it
/// must happen before any thread that already dropped `CAP_SETUID` exists: the daemon calls it
/// right after attaching, before its worker threads start.
pub fn drop_after_attach(user: Option<(u32, u32)>) -> Result<(), PrivilegeError> {
    let keep: CapsHashSet = KEPT.iter().copied().collect();
    let have = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&have).copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            // Needs CAP_SETPCAP, which is still held at this point when running as root.
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    if let Some((uid, gid)) = user {
        // SAFETY: prctl with integer arguments only.
        check("PR_SET_KEEPCAPS", unsafe {
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)
        })?;
        // SAFETY: a length of 0 with a null list: the kernel reads nothing.
        check("setgroups", unsafe { libc::setgroups(0, std::ptr::null()) })?;
        // SAFETY: integer arguments only.
        check("setresgid", unsafe { libc::setresgid(gid, gid, gid) })?;
        // SAFETY: integer arguments only.
        check("setresuid", unsafe { libc::setresuid(uid, uid, uid) })?;
        // SAFETY: prctl with integer arguments only.
        check("PR_SET_KEEPCAPS", unsafe {
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0)
        })?;
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // SAFETY: prctl with constant arguments; no pointers involved.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check("PR_SET_NO_NEW_PRIVS", r)
}
