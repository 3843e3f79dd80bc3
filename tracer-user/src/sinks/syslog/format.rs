//! RFC 5424 message formatting, size bounding and TCP framing (pure functions).
use pyusage_record::{columns, format_micros, Record};
use serde_json::Value;

const SEVERITY_INFO: u8 = 6;
/// Fields never shortened: the de-duplication key a consumer needs intact (ours, 36 bytes).
const KEEP_WHOLE: &[&str] = &[columns::RECORD_ID];
const MARK: &str = "…";

/// RFC 5424 HOSTNAME/APP-NAME/PROCID: printable US-ASCII, at most `max` characters, `-` when
/// empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One complete syslog message for `r`, at most `max` bytes: `<PRI>1 TIMESTAMP HOST pyusage
/// PID IMPORT - {json}`. The timestamp is the record's `first_seen`, so a resend is
/// byte-identical. Over-long string fields are cut at a UTF-8 boundary, end in `…`, and are
/// listed in `_truncated`; so is `cpu_samples_callers` when its smallest entries are left out
/// (up to 8 package names, each a directory name the user chose; never cut, which would name
/// another package). The JSON stays valid and the message is never split.
pub fn format_message(r: &Record, facility: u8, max: usize) -> Vec<u8> {
    let pri = facility as u16 * 8 + SEVERITY_INFO as u16;
    let header = format!(
        "<{pri}>1 {} {} pyusage {} IMPORT - ",
        format_micros(r.first_seen),
        header_field(&r.host, 255),
        header_field(&r.pid.to_string(), 128),
    );
    let json = serde_json::to_string(r).expect("records serialise");
    if header.len() + json.len() <= max {
        return [header.into_bytes(), json.into_bytes()].concat();
    }
    let mut v: Value = serde_json::to_value(r).expect("records serialise");
    let mut truncated: Vec<String> = Vec::new();
    loop {
        let mut obj = v.clone();
        if !truncated.is_empty() {
            obj["_truncated"] = Value::from(truncated.clone());
        }
        let json = obj.to_string();
        let over = (header.len() + json.len()).saturating_sub(max);
        if over == 0 {
            return [header.into_bytes(), json.into_bytes()].concat();
        }
        // Shorten the longest remaining shrinkable string by what is over (plus the marker).
        // Every string field can be cut (a 30 KiB `SLURM_JOB_ID` is the user's to choose).
        let longest = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !KEEP_WHOLE.contains(&k.as_str()))
            .filter_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.len())))
            .filter(|(_, l)| *l > MARK.len())
            .max_by_key(|(_, l)| *l);
        // The callers' list when it is longer than any string: its last (smallest) entry goes.
        let callers = &mut v[columns::CPU_SAMPLES_CALLERS];
        let callers_len = callers.to_string().len();
        if let Some(list) = callers.as_array_mut().filter(|l| !l.is_empty()) {
            if longest.as_ref().is_none_or(|(_, l)| callers_len >= *l) {
                list.pop();
                let field = columns::CPU_SAMPLES_CALLERS.to_owned();
                if !truncated.contains(&field) {
                    truncated.push(field);
                }
                continue;
            }
        }
        let Some((field, len)) = longest else {
            // Nothing left to shorten (absurdly small limit): the bare header and a marker.
            return [header.into_bytes(), br#"{"_truncated":["*"]}"#.to_vec()].concat();
        };
        let s = v[&field].as_str().unwrap_or("").to_owned();
        // JSON escaping can make the encoded form longer than the raw string: cut generously.
        let keep = len
            .saturating_sub(over + MARK.len() + 16)
            .min(len / 2 + len / 4);
        v[&field] = Value::from(format!("{}{MARK}", cut(&s, keep)));
        if !truncated.contains(&field) {
            truncated.push(field);
        }
    }
}

