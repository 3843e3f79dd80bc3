//! Analysis of the pyusage dataset (issue 4, in progress): synthetic data in the record
//! schema ([`synth`]), the dataset loaded into integer columns with global ids ([`table`]),
//! and integer counting kernels ([`counts`]). Every floating-point number is derived from these
//! integer counts by shared code, so back ends that agree on counts agree on everything.
#![deny(missing_docs)]

pub mod counts;
pub mod report;
pub mod synth;
pub mod table;
