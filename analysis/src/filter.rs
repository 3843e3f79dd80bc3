//! `--filter`: which records the analysis keeps. A small expression language, so a user can
//! reproduce the paper's defaults or override them without a query engine:
//!
//! ```text
//! expr := conj ("or" conj)*        conj := cmp ("and" cmp)*
//! cmp  := FIELD ("==" | "!=") VALUE       VALUE := word | "quoted" | 'quoted' | null
//! ```
//! `and` binds tighter than `or` (`&&` and `||` are accepted too); no parentheses. Fields are
//! record fields ([`FIELDS`]); booleans compare with `true`/`false`, numbers with their decimal
//! text, and `null` matches a missing value.
use std::fmt;

use pyusage_record::columns as c;

/// The record fields a filter may use.
pub const FIELDS: &[&str] = &[
    c::IS_STAFF,
    c::IS_COMPUTE,
    c::IN_CONTAINER,
    c::PACKAGE,
    c::USERNAME,
    c::UID,
    c::HOST,
    c::SYSTEM,
    c::SUBSYSTEM,
    c::SOURCE,
    c::EXIT,
    c::EXIT_SIGNAL,
    c::ENV_KIND,
    c::PYTHON_VERSION,
    c::JOB_ID,
    c::ACCOUNT,
    c::PARTITION,
    c::QOS,
    c::DISTRIBUTION,
    c::VERSION,
    c::BLAS,
    c::NUM_NODES,
];

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
}

/// One comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmp {
    /// Field name (one of [`FIELDS`]).
    pub field: String,
    /// Operator.
    pub op: Op,
    /// Value; `None` is `null`.
    pub value: Option<String>,
}

impl Cmp {
    /// Whether a row whose field has `value` passes.
    pub fn matches(&self, value: Option<&str>) -> bool {
        (value == self.value.as_deref()) == (self.op == Op::Eq)
    }
}

/// A disjunction of conjunctions of comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `or` of `and`s.
    pub any: Vec<Vec<Cmp>>,
    text: String,
}

/// A filter that does not parse: the text and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--filter {text:?}: {reason}")]
pub struct FilterError {
    /// The filter as given.
    pub text: String,
    /// What is wrong (part of the message: it is the whole explanation, not a cause).
    pub reason: FilterProblem,
}

/// What is wrong with a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterProblem {
    /// A quoted value with no closing quote.
    #[error("unterminated {0}quote")]
    UnterminatedQuote(char),
    /// The text ended where a field name was due.
    #[error("expected a field name")]
    MissingField,
    /// Not one of [`FIELDS`] (or quoted).
    #[error("unknown field {0:?}; fields: {fields}", fields = FIELDS.join(", "))]
    UnknownField(String),
    /// No `==`/`!=` after a field.
    #[error("expected == or != after {field}, got {got:?}")]
    MissingOp {
        /// The field.
        field: String,
        /// What came instead.
        got: Option<String>,
    },
    /// The text ended after an operator.
    #[error("expected a value after {0}")]
    MissingValue(String),
    /// Something other than `and`/`or` after a comparison.
    #[error("expected and/or, got {0:?}")]
    MissingJoin(String),
    /// A value outside a field's closed vocabulary (`exit == signalled`), which would
    /// silently match nothing.
    #[error(transparent)]
    NotInVocabulary(#[from] pyusage_record::UnknownValue),
}

/// Checks a value of a field with a closed vocabulary (the record crate's enums).
fn check_vocabulary(field: &str, value: &str) -> Result<(), pyusage_record::UnknownValue> {
    use pyusage_record::{EnvKind, Exit, JobSource, Source};
    match field {
        c::EXIT => value.parse::<Exit>().map(drop),
        c::ENV_KIND => value.parse::<EnvKind>().map(drop),
        c::SOURCE => value.parse::<Source>().map(drop),
        c::JOB_SOURCE => value.parse::<JobSource>().map(drop),
        _ => Ok(()),
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Words, operators and quoted values (`true` when quoted, so `'and'` is a value).
fn tokens(s: &str) -> Result<Vec<(String, bool)>, FilterProblem> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '"' || c == '\'' {
            it.next();
            let mut v = String::new();
            loop {
                match it.next() {
                    Some(q) if q == c => break,
                    Some(x) => v.push(x),
                    None => return Err(FilterProblem::UnterminatedQuote(c)),
                }
            }
            out.push((v, true));
        } else if "=!&|".contains(c) {
            let mut op = String::new();
            while let Some(&x) = it.peek() {
                if !"=!&|".contains(x) {
                    break;
                }
                op.push(x);
                it.next();
            }
            out.push((op, false));
        } else {
            let mut w = String::new();
            while let Some(&x) = it.peek() {
                if x.is_whitespace() || "=!&|\"'".contains(x) {
                    break;
                }
                w.push(x);
                it.next();
            }
            out.push((w, false));
        }
    }
    Ok(out)
}

