//! One delivered message → a validated [`Record`], or the reason it is malformed.
//!
//! rsyslog hands `omprog` one line per message in the template the central snippet names
//! (`RSYSLOG_SyslogProtocol23Format`: an RFC 5424 line). A bare JSON object is taken too, so
//! that a template of `%msg%` works. The schema is the record crate's [`Record`] (unknown
//! fields are refused), plus checks serde cannot express: identity fields that are empty
//! would make the record impossible to de-duplicate or place.
use std::sync::LazyLock;

use memchr::memmem::Finder;
use pyusage_record::{sampling, Record};

use crate::view::View;

/// Why a message was quarantined; the text goes into the quarantine file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not an RFC 5424 line and not a JSON object.
    #[error("not an RFC 5424 message: {0}")]
    Header(&'static str),
    /// Another application's message or MSGID reached ingest (a filter in rsyslog's
    /// configuration let it through).
    #[error("not a pyusage record: APP-NAME {app:?}, MSGID {msgid:?}")]
    NotPyusage {
        /// APP-NAME.
        app: String,
        /// MSGID.
        msgid: String,
    },
    /// The payload is not valid UTF-8 (a message cut at a byte boundary by a relay).
    #[error("payload is not UTF-8 at byte {0}")]
    Utf8(usize),
    /// The payload does not decode as a record (the serde message names the field).
    #[error("payload is not a record: {0}")]
    Json(String),
    /// It decodes, but a field the dataset depends on is unusable.
    #[error("invalid record: {0}")]
    Invalid(&'static str),
}

/// A message that passed: the record and the JSON line that stores it.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The record.
    pub record: Decoded<'a>,
    /// The record as one JSON object (no newline): the payload as received when it is
    /// complete, which saves re-encoding (and copying) it, else the record re-encoded.
    pub json: std::borrow::Cow<'a, [u8]>,
    /// The sender cut long fields to fit a message (`_truncated` in the payload).
    pub truncated: bool,
}

/// A decoded record: borrowed from the message where it can be ([`View`]), else owned.
#[derive(Debug)]
// The view is the common case, and boxing it would allocate for every message.
#[allow(clippy::large_enum_variant)]
pub enum Decoded<'a> {
    /// Its strings borrowed from the payload.
    View(View<'a>),
    /// Decoded as a [`Record`] (a string with an escape, `_truncated`, no `sources`).
    Record(Box<Record>),
}

impl Decoded<'_> {
    /// The record, owned.
    pub fn to_record(&self) -> Record {
        match self {
            Decoded::View(v) => v.to_record(),
            Decoded::Record(r) => (**r).clone(),
        }
    }
}

/// The JSON payload of a line: after the RFC 5424 header, or the line itself when it is a
/// bare JSON object.
pub fn payload(line: &[u8]) -> Result<&[u8], Malformed> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.first() == Some(&b'{') {
        return Ok(line);
    }
    let mut rest = line
        .strip_prefix(b"<")
        .ok_or(Malformed::Header("no <PRI>"))?;
    let close = rest
        .iter()
        .take(4)
        .position(|&c| c == b'>')
        .ok_or(Malformed::Header("bad <PRI>"))?;
    if close == 0 || !rest[..close].iter().all(u8::is_ascii_digit) {
        return Err(Malformed::Header("bad <PRI>"));
    }
    rest = &rest[close + 1..];
    let mut field = |what: &'static str| -> Result<&[u8], Malformed> {
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or(Malformed::Header(what))?;
        let f = &rest[..sp];
        rest = &rest[sp + 1..];
        if f.is_empty() {
            return Err(Malformed::Header(what));
        }
        Ok(f)
    };
    let version = field("no VERSION")?;
    if version != b"1" {
        return Err(Malformed::Header("VERSION is not 1"));
    }
    field("no TIMESTAMP")?;
    field("no HOSTNAME")?;
    let app = field("no APP-NAME")?;
    field("no PROCID")?;
    let msgid = field("no MSGID")?;
    if app != b"pyusage" || msgid != b"IMPORT" {
        return Err(Malformed::NotPyusage {
            app: String::from_utf8_lossy(app).into_owned(),
            msgid: String::from_utf8_lossy(msgid).into_owned(),
        });
    }
    let msg = skip_structured_data(rest)?;
    Ok(msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg))
}

