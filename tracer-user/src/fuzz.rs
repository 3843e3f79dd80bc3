//! Property-based fuzzing of every parser that reads what users or the kernel control: the
//! ring-buffer event decoder, the package-metadata parsers, the configuration loader, the spool
//! reader, the Parquet reader of `show`, and the syslog formatter. Each must return an error or
//! a bounded result for any input, never panic.
//!
//! `scripts/test.sh` runs the default number of cases (proptest's 256 per target, a few
//! seconds); `fuzz/run.sh` runs many more (`PROPTEST_CASES`).
use std::io::Write;

use proptest::prelude::*;

use crate::{resolver, untrusted::Refusals};

/// Bytes that look like what each parser expects often enough to get past its first check:
/// random bytes mixed with fragments of the real format.
fn shaped(fragments: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::sample::select(fragments).prop_map(|f| f.to_vec()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    /// The preload socket's decoder: any datagram decodes or fails, and one that decodes is
    /// re-encoded to the same bytes (the header's lengths and every field bounded).
    #[test]
    fn preload_messages_decode_or_fail(
        kind in 0u8..7,
        flags in 0u8..20,
        lens in prop::array::uniform4(0u16..40),
        body in prop::collection::vec(any::<u8>(), 0..200),
        raw in any::<bool>(),
    ) {
        use tracer_common::preload::{decode, encode, VERSION, MAX_MESSAGE};
        let d = if raw {
            body.clone()
        } else {
            // A header whose lengths add up to the body (most of the time), so that the
            // field checks are reached, not only the length check.
            let mut d = vec![VERSION, kind, flags & 0xf, 0];
            lens.iter().for_each(|l| d.extend(l.to_le_bytes()));
            let want: usize = lens.iter().map(|&l| usize::from(l)).sum();
            d.extend(body.iter().chain(std::iter::repeat(&b'/')).take(want));
            if flags > 15 {
                d.extend(&body);
            }
            d
        };
        if let Ok(m) = decode(&d) {
            let mut out = vec![0; MAX_MESSAGE];
            let n = encode(&m, &mut out).unwrap();
            prop_assert_eq!(&out[4..n], &d[4..]);
        }
    }

    /// The process connector's datagrams (kernel-written, but decoded with the same care).
    #[test]
    fn process_connector_datagrams_decode_or_fail(
        buf in shaped(&[
            &[16, 0, 0, 0, 3, 0, 0, 0], &[1, 0, 0, 0, 1, 0, 0, 0], &[0, 0, 0, 128],
            &[2, 0, 0, 0], &[0; 16],
        ]),
    ) {
        let mut out = Vec::new();
        let _ = crate::cnproc::decode(&buf, &mut out);
        prop_assert!(out.len() <= buf.len() / 16 + 1);
    }

    #[test]
    fn ring_buffer_events_decode_or_fail(buf in prop::collection::vec(any::<u8>(), 0..9000)) {
        let _ = tracer_common::user::Event::decode(&buf);
    }

    #[test]
    fn ring_buffer_events_with_valid_kinds_decode_or_fail(
        kind in 0u32..12,
        rest in prop::collection::vec(any::<u8>(), 0..9000),
    ) {
        let mut buf = kind.to_le_bytes().to_vec();
        buf.extend(rest);
        let _ = tracer_common::user::Event::decode(&buf);
    }

    #[test]
    fn metadata_headers_parse_or_fail(text in shaped(&[
        b"Name: ", b"Version: ", b"\n", b"\n\n", b"\r\n", b"\xff\xfe", b"Metadata-Version: 2.1\n",
    ])) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("METADATA");
        std::fs::write(&p, &text).unwrap();
        let (name, version, _) = resolver::read_headers(&p, &Refusals::default());
        // Bounded by the input (an invalid byte becomes U+FFFD, three bytes).
        prop_assert!(name.map_or(0, |n| n.len()) <= 3 * text.len());
        prop_assert!(version.map_or(0, |v| v.len()) <= 3 * text.len());
    }

    #[test]
    fn record_lines_parse_or_fail(line in "[a-z_./\\-,é\\x00-\\x1f]{0,80}") {
        let _ = resolver::record_top(&line);
    }

    #[test]
    fn site_directories_with_hostile_metadata_load(
        files in prop::collection::vec((
            prop::sample::select(&["METADATA", "RECORD", "top_level.txt", "PKG-INFO",
                                   "installed-files.txt"][..]),
            shaped(&[b"Name: x\n", b"Version: 1\n", b"x/__init__.py,,\n", b"../", b"/abs", b"\n"]),
        ), 0..6),
        conda in shaped(&[b"{\"name\": \"x\", \"version\": \"1\", \"files\": [", b"\"lib/python3.11/site-packages/x/a.py\"", b"]}", b"null"]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("lib/python3.11/site-packages");
        let d = site.join("x-1.0.dist-info");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(dir.path().join("conda-meta")).unwrap();
        std::fs::write(dir.path().join("conda-meta/x-1.0.json"), &conda).unwrap();
        for (name, data) in &files {
            std::fs::write(d.join(name), data).unwrap();
        }
        let _ = resolver::DistIndex::load(&site, Some(dir.path()), &Refusals::default());
    }

    #[test]
    fn configuration_files_load_or_fail_with_the_field(text in shaped(&[
        b"data_dir = \"/x\"\n", b"flush_secs = ", b"[syslog]\n", b"target = \"tcp:x:1\"\n",
        b"[privacy]\n", b"drop_fields = [\"uid\"]\n", b"kernel_procs = 0\n", b"kernel_ring_mib = 3\n",
        b"0", b"-1", b"99999999999999999999", b"\"", b"=",
    ])) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, &text).unwrap();
        if let Ok(c) = crate::config::Config::load(Some(&p)) {
            prop_assert!(c.validate().is_ok());
        }
    }

    #[test]
    fn spool_segments_read_or_fail(lines in prop::collection::vec(shaped(&[
        b"{\"record_id\":", b"\"seq\":1,", b"}", b"\n", b"null", b"{", b"\"first_seen\":\"2026-11-25T10:00:00Z\"",
    ]), 0..8)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000000000000001.jsonl");
        let mut f = std::fs::File::create(&p).unwrap();
        for l in &lines {
            f.write_all(l).unwrap();
            f.write_all(b"\n").unwrap();
        }
        let _ = pyusage_record::segment::read(&p);
    }

    #[test]
    fn hostile_parquet_files_are_errors(
        cut in 0usize..4096,
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..16),
    ) {
        // A real file of the dataset, truncated and with bytes changed.
        let dir = tempfile::tempdir().unwrap();
        let files = pyusage_record::dataset::write(dir.path(), &[pyusage_record::Record::example()]).unwrap();
        let mut data = std::fs::read(&files[0]).unwrap();
        for (at, b) in flips {
            let n = data.len();
            data[at % n] ^= b;
        }
        data.truncate(data.len().saturating_sub(cut % data.len().max(1)));
        std::fs::write(&files[0], &data).unwrap();
        let _ = pyusage_record::dataset::read(&files[0]);
    }

    #[test]
    fn syslog_messages_stay_bounded_valid_json(
        strings in prop::collection::vec("(\\PC|[\\x00-\\x1f\"\\\\]){0,300}", 6),
        max in 480usize..8192,
    ) {
        let mut r = pyusage_record::Record::example();
        r.job_id = Some(strings[0].clone());
        r.first_path = strings[1].clone();
        r.main = Some(strings[2].clone());
        r.version = Some(strings[3].clone());
        r.package = strings[4].clone();
        r.exit_signal = Some(strings[5].clone());
        let m = crate::sinks::syslog::format::format_message(&r, 16, max);
        prop_assert!(m.len() <= max, "{} > {max}", m.len());
        let s = std::str::from_utf8(&m).unwrap();
        let json = &s[s.find(" IMPORT - ").unwrap() + 10..];
        prop_assert!(serde_json::from_str::<serde_json::Value>(json).is_ok(), "{json}");
    }
}
