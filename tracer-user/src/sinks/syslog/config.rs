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

impl Target {
    /// Parses `unix:PATH`, `udp:HOST:PORT`, `tcp:HOST:PORT`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected unix:PATH, udp:HOST:PORT or tcp:HOST:PORT"))?;
        let addr = |r: &str| -> Result<String, String> {
            match r.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(r.to_owned()),
                _ => Err(format!("{s:?}: expected HOST:PORT after {kind}:")),
            }
        };
        match kind {
            "unix" if rest.starts_with('/') => Ok(Target::Unix(rest.into())),
            "unix" => Err(format!("{s:?}: unix socket path must be absolute")),
            "udp" => Ok(Target::Udp(addr(rest)?)),
            "tcp" => Ok(Target::Tcp(addr(rest)?)),
            _ => Err(format!(
                "{s:?}: expected unix:PATH, udp:HOST:PORT or tcp:HOST:PORT"
            )),
        }
    }
}

impl SyslogConfig {
    /// Range checks; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(t) = &self.target {
            Target::parse(t).map_err(|e| ("syslog.target", e))?;
        }
        if !(2048..=(1 << 20)).contains(&self.max_message_bytes) {
            return Err((
                "syslog.max_message_bytes",
                "must be between 2048 and 1048576 (a record with its field names needs ~1.5 KiB)"
                    .into(),
            ));
        }
        if self.facility > 23 {
            return Err(("syslog.facility", "must be 0..=23".into()));
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
        assert!(Target::parse("tcp:host").is_err());
        assert!(Target::parse("unix:rel/log").is_err());
        assert!(Target::parse("http://x").is_err());
    }
}