/// Skips STRUCTURED-DATA (`-` or `[id k="v"]…`, where `\]`, `\"` and `\\` are escaped in
/// values) and the space after it; returns MSG.
fn skip_structured_data(s: &[u8]) -> Result<&[u8], Malformed> {
    if let Some(rest) = s.strip_prefix(b"-") {
        return match rest {
            [] => Ok(rest),
            [b' ', msg @ ..] => Ok(msg),
            _ => Err(Malformed::Header("bad STRUCTURED-DATA")),
        };
    }
    let mut i = 0;
    while s.get(i) == Some(&b'[') {
        let mut quoted = false;
        i += 1;
        loop {
            match s.get(i) {
                None => return Err(Malformed::Header("unterminated STRUCTURED-DATA")),
                Some(b'\\') if quoted => i += 2,
                Some(b'"') => {
                    quoted = !quoted;
                    i += 1;
                }
                Some(b']') if !quoted => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
    }
    match &s[i.min(s.len())..] {
        _ if i == 0 => Err(Malformed::Header("bad STRUCTURED-DATA")),
        [] => Ok(&[]),
        [b' ', msg @ ..] => Ok(msg),
        _ => Err(Malformed::Header("bad STRUCTURED-DATA")),
    }
}

/// Parses and validates one line.
pub fn parse(line: &[u8]) -> Result<Parsed<'_>, Malformed> {
    let json = payload(line)?;
    // One UTF-8 check of the whole payload, then the payload is read as text: checking each
    // of a record's ~70 strings on its own was a sixth of the time a record took (measured).
    let text = std::str::from_utf8(json).map_err(|u| Malformed::Utf8(u.valid_up_to()))?;
    // What the reader does not read (a string with an escape, `_truncated`, which it takes for
    // an unknown field, or a malformed payload) is decoded as a `Record` below, which has the
    // last word and the error message. The payload is stored as received when it has every
    // field, so that the WAL's lines are complete records.
    if let Some((v, true)) = View::parse_all(text) {
        validate(&v)?;
        return Ok(Parsed {
            record: Decoded::View(v),
            json: std::borrow::Cow::Borrowed(json),
            truncated: false,
        });
    }
    let bad = |e: serde_json::Error| Malformed::Json(e.to_string());
    // `_truncated` is the sender's note, not a field of the record: decoded apart.
    let truncated = contains(&TRUNCATED, json);
    let record: Record = if truncated {
        let mut v: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("_truncated");
        }
        serde_json::from_value(v).map_err(bad)?
    } else {
        serde_json::from_str(text).map_err(bad)?
    };
    validate(&View::of(&record))?;
    // Stored as received when it has every field the Parquet schema requires: `sources` and
    // `cpu_samples_callers` are the non-null fields serde fills in when absent.
    let json = if truncated || !contains(&SOURCES, json) || !contains(&CALLERS, json) {
        std::borrow::Cow::Owned(serde_json::to_vec(&record).expect("records serialise"))
    } else {
        std::borrow::Cow::Borrowed(json)
    };
    Ok(Parsed {
        record: Decoded::Record(Box::new(record)),
        json,
        truncated,
    })
}

/// What the schema's types allow but the dataset cannot use.
pub fn validate(r: &View) -> Result<(), Malformed> {
    if r.record_id.is_empty() {
        return Err(Malformed::Invalid("empty record_id"));
    }
    if r.record_id.len() > 256 {
        return Err(Malformed::Invalid("record_id longer than 256 bytes"));
    }
    if r.host.is_empty() {
        return Err(Malformed::Invalid("empty host"));
    }
    if r.package.is_empty() {
        return Err(Malformed::Invalid("empty package"));
    }
    if r.num_nodes == 0 {
        return Err(Malformed::Invalid("num_nodes is 0 (1 outside a job)"));
    }
    validate_samples(r)
}

