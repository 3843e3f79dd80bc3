//! Resolver tests on synthetic trees (no root, no Python needed).
use std::{fs, path::Path};

use super::{cache::RECHECK_AFTER, *};
use crate::untrusted::Creds;

fn view() -> ProcessView {
    ProcessView::default()
}

fn module(path: &str, v: &ProcessView) -> Location {
    match classify(Path::new(path), v) {
        Class::Module(l) => l,
        other => panic!("{path}: expected a module, got {other:?}"),
    }
}

#[test]
fn site_packages_pycache_extensions_and_vendored_libs() {
    let v = view();
    let l = module(
        "/v/lib/python3.11/site-packages/numpy/core/__pycache__/_methods.cpython-311.pyc",
        &v,
    );
    assert_eq!(l.package, "numpy");
    assert_eq!(l.site_dir, Path::new("/v/lib/python3.11/site-packages"));
    assert_eq!(l.prefix.as_deref(), Some(Path::new("/v")));
    let l = module(
        "/v/lib/python3.11/site-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so",
        &v,
    );
    assert_eq!(l.package, "_cffi_backend");
    let l = module(
        "/v/lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc",
        &v,
    );
    assert_eq!(l.package, "six");
    assert_eq!(
        classify(
            Path::new("/v/lib/python3.11/site-packages/scipy.libs/libgfortran-1.so"),
            &v
        ),
        Class::Ignore
    );
    assert_eq!(
        classify(
            Path::new(
                "/v/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-ff651d7f.so"
            ),
            &v
        ),
        Class::Blas("openblas")
    );
    assert_eq!(
        classify(Path::new("/opt/intel/lib/libmkl_rt.so.2"), &v),
        Class::Blas("mkl")
    );
    assert_eq!(
        classify(Path::new("/lib/x86_64-linux-gnu/libc.so.6"), &v),
        Class::Ignore
    );
    assert_eq!(classify(Path::new("/etc/ld.so.cache"), &v), Class::Ignore);
}

#[test]
fn debian_dist_packages_user_site_and_stdlib() {
    let v = view();
    let l = module("/usr/lib/python3/dist-packages/mpi4py/__init__.py", &v);
    assert_eq!((l.package.as_str(), l.kind), ("mpi4py", EnvKind::System));
    assert_eq!(l.prefix.as_deref(), Some(Path::new("/usr")));
    let l = module(
        "/home/a/.local/lib/python3.11/site-packages/rich/__init__.py",
        &v,
    );
    assert_eq!((l.package.as_str(), l.kind), ("rich", EnvKind::User));
    let l = module(
        "/usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc",
        &v,
    );
    assert_eq!((l.package.as_str(), l.kind), ("json", EnvKind::Stdlib));
    let l = module(
        "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        &v,
    );
    assert_eq!(l.package, "_ssl");
    let l = module(
        "/root/.pyenv/versions/3.11.7/lib/python3.11/__pycache__/os.cpython-311.pyc",
        &v,
    );
    assert_eq!((l.package.as_str(), l.kind), ("os", EnvKind::Stdlib));
    assert_eq!(
        python_version_of(Path::new("/usr/lib/python3.11/os.py")).as_deref(),
        Some("3.11")
    );
    assert_eq!(
        classify(
            Path::new("/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"),
            &v
        ),
        Class::Ignore
    );
}

#[test]
fn pythonpath_script_dir_and_non_utf8() {
    let v = ProcessView {
        pythonpath: vec![path_from_bytes(b"/data/\xffweird")],
        script: Some("/home/u/run/main.py".into()),
        pycache_prefix: None,
    };
    let l = module_bytes(b"/data/\xffweird/mylib/__init__.py", &v);
    assert_eq!((l.package.as_str(), l.kind), ("mylib", EnvKind::PythonPath));
    let l = module("/home/u/run/helpers.py", &v);
    assert_eq!((l.package.as_str(), l.kind), ("helpers", EnvKind::Unknown));
    assert_eq!(
        classify(Path::new("/home/u/run/main.py"), &v),
        Class::Ignore
    );
    assert_eq!(classify(Path::new("/elsewhere/x.py"), &v), Class::Unplaced);
    assert_eq!(classify(Path::new("/elsewhere/x.txt"), &v), Class::Ignore);
    // A script named relative to a working directory that could not be read: its directory
    // is unknown, so nothing is placed under it (not under the empty path, which every path
    // starts with).
    let rel = ProcessView {
        script: Some("run.py".into()),
        ..v
    };
    assert_eq!(
        classify(Path::new("/tmp/p/localpkg/__init__.py"), &rel),
        Class::Unplaced
    );
}

