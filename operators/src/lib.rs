//! `pmi-operators`: the timely and differential operators of the PMI graphs, each an
//! extension trait in a file of its own, generic over where the data comes from.
//!
//! - [`source`]: the driver that runs any `TelemetrySource` as a timely source, with
//!   watermarks, lateness and flow control.
//! - [`alerts`]: the alert collection (differential): per-vehicle severity levels with
//!   hysteresis, joined with the registry and anti-joined with appointments and repairs, and
//!   its typed changes (with its reference implementation, [`alerts::oracle`]).
//! - [`windows`]: event-time pane windows per vehicle → feature vectors (with its naive
//!   reference implementation, [`windows::oracle`], that tests compare against).
// Denied, with one audited exception: the prefetch hint of `windows::prefetch`.
#![deny(unsafe_code)]

pub mod alerts;
pub mod exchange;
pub mod source;
pub mod windows;