/// The CPU sampler's fields agree with each other: a rate exactly with a sampling status,
/// counts exactly when sampled, self ≤ inclusive ≤ total, callers only of sampled records,
/// each another package, at most [`sampling::MAX_CALLERS`], none with more samples than self.
fn validate_samples(r: &View) -> Result<(), Malformed> {
    let bad = |why| Err(Malformed::Invalid(why));
    let counts = [
        r.cpu_samples_total,
        r.cpu_samples_self,
        r.cpu_samples_inclusive,
    ];
    match r.cpu_sampling {
        None if r.cpu_sample_hz.is_some() => return bad("cpu_sample_hz without cpu_sampling"),
        Some(_) if r.cpu_sample_hz.is_none() => return bad("cpu_sampling without cpu_sample_hz"),
        Some(s) if !sampling::is_valid(s) => {
            return bad("cpu_sampling is neither sampled nor unsupported:<reason>")
        }
        _ => {}
    }
    if r.cpu_sample_hz == Some(0) {
        return bad("cpu_sample_hz is 0");
    }
    if r.cpu_sampling != Some(sampling::SAMPLED) {
        if counts.iter().any(Option::is_some) {
            return bad("cpu_samples_* set but cpu_sampling is not sampled");
        }
        if !r.cpu_samples_callers.is_empty() {
            return bad("cpu_samples_callers set but cpu_sampling is not sampled");
        }
        return Ok(());
    }
    let [Some(total), Some(own), Some(inclusive)] = counts else {
        return bad("cpu_sampling is sampled but a cpu_samples_* count is null");
    };
    if own > inclusive || inclusive > total {
        return bad("cpu_samples_* not self <= inclusive <= total");
    }
    let callers = &r.cpu_samples_callers;
    if callers.len() > sampling::MAX_CALLERS {
        return bad("more than 8 cpu_samples_callers");
    }
    for (i, c) in callers.iter().enumerate() {
        if c.package.is_empty() || c.package == r.package {
            return bad("a cpu_samples_callers package is empty or the record's own");
        }
        if c.samples == 0 || c.samples > own {
            return bad("a cpu_samples_callers count is 0 or more than cpu_samples_self");
        }
        if callers.iter().take(i).any(|d| d.package == c.package) {
            return bad("a cpu_samples_callers package is listed twice");
        }
    }
    Ok(())
}