/// RFC 6587 octet-counting framing: `LEN SP MSG`.
pub fn frame_tcp(msg: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        let mut r = Record::example();
        r.record_id = "0193".into();
        r.seq = 5;
        r.host = "n 1\n".into();
        (r.pid, r.root_pid) = (42, 42);
        r.process_start = pyusage_record::parse_micros("2026-11-25T10:00:00.000001Z").unwrap();
        r.first_seen = pyusage_record::parse_micros("2026-11-25T10:00:00.000002Z").unwrap();
        (r.exit, r.exit_code) = (pyusage_record::Exit::Exited, Some(0));
        r.package = "numpy".into();
        r.distribution = Some("numpy".into());
        r.version = Some("2.1".into());
        r.first_path = "/v/x.py".into();
        r
    }

    fn payload(m: &[u8]) -> Value {
        let s = std::str::from_utf8(m).expect("valid UTF-8");
        let i = s.find(" IMPORT - ").unwrap() + " IMPORT - ".len();
        serde_json::from_str(&s[i..]).expect("valid JSON")
    }

    #[test]
    fn header_and_payload() {
        let m = format_message(&rec(), 16, 8192);
        let s = String::from_utf8(m.clone()).unwrap();
        assert!(
            s.starts_with("<134>1 2026-11-25T10:00:00.000002Z n_1_ pyusage 42 IMPORT - {"),
            "{s}"
        );
        assert_eq!(payload(&m)["package"], "numpy");
        assert_eq!(frame_tcp(b"abc"), b"3 abc");
    }

    #[test]
    fn hostile_strings_cannot_break_framing_or_json() {
        let mut r = rec();
        r.first_path = "/a\nb\"c\u{0}\u{1b}[31m\r\n<13>1 fake - - - - -/日本語🐍\u{fffd}.py".into();
        r.package = "we\"ird\npkg".into();
        let m = format_message(&r, 16, 8192);
        assert!(
            !m.contains(&b'\n') && !m.contains(&0),
            "control characters are escaped"
        );
        let p = payload(&m);
        assert_eq!(p["first_path"], r.first_path.as_str());
        assert_eq!(p["package"], r.package.as_str());
    }

    #[test]
    fn long_fields_are_truncated_at_utf8_boundaries_and_marked() {
        let mut r = rec();
        r.first_path = format!("/{}", "é🐍".repeat(3000));
        r.main = Some("x".repeat(5000));
        for max in [2048, 4096, 8192] {
            let m = format_message(&r, 16, max);
            assert!(m.len() <= max, "{} > {max}", m.len());
            let p = payload(&m);
            let t: Vec<&str> = p["_truncated"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(t.contains(&"first_path"), "{t:?}");
            assert!(p["first_path"].as_str().unwrap().ends_with('…'));
            assert_eq!(p["package"], "numpy");
        }
    }

    #[test]
    fn long_caller_names_drop_the_smallest_callers_never_cut_a_name() {
        let mut r = rec();
        r.cpu_sampling = Some("sampled".into());
        r.cpu_sample_hz = Some(19);
        (r.cpu_samples_total, r.cpu_samples_self) = (Some(1000), Some(500));
        r.cpu_samples_inclusive = Some(900);
        r.cpu_samples_callers = (0..8)
            .map(|i| pyusage_record::CallerSamples {
                package: format!("{i}{}", "p".repeat(250)),
                samples: 100 - i,
            })
            .collect();
        for max in [1024, 2048, 3072] {
            let m = format_message(&r, 16, max);
            assert!(m.len() <= max, "{} > {max}", m.len());
            let p = payload(&m);
            let t = p["_truncated"].as_array().unwrap();
            assert!(t.contains(&"cpu_samples_callers".into()), "{t:?}");
            let back = p["cpu_samples_callers"].as_array().unwrap();
            assert!(back.len() < 8);
            for (i, c) in back.iter().enumerate() {
                assert_eq!(c, &serde_json::to_value(&r.cpu_samples_callers[i]).unwrap());
            }
            assert_eq!(p["package"], "numpy");
            assert_eq!(p["cpu_samples_self"], 500);
        }
        // Within the limit nothing is left out.
        let p = payload(&format_message(&r, 16, 8192));
        assert!(p.get("_truncated").is_none());
        assert_eq!(p["cpu_samples_callers"].as_array().unwrap().len(), 8);
    }

    #[test]
    fn a_huge_job_id_is_cut_not_the_whole_record() {
        let mut r = rec();
        r.job_id = Some("9".repeat(30 * 1024));
        r.exit_signal = Some("\u{1b}".repeat(3000));
        let m = format_message(&r, 16, 2048);
        assert!(m.len() <= 2048, "{}", m.len());
        let p = payload(&m);
        assert_eq!(p["package"], "numpy", "{p}");
        assert_eq!(p["record_id"], "0193");
        assert!(p["job_id"].as_str().unwrap().ends_with('…'));
        let t = p["_truncated"].as_array().unwrap();
        assert!(
            t.contains(&"job_id".into()) && t.contains(&"exit_signal".into()),
            "{t:?}"
        );
    }
}
