//! `[syslog]` configuration.
use serde::{Deserialize, Serialize};

/// Syslog sink settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// `unix:/dev/log`, `udp:HOST:PORT` or `tcp:HOST:PORT`; none (default) disables the sink.
    pub target: Option<String>,
    /// Largest message, header included (rsyslog's default is 8 KiB). Long fields are
    /// truncated at a UTF-8 boundary and listed in the payload's `_truncated`.
    pub max_message_bytes: usize,
    /// Syslog facility number (default 16, local0).
    pub facility: u8,
    /// Most messages per second (0 = unlimited, default). Excess is deferred, never dropped,
    /// and counted as `deferred` in status.
    pub rate_limit: u32,
}

impl Default for SyslogConfig {
    fn default() -> SyslogConfig {
        SyslogConfig {
            target: None,
            max_message_bytes: 8192,
            facility: 16,
            rate_limit: 0,
        }
    }
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A unix datagram socket.
    Unix(std::path::PathBuf),
    /// UDP `host:port`.
    Udp(String),
    /// TCP `host:port`, octet-counted.
    Tcp(String),
}

/// A `target` that is not one of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No `kind:` prefix, or an unknown one.
    #[error("{0:?}: expected unix:PATH, udp:HOST:PORT or tcp:HOST:PORT")]
    Form(String),
    /// `udp:`/`tcp:` without a valid `HOST:PORT`.
    #[error("{0:?}: expected HOST:PORT after {1}:")]
    Address(String, &'static str),
    /// `unix:` with a relative path.
    #[error("{0:?}: unix socket path must be absolute")]
    Relative(String),
}

/// A `[syslog]` setting out of range; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogConfigError {
    /// `syslog.target`.
    #[error("configuration field syslog.target: {0}")]
    Target(#[from] TargetError),
    /// A number out of range.
    #[error("configuration field {field}: {why}")]
    Range {
        /// Dotted field name.
        field: &'static str,
        /// The valid range.
        why: &'static str,
    },
}

impl Target {
    /// Parses `unix:PATH`, `udp:HOST:PORT`, `tcp:HOST:PORT`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| TargetError::Form(s.to_owned()))?;
        let addr = |r: &str, kind: &'static str| match r.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(r.to_owned()),
            _ => Err(TargetError::Address(s.to_owned(), kind)),
        };
        match kind {
            "unix" if rest.starts_with('/') => Ok(Target::Unix(rest.into())),
            "unix" => Err(TargetError::Relative(s.to_owned())),
            "udp" => Ok(Target::Udp(addr(rest, "udp")?)),
            "tcp" => Ok(Target::Tcp(addr(rest, "tcp")?)),
            _ => Err(TargetError::Form(s.to_owned())),
        }
    }
}

impl SyslogConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<(), SyslogConfigError> {
        if let Some(t) = &self.target {
            Target::parse(t)?;
        }
        if !(2048..=(1 << 20)).contains(&self.max_message_bytes) {
            return Err(SyslogConfigError::Range {
                field: "syslog.max_message_bytes",
                why: "must be between 2048 and 1048576 (a record with its field names needs ~1.5 KiB)",
            });
        }
        if self.facility > 23 {
            return Err(SyslogConfigError::Range {
                field: "syslog.facility",
                why: "must be 0..=23",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("unix:/dev/log"),
            Ok(Target::Unix("/dev/log".into()))
        );
        assert_eq!(
            Target::parse("tcp:127.0.0.1:514"),
            Ok(Target::Tcp("127.0.0.1:514".into()))
        );
        assert_eq!(
            Target::parse("udp:[::1]:514"),
            Ok(Target::Udp("[::1]:514".into()))
        );
        assert_eq!(
            Target::parse("tcp:host").unwrap_err().to_string(),
            "\"tcp:host\": expected HOST:PORT after tcp:"
        );
        assert!(Target::parse("unix:rel/log").is_err());
        assert!(Target::parse("http://x").is_err());
    }
}
