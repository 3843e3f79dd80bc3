//! End-to-end tests: the real daemon (as root, attaching the real eBPF programs) against real
//! Python interpreters. They fail loudly, never skip, when not root or when BPF cannot load.
//!
//! Every test starts its own daemon with its own data directory and asserts on the records of
//! the processes it started (by pid), so tests can run in parallel.
mod analyze;
pub mod atexit;
mod capture;
mod cputime;
mod customs;
mod dashboard;
mod delivery;
mod fidelity;
mod forgery;
mod ingest;
mod preload;
mod sampling;
mod security;
mod slurm;
mod util;
