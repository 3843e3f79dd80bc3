//! Analysis of the pyusage Parquet dataset: the paper's figures and more, on the CPU or a GPU
//! with identical output. One module per stage of the data's path:
//! [`scan`] (Parquet → integer chunks with global ids, filtered by [`filter`]) →
//! a [`backend`] ([`cpu`] or [`gpu`]) → integer [`counts`] → [`report`] tables (the only
//! floats) → [`export`] (JSON, CSV) and [`html`]. [`run`] drives one run through them.
//! The CPU back end folds chunks into a mergeable [`state`], which is also what a shard of a
//! sharded run writes (`--partial`, [`state::file`]), what `merge` combines, and what
//! [`cache`] keeps per partition for incremental re-runs.
//!
//! Dependencies point inwards: [`model`] (ids and integer rows) and [`counts`] are the core
//! every stage shares; scan (Parquet in) and export/html (files out) are edges no other stage
//! imports; the back ends know only the [`backend`] interface; only [`run`] knows them all.
//! [`synth`] writes realistic test data.
#![deny(missing_docs)]

pub mod accounting;
pub mod backend;
pub mod cache;
pub mod counts;
pub mod cpu;
pub mod export;
pub mod filter;
pub mod gpu;
pub mod html;
pub mod model;
pub mod report;
pub mod run;
pub mod scan;
pub mod state;
pub mod synth;
