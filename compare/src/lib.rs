//! pyusage against atexit data (NERSC-style `sitecustomize` + `atexit` monitoring):
//! - [`atexit`]: our own atexit collector, a dependency-free `sitecustomize.py` writing records
//!   of this schema with `source = "atexit"`;
//! - [`customs`]: the old tool's field names, both ways (import of old data, export view);
//! - [`load`], [`join`], [`report`], [`html`]: `pyusage compare`, one stage each.
#![deny(missing_docs)]

pub mod atexit;
pub mod customs;
pub mod html;
pub mod join;
pub mod report;
pub mod text;
