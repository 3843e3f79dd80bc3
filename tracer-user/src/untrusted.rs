//! Reading files that users control (package metadata in their environments), as root,
//! without letting them stall the daemon or read through it.
//!
//! - **Never blocks on a special file**: opened `O_NONBLOCK | O_NOFOLLOW | O_NOCTTY`, then
//!   `fstat`ed; anything but a regular file (a FIFO named `METADATA`, a device, a socket) is
//!   refused before a byte is read.
//! - **Never through a symbolic link** in the last component: a `METADATA` linking to
//!   `/etc/shadow` or to another user's private environment is refused (`ELOOP`).
//! - **Bounded**: at most `max` bytes of a file (a 50 GB sparse file costs one `read` of `max`),
//!   and callers bound entries per directory scan.
//! - **With the reading process's permissions**: the caller keeps each file's owner, group and
//!   mode ([`FileMode`]) and only uses what the process's user could have read itself
//!   ([`Creds::may_read`]; POSIX mode bits, ACLs not consulted, so an ACL-only grant reads as
//!   a refusal: conservative).
//!
//! A file system that never answers (a hung FUSE or NFS mount) still blocks the thread that
//! reads it: that is why these reads run off the record path, on the resolver's workers,
//! with a deadline (see `resolver`).
use std::{
    fs::File,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

/// Owner, group and permission bits of a file the daemon read for a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMode {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// `st_mode` permission bits.
    pub mode: u32,
}

impl FileMode {
    fn of(m: &std::fs::Metadata) -> FileMode {
        FileMode {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        }
    }
}

/// A process's credentials, for deciding what it could have read itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real uid.
    pub uid: u32,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
}

impl Creds {
    /// Whether this user may read a file with `m` (a directory: list it), by the POSIX mode
    /// bits: owner class, else group class, else others; root reads everything.
    pub fn may_read(&self, m: &FileMode) -> bool {
        if self.uid == 0 {
            return true;
        }
        if m.uid == self.uid {
            m.mode & 0o400 != 0
        } else if self.gids.contains(&m.gid) {
            m.mode & 0o040 != 0
        } else {
            m.mode & 0o004 != 0
        }
    }
}

/// Refusals and cuts, by cause (shown in `status.json`).
#[derive(Debug, Default)]
pub struct Refusals {
    /// Symbolic links where a metadata file or directory was expected.
    pub symlink: AtomicU64,
    /// FIFOs, devices, sockets where a regular file was expected.
    pub not_regular: AtomicU64,
    /// Files cut at the byte bound, or directory scans cut at the entry bound.
    pub truncated: AtomicU64,
    /// Metadata a process's user could not have read: not used for its records.
    pub not_permitted: AtomicU64,
    /// Site directories whose metadata was not read within the deadline (slow or hung file
    /// system): records produced without distribution and version.
    pub deadline_missed: AtomicU64,
    /// Resolution jobs dropped because the workers' queue was full.
    pub queue_full: AtomicU64,
}

impl Refusals {
    /// Adds one to a counter.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot for the status file.
    pub fn snapshot(&self) -> RefusalCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RefusalCounts {
            symlink: g(&self.symlink),
            not_regular: g(&self.not_regular),
            truncated: g(&self.truncated),
            not_permitted: g(&self.not_permitted),
            deadline_missed: g(&self.deadline_missed),
            queue_full: g(&self.queue_full),
            elf_deadline_missed: 0,
        }
    }
}

/// [`Refusals`] as numbers.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RefusalCounts {
    /// See [`Refusals::symlink`].
    pub symlink: u64,
    /// See [`Refusals::not_regular`].
    pub not_regular: u64,
    /// See [`Refusals::truncated`].
    pub truncated: u64,
    /// See [`Refusals::not_permitted`].
    pub not_permitted: u64,
    /// See [`Refusals::deadline_missed`].
    pub deadline_missed: u64,
    /// See [`Refusals::queue_full`].
    pub queue_full: u64,
    /// Programs and libraries not read within the deadline when checking for CPython's entry
    /// points (counted as not an interpreter, not an extension).
    #[serde(default)]
    pub elf_deadline_missed: u64,
}

/// Reads at most `max` bytes of the regular file `path` (not through a symbolic link, never
/// blocking on a special file), as text (invalid UTF-8 replaced), with its [`FileMode`].
pub fn read_text(path: &Path, max: usize, count: &Refusals) -> Option<(String, FileMode)> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Refusals::bump(&count.symlink);
            }
            return None;
        }
    };
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() {
        Refusals::bump(&count.not_regular);
        return None;
    }
    let mut buf = Vec::with_capacity((meta.len() as usize).min(max));
    read_up_to(&file, max, &mut buf).ok()?;
    if meta.len() as usize > max || buf.len() >= max {
        Refusals::bump(&count.truncated);
    }
    let text = match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Some((text, FileMode::of(&meta)))
}

fn read_up_to(file: &File, max: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
    file.take(max as u64).read_to_end(buf).map(|_| ())
}

/// The mode of a directory, not following a symbolic link (`None` for a link or a non-directory).
pub fn dir_mode(path: &Path, count: &Refusals) -> Option<FileMode> {
    let m = std::fs::symlink_metadata(path).ok()?;
    if m.file_type().is_symlink() {
        Refusals::bump(&count.symlink);
        return None;
    }
    m.is_dir().then(|| FileMode::of(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_links_and_size_are_refused_or_bounded() {
        let d = std::env::temp_dir().join(format!("pyusage-untrusted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = Refusals::default();
        // A FIFO nobody writes to: refused at once, never read.
        let fifo = d.join("METADATA");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(read_text(&fifo, 1024, &c).is_none());
        assert_eq!(c.snapshot().not_regular, 1);
        // A link to a device: refused without following it.
        let zero = d.join("RECORD");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_text(&zero, 1024, &c).is_none());
        assert_eq!(c.snapshot().symlink, 1);
        // A large sparse file: only `max` bytes.
        let big = d.join("big");
        let f = File::create(&big).unwrap();
        f.set_len(50 << 30).unwrap();
        let (t, _) = read_text(&big, 4096, &c).unwrap();
        assert_eq!(t.len(), 4096);
        assert_eq!(c.snapshot().truncated, 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn permissions_are_the_processs_users() {
        let m = |uid, gid, mode| FileMode { uid, gid, mode };
        let alice = Creds {
            uid: 1000,
            gids: vec![1000, 50],
        };
        assert!(alice.may_read(&m(1000, 1000, 0o600)));
        assert!(!alice.may_read(&m(1001, 1001, 0o600)));
        assert!(alice.may_read(&m(1001, 50, 0o640)));
        assert!(!alice.may_read(&m(1001, 51, 0o640)));
        assert!(alice.may_read(&m(0, 0, 0o644)));
        assert!(!alice.may_read(&m(0, 0, 0o600)), "a root-only file");
        // The owner class decides for the owner, even when others may read.
        assert!(!alice.may_read(&m(1000, 1000, 0o044)));
        assert!(Creds::default().may_read(&m(5, 5, 0)));
    }
}
