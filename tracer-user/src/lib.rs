//! pyusage daemon and command-line library. One module per stage of the data's path:
//! [`loader`] (attach) → [`source`] (ring buffer) → [`proctable`] (processes) →
//! [`resolver`] (path → package) + [`attribution`] (job, rank, user) → [`records`] →
//! [`spool`] (durable JSON lines) → [`parquet_sink`] (rotated dataset); [`show`] reads it back.
#![deny(missing_docs)]

pub mod attribution;
pub mod btf;
pub mod config;
pub mod daemon;
pub mod elf;
#[cfg(test)]
mod fuzz;
pub mod imports;
pub mod loader;
/// The daemon writes the dataset with the record crate's writer (one layout, one writer).
pub use pyusage_record::dataset as parquet_sink;
pub mod privacy;
pub mod privileges;
pub mod proctable;
pub mod ranks;
pub mod records;
pub mod resolver;
pub mod seed;
pub mod show;
pub mod sinks;
pub mod source;
pub mod spool;
pub mod tracefs;
pub mod untrusted;
pub mod workers;
