//! The pyusage daemon as a library. One module per stage of the data's path:
//! [`loader`] (attach) → [`source`] (ring buffer) → [`proctable`] (processes) →
//! [`resolver`] (path → package) + [`attribution`] (job, rank, user) → [`records`] →
//! [`spool`] (durable JSON lines) → the Parquet dataset (converted from closed segments by
//! the [`processor`]) and the [`sinks`] (syslog), each at its own offset; [`status`] reports;
//! [`daemon`] wires them together. Reading the data back is the record crate's
//! (`pyusage_record::data_dir`).
#![deny(missing_docs)]

pub mod attribution;
pub mod btf;
pub mod clock;
pub mod cnproc;
pub mod config;
pub mod cputime;
pub mod cpython;
pub mod daemon;
pub mod elf;
#[cfg(test)]
mod fuzz;
pub mod imports;
pub mod loader;
pub mod preload;
pub mod privacy;
pub mod privileges;
pub mod processor;
pub mod proctable;
pub mod ranks;
pub mod records;
pub mod resolver;
pub mod sampler;
pub mod seed;
pub mod sinks;
pub mod source;
pub mod spool;
pub mod status;
pub mod tracefs;
pub mod untrusted;
pub mod workers;