impl Filter {
    /// The paper's default for every table: staff excluded.
    pub const PAPER: &'static str = "is_staff == false";

    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let err = |reason: FilterProblem| FilterError {
            text: text.to_owned(),
            reason,
        };
        let toks = tokens(text).map_err(err)?;
        let mut any = vec![Vec::new()];
        let mut i = 0;
        loop {
            let (field, quoted) = toks
                .get(i)
                .ok_or_else(|| err(FilterProblem::MissingField))?;
            if *quoted || !FIELDS.contains(&field.as_str()) {
                return Err(err(FilterProblem::UnknownField(field.clone())));
            }
            let op = match toks.get(i + 1).map(|t| t.0.as_str()) {
                Some("==") | Some("=") => Op::Eq,
                Some("!=") => Op::Ne,
                other => {
                    return Err(err(FilterProblem::MissingOp {
                        field: field.clone(),
                        got: other.map(str::to_owned),
                    }))
                }
            };
            let (value, quoted) = toks
                .get(i + 2)
                .ok_or_else(|| err(FilterProblem::MissingValue(field.clone())))?;
            let value = (*quoted || value != "null").then(|| value.clone());
            if let Some(v) = &value {
                check_vocabulary(field, v).map_err(|e| err(e.into()))?;
            }
            any.last_mut().expect("one").push(Cmp {
                field: field.clone(),
                op,
                value,
            });
            i += 3;
            match toks.get(i).map(|t| (t.0.as_str(), t.1)) {
                None => break,
                Some(("and" | "&&", false)) => {}
                Some(("or" | "||", false)) => any.push(Vec::new()),
                Some((t, _)) => return Err(err(FilterProblem::MissingJoin(t.to_owned()))),
            }
            i += 1;
        }
        Ok(Filter {
            any,
            text: text.to_owned(),
        })
    }

    /// Fields the filter reads.
    pub fn fields(&self) -> Vec<&str> {
        let mut f: Vec<&str> = self
            .any
            .iter()
            .flatten()
            .map(|c| c.field.as_str())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filterable_field_is_a_column() {
        assert_eq!(c::all_known(FIELDS.iter().copied()), Ok(()));
    }

    #[test]
    fn values_of_closed_vocabularies_are_checked() {
        assert!(Filter::parse("exit == signaled and env_kind != stdlib").is_ok());
        assert!(Filter::parse("exit == null").is_ok());
        let e = Filter::parse("exit == signalled").unwrap_err();
        assert!(
            e.to_string().contains("\"signalled\" is not a valid exit"),
            "{e}"
        );
        assert!(Filter::parse("env_kind == Conda").is_err());
    }

    #[test]
    fn parses_precedence_quotes_and_null() {
        let f = Filter::parse("is_staff == false and package != 'my pkg' or blas == null").unwrap();
        assert_eq!(f.any.len(), 2);
        assert_eq!(f.any[0].len(), 2);
        assert_eq!(f.any[0][1].value.as_deref(), Some("my pkg"));
        assert_eq!(f.any[1][0].value, None);
        assert!(f.any[1][0].matches(None) && !f.any[1][0].matches(Some("mkl")));
        assert!(f.any[0][1].matches(Some("numpy")) && !f.any[0][1].matches(Some("my pkg")));
        assert_eq!(f.fields(), ["blas", "is_staff", "package"]);
        assert_eq!(
            f.to_string(),
            "is_staff == false and package != 'my pkg' or blas == null"
        );
        let g = Filter::parse("exit==signaled&&num_nodes!=1").unwrap();
        assert_eq!(g.any[0].len(), 2);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, needle) in [
            ("colour == red", "unknown field \"colour\""),
            ("package ~ numpy", "expected == or !="),
            ("package ==", "expected a value"),
            ("package == numpy but", "expected and/or"),
            ("package == 'numpy", "unterminated"),
        ] {
            let e = Filter::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
