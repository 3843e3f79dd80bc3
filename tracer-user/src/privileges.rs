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
//! them. It stays uid 0 so the files it writes keep one owner across restarts.
use caps::{CapSet, Capability, CapsHashSet};

/// Capabilities kept after attaching.
pub const KEPT: &[Capability] = &[Capability::CAP_DAC_READ_SEARCH, Capability::CAP_SYS_PTRACE];

/// Drops everything but [`KEPT`]. Without root (capabilities already absent) this is a no-op.
pub fn drop_after_attach() -> Result<(), caps::errors::CapsError> {
    let keep: CapsHashSet = KEPT.iter().copied().collect();
    let have = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&have).copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            // Needs CAP_SETPCAP, which is still held at this point when running as root.
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // SAFETY: prctl with constant arguments; no pointers involved.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(caps::errors::CapsError::from(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
