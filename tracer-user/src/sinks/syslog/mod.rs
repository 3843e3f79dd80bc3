//! The syslog sink: RFC 5424 messages (APP-NAME `pyusage`, MSGID `IMPORT`, the record as JSON
//! in MSG) over a unix datagram socket, UDP, or TCP with octet-counting framing (RFC 6587).
//!
//! Framing is written here: the `syslog` crate frames TCP with a trailing newline
//! (non-transparent framing) and hides per-message errors, which at-least-once delivery needs.
mod config;
mod conn;
pub(crate) mod format;
mod sink;

pub use config::{SyslogConfig, SyslogConfigError, Target, TargetError};
pub use format::{format_message, frame_tcp};
pub use sink::{SyslogError, SyslogSink};
