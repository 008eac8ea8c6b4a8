//! `pmi-agents`: the maintenance agents' business logic, testable without a dataflow
//! (DESIGN.md: master with SLAs, diagnosis, scheduling, customer engagement, feedback).
//!
//! - [`diagnosis`]: from an alert's component and the vehicle's features to the likely
//!   failure mode, repair actions, parts, cost and downtime, from a catalogue that is data
//!   (`agents/catalogue/diagnosis.toml`), not code.
#![forbid(unsafe_code)]

pub mod diagnosis;

pub use diagnosis::{Catalogue, Diagnosis, FailureMode};