fn module_bytes(p: &[u8], v: &ProcessView) -> Location {
    match classify(&path_from_bytes(p), v) {
        Class::Module(l) => l,
        other => panic!("expected module, got {other:?}"),
    }
}

/// Classifies and resolves one file on the host.
fn resolve(r: &mut Resolver, file: &Path) -> Resolved {
    let loc = module(file.to_str().unwrap(), &view());
    r.resolve(&loc, file, &Root::host(), false, &Creds::default())
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// A venv under `root` (its site-packages returned) with one distribution `name`-`version`
/// whose RECORD lists `record`.
fn venv_with(root: &Path, name: &str, version: &str, record: &str) -> std::path::PathBuf {
    let venv = root.join("v");
    let sp = venv.join("lib/python3.11/site-packages");
    write(&venv.join("pyvenv.cfg"), "home = /usr/bin\n");
    let d = sp.join(format!("{name}-{version}.dist-info"));
    write(
        &d.join("METADATA"),
        &format!("Name: {name}\nVersion: {version}\n"),
    );
    write(&d.join("RECORD"), record);
    sp
}

#[test]
fn venv_dist_info_record_maps_import_name_to_distribution() {
    let t = tempfile::tempdir().unwrap();
    let venv = t.path().join("my venv é");
    let sp = venv.join("lib/python3.11/site-packages");
    write(&venv.join("pyvenv.cfg"), "home = /usr/bin\n");
    write(
        &sp.join("PyYAML-6.0.1.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0.1\n\nbody\n",
    );
    write(
        &sp.join("PyYAML-6.0.1.dist-info/RECORD"),
        "_yaml/__init__.py,sha256=x,1\nyaml/__init__.py,sha256=y,2\nPyYAML-6.0.1.dist-info/RECORD,,\n",
    );
    write(&sp.join("yaml/__init__.py"), "");
    // Two distributions sharing the `google` namespace.
    write(
        &sp.join("protobuf-5.1.dist-info/METADATA"),
        "Name: protobuf\nVersion: 5.1\n",
    );
    write(
        &sp.join("protobuf-5.1.dist-info/RECORD"),
        "google/protobuf/__init__.py,,\n",
    );
    write(
        &sp.join("google_auth-2.0.dist-info/METADATA"),
        "Name: google-auth\nVersion: 2.0\n",
    );
    write(
        &sp.join("google_auth-2.0.dist-info/RECORD"),
        "google/auth/__init__.py,,\n",
    );
    // egg-info with top_level.txt only.
    write(
        &sp.join("oldpkg-0.3.egg-info/PKG-INFO"),
        "Name: OldPkg\nVersion: 0.3\n",
    );
    write(&sp.join("oldpkg-0.3.egg-info/top_level.txt"), "old\n");

    let mut r = Resolver::new();
    let res = resolve(&mut r, &sp.join("yaml/__pycache__/loader.cpython-311.pyc"));
    assert_eq!(res.package, "yaml");
    assert_eq!(res.distribution.as_deref(), Some("PyYAML"));
    assert_eq!(res.version.as_deref(), Some("6.0.1"));
    assert_eq!(res.env_kind, EnvKind::Venv);
    assert_eq!(res.env_prefix.as_deref(), Some(venv.to_str().unwrap()));

    let res = resolve(&mut r, &sp.join("google/auth/__init__.py"));
    assert_eq!(
        (res.package.as_str(), res.distribution.as_deref()),
        ("google", Some("google-auth"))
    );

    let res = resolve(&mut r, &sp.join("old/__init__.py"));
    assert_eq!(
        (res.distribution.as_deref(), res.version.as_deref()),
        (Some("OldPkg"), Some("0.3"))
    );

    // A package installed after the first look is found (mtime of the site dir changed,
    // looked at again once the cached index is older than RECHECK_AFTER).
    write(
        &sp.join("rich-13.0.dist-info/METADATA"),
        "Name: rich\nVersion: 13.0\n",
    );
    write(
        &sp.join("rich-13.0.dist-info/RECORD"),
        "rich/__init__.py,,\n",
    );
    std::thread::sleep(RECHECK_AFTER + std::time::Duration::from_millis(50));
    let file = sp.join("rich/__init__.py");
    let loc = module(file.to_str().unwrap(), &view());
    assert_eq!(
        r.resolve(&loc, &file, &Root::host(), false, &Creds::default())
            .version
            .as_deref(),
        Some("13.0")
    );
}

#[test]
fn conda_meta_and_container_root() {
    let t = tempfile::tempdir().unwrap();
    let env = t.path().join("envs/sci");
    let sp = env.join("lib/python3.12/site-packages");
    fs::create_dir_all(&sp).unwrap();
    write(
        &env.join("conda-meta/numpy-2.1.0-py312.json"),
        r#"{"name":"numpy","version":"2.1.0","files":["lib/python3.12/site-packages/numpy/__init__.py","bin/f2py"]}"#,
    );
    let mut r = Resolver::new();
    let res = resolve(&mut r, &sp.join("numpy/__init__.py"));
    assert_eq!(res.env_kind, EnvKind::Conda);
    assert_eq!(
        (res.distribution.as_deref(), res.version.as_deref()),
        (Some("numpy"), Some("2.1.0"))
    );

    // Seen from a container: the same tree is the container's `/opt/sci`.
    let root = Root {
        dir: t.path().join("envs"),
        ns: 4026531999,
    };
    let file = Path::new("/sci/lib/python3.12/site-packages/numpy/__init__.py");
    let loc = module(file.to_str().unwrap(), &view());
    let res = r.resolve(&loc, file, &root, true, &Creds::default());
    assert_eq!(res.env_kind, EnvKind::Conda);
    assert_eq!(res.version.as_deref(), Some("2.1.0"));
    let file = Path::new("/usr/lib/python3/dist-packages/x/__init__.py");
    let loc = module(file.to_str().unwrap(), &view());
    assert_eq!(
        r.resolve(&loc, file, &root, true, &Creds::default())
            .env_kind,
        EnvKind::Container
    );
}

#[test]
fn unplaced_modules_follow_the_imported_package_chain() {
    let inits: std::collections::HashSet<PathBuf> = ["/x/plug/mypkg", "/x/plug/mypkg/sub"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let ext = |_: &Path, stem: &str| stem == "plainext";
    let place = |p: &str| match classify_unplaced(Path::new(p), &inits, ext) {
        Class::Module(l) => (l.package, l.site_dir),
        other => panic!("{p}: {other:?}"),
    };
    assert_eq!(
        place("/x/plug/mypkg/sub/m.py"),
        ("mypkg".into(), "/x/plug".into())
    );
    assert_eq!(
        place("/x/plug/mypkg/sub/__pycache__/m.cpython-311.pyc"),
        ("mypkg".into(), "/x/plug".into())
    );
    assert_eq!(
        place("/x/plug/mypkg/__init__.py"),
        ("mypkg".into(), "/x/plug".into())
    );
    assert_eq!(
        place("/x/plug/single.py"),
        ("single".into(), "/x/plug".into())
    );
    assert_eq!(
        place("/x/plug/_ext.cpython-311-x86_64-linux-gnu.so"),
        ("_ext".into(), "/x/plug".into())
    );
    assert_eq!(place("/x/deps.zip"), ("deps.zip".into(), "/x".into()));
    assert_eq!(
        place("/x/plug/plainext.so"),
        ("plainext".into(), "/x/plug".into())
    );
    // An MPI plugin or an OpenSSL provider: a plain name, but no PyInit_ symbol.
    for p in [
        "/opt/lib/libfoo.so",
        "/usr/lib/openmpi/mca_btl_tcp.so",
        "/usr/lib/ossl-modules/legacy.so",
    ] {
        assert_eq!(classify_unplaced(Path::new(p), &inits, ext), Class::Ignore);
    }
    assert_eq!(
        place("/usr/lib/python3/dist-packages/../x/_sysconfigdata__x86_64-linux-gnu.py").0,
        "_sysconfigdata__x86_64-linux-gnu"
    );
}

/// A user's site directory with a FIFO for METADATA, a RECORD linking to /dev/zero, a
/// dist-info linking into another user's environment and a metadata file only its owner may
/// read: nothing blocks, nothing is read through a link, and the private metadata is used for
/// its owner only.
#[test]
fn hostile_metadata_neither_blocks_nor_leaks() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    let sp = venv_with(t, "priv", "2.0", "priv/__init__.py,,\n");
    fs::create_dir_all(sp.join("fifo-1.0.dist-info")).unwrap();
    nix::unistd::mkfifo(
        &sp.join("fifo-1.0.dist-info/METADATA"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", sp.join("fifo-1.0.dist-info/RECORD")).unwrap();
    let other = t.join("other/x-9.9.dist-info");
    write(&other.join("METADATA"), "Name: secret-dist\nVersion: 9.9\n");
    write(&other.join("RECORD"), "x/__init__.py,,\n");
    std::os::unix::fs::symlink(&other, sp.join("x-9.9.dist-info")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        sp.join("priv-2.0.dist-info/METADATA"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(
        sp.join("priv-2.0.dist-info/METADATA"),
        Some(4242),
        Some(4242),
    )
    .unwrap();

    let mut r = Resolver::new();
    let started = std::time::Instant::now();
    let with = |r: &mut Resolver, rel: &str, creds: &Creds| {
        let file = sp.join(rel);
        let loc = module(file.to_str().unwrap(), &view());
        r.resolve(&loc, &file, &Root::host(), false, creds)
    };
    let other_user = Creds {
        uid: 1000,
        gids: vec![1000],
    };
    let x = with(&mut r, "x/__init__.py", &Creds::default());
    assert_eq!(
        (x.package.as_str(), x.distribution),
        ("x", None),
        "not through the link"
    );
    let f = with(&mut r, "fifo/__init__.py", &Creds::default());
    assert_eq!(
        f.version.as_deref(),
        Some("1.0"),
        "from the directory name only"
    );
    assert!(
        started.elapsed() < DEADLINE,
        "nothing blocked: {:?}",
        started.elapsed()
    );
    let owner = Creds {
        uid: 4242,
        gids: vec![4242],
    };
    assert_eq!(
        with(&mut r, "priv/__init__.py", &owner).version.as_deref(),
        Some("2.0")
    );
    assert_eq!(with(&mut r, "priv/__init__.py", &other_user).version, None);
    let c = r.refusals.snapshot();
    assert!(
        c.symlink >= 2 && c.not_regular >= 1 && c.not_permitted >= 1,
        "{c:?}"
    );
}

/// A site directory reached from two mount namespaces (or by two paths) is read once: the
/// second finds the first's index by (device, inode, mtime).
#[test]
fn one_directory_seen_from_two_namespaces_is_read_once() {
    let t = tempfile::tempdir().unwrap();
    let sp = venv_with(t.path(), "a", "1.0", "a/__init__.py,,\n");
    let file = sp.join("a/__init__.py");
    let loc = module(file.to_str().unwrap(), &view());
    let mut r = Resolver::new();
    let first = r.resolve(&loc, &file, &Root::host(), false, &Creds::default());
    assert_eq!(first.version.as_deref(), Some("1.0"));
    // Changed inside the dist-info (the site directory's own mtime is unchanged): another
    // namespace's first look gets the index already read.
    write(
        &sp.join("a-1.0.dist-info/METADATA"),
        "Name: a\nVersion: 9.9\n",
    );
    let other_ns = Root {
        dir: PathBuf::from("/"),
        ns: 4026531999,
    };
    let second = r.resolve(&loc, &file, &other_ns, false, &Creds::default());
    assert_eq!(second.version.as_deref(), Some("1.0"));
}
