//! `pmi-sources`: where telemetry comes from. Each source yields readings with event time
//! and implements [`pmi_core::TelemetrySource`] (directly or through `pmi-dataflows`).
//!
//! - [`fleet`]: the fleet simulator (vehicles, usage, physics, failure injection, bad
//!   readings), deterministic from a seed.

#![forbid(unsafe_code)]

pub mod fleet;