/// Searchers built once (building one per search was measurable).
static TRUNCATED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""_truncated""#));
static SOURCES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""sources""#));
static CALLERS: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(br#""cpu_samples_callers""#));

fn contains(needle: &Finder, hay: &[u8]) -> bool {
    needle.find(hay).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyusage_record::CallerSamples;

    fn line(r: &Record) -> Vec<u8> {
        format!(
            "<134>1 2026-11-25T10:00:00.000002Z n1 pyusage 42 IMPORT - {}\n",
            serde_json::to_string(r).unwrap()
        )
        .into_bytes()
    }

    #[test]
    fn rfc5424_lines_and_bare_json_parse() {
        let r = Record::example();
        let l = line(&r);
        let p = parse(&l).unwrap();
        assert_eq!(p.record.to_record(), r);
        assert!(!p.truncated);
        assert_eq!(
            p.json,
            serde_json::to_vec(&r).unwrap(),
            "stored as received"
        );
        let bare = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse(&bare).unwrap().record.to_record(), r);
        // Structured data with an escaped bracket, and a BOM before MSG.
        let sd = format!(
            "<134>1 - h pyusage 1 IMPORT [x@1 a=\"b\\]c\"][y@2] \u{feff}{}",
            serde_json::to_string(&r).unwrap()
        );
        assert_eq!(parse(sd.as_bytes()).unwrap().record.to_record(), r);
    }

    #[test]
    fn malformed_messages_say_why() {
        let r = Record::example();
        let good = String::from_utf8(line(&r)).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello".to_vec(), "no <PRI>"),
            (b"<x>1 a b c d e - {}".to_vec(), "bad <PRI>"),
            (
                good.replace(" pyusage ", " sshd ").into_bytes(),
                "APP-NAME \"sshd\"",
            ),
            (
                good.replace("\"yaml\"", "\"\"").into_bytes(),
                "empty package",
            ),
            (
                good.replace("\"seq\":7", "\"seq\":-1").into_bytes(),
                "not a record",
            ),
            (
                good.replace("\"seq\":7", "\"seq\":7,\"bogus\":1")
                    .into_bytes(),
                "unknown field `bogus`",
            ),
            (good.as_bytes()[..good.len() / 2].to_vec(), "not a record"),
            (
                b"<1>1 - h pyusage 1 IMPORT - {\"a\":\"\xff\"}".to_vec(),
                "UTF-8",
            ),
            (b"<1>1 - h pyusage 1 IMPORT [x".to_vec(), "unterminated"),
        ];
        for (l, want) in cases {
            let e = parse(&l).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    #[test]
    fn truncated_and_old_payloads_are_re_encoded_complete() {
        let r = Record::example();
        let mut v = serde_json::to_value(&r).unwrap();
        v["_truncated"] = serde_json::json!(["first_path"]);
        let l = serde_json::to_vec(&v).unwrap();
        let p = parse(&l).unwrap();
        assert!(p.truncated);
        assert_eq!(p.record.to_record(), r);
        assert!(!contains(&TRUNCATED, &p.json));
        for (field, empty) in [
            ("sources", &br#""sources":[]"#[..]),
            ("cpu_samples_callers", br#""cpu_samples_callers":[]"#),
        ] {
            let mut old = serde_json::to_value(&r).unwrap();
            old.as_object_mut().unwrap().remove(field);
            let l = serde_json::to_vec(&old).unwrap();
            let p = parse(&l).unwrap();
            assert!(contains(&Finder::new(empty), &p.json), "{field}");
        }
    }

    fn sampled() -> Record {
        let mut r = Record::example();
        r.package = "numpy".into();
        r.cpu_sampling = Some("sampled".into());
        r.cpu_sample_hz = Some(19);
        r.cpu_samples_total = Some(100);
        r.cpu_samples_self = Some(40);
        r.cpu_samples_inclusive = Some(60);
        r.cpu_samples_callers = vec![
            CallerSamples {
                package: "xarray".into(),
                samples: 30,
            },
            CallerSamples {
                package: "dask".into(),
                samples: 12,
            },
        ];
        r
    }

    #[test]
    fn sample_fields_must_agree() {
        // Validated as a record, and as a message read by the reader (or by serde: more
        // than the reader holds), the same.
        let validate = |r: &Record| {
            let by_record = validate(&View::of(r));
            let l = line(r);
            let by_message = parse(&l).map(|p| assert!(matches!(p.record, Decoded::View(_))));
            assert_eq!(by_message, by_record, "{r:?}");
            by_record
        };
        validate(&sampled()).unwrap();
        let mut unsupported = Record::example();
        unsupported.cpu_sampling = Some("unsupported:python-3.7".into());
        unsupported.cpu_sample_hz = Some(19);
        validate(&unsupported).unwrap();
        validate(&Record::example()).unwrap();
        type Break = fn(&mut Record);
        let cases: &[(Break, &str)] = &[
            (|r| r.cpu_sample_hz = None, "without cpu_sample_hz"),
            (|r| r.cpu_sample_hz = Some(0), "cpu_sample_hz is 0"),
            (
                |r| r.cpu_sampling = Some("sampled-ish".into()),
                "neither sampled",
            ),
            (
                |r| r.cpu_sampling = Some("unsupported:".into()),
                "neither sampled",
            ),
            (
                |r| r.cpu_sampling = Some("unsupported:Py 3.7\n".into()),
                "neither sampled",
            ),
            (
                |r| {
                    r.cpu_sampling = Some("unsupported:debug-build".into());
                },
                "not sampled",
            ),
            (
                |r| {
                    r.cpu_sampling = None;
                    r.cpu_sample_hz = None;
                },
                "not sampled",
            ),
            (
                |r| {
                    r.cpu_sampling = None;
                },
                "cpu_sample_hz without cpu_sampling",
            ),
            (|r| r.cpu_samples_self = None, "count is null"),
            (|r| r.cpu_samples_self = Some(61), "self <= inclusive"),
            (
                |r| r.cpu_samples_inclusive = Some(101),
                "inclusive <= total",
            ),
            (|r| r.cpu_samples_callers[1].package = "numpy".into(), "own"),
            (
                |r| r.cpu_samples_callers[1].package = String::new(),
                "empty",
            ),
            (
                |r| r.cpu_samples_callers[1].package = "xarray".into(),
                "twice",
            ),
            (|r| r.cpu_samples_callers[0].samples = 41, "more than"),
            (|r| r.cpu_samples_callers[1].samples = 0, "is 0"),
            (
                |r| {
                    let c = r.cpu_samples_callers[1].clone();
                    r.cpu_samples_callers = (0..9)
                        .map(|i| CallerSamples {
                            package: format!("p{i}"),
                            ..c.clone()
                        })
                        .collect();
                },
                "more than 8",
            ),
        ];
        for (i, (f, want)) in cases.iter().enumerate() {
            let mut r = sampled();
            f(&mut r);
            let e = validate(&r).unwrap_err().to_string();
            assert!(e.contains(want), "case {i}: {e:?} lacks {want:?}");
        }
    }
}
