//! `pmi-operators`: the timely and differential operators of the PMI graphs, each an
//! extension trait in a file of its own, generic over where the data comes from.
//!
//! - [`source`]: the driver that runs any `TelemetrySource` as a timely source, with
//!   watermarks, lateness and flow control.
//! - [`windows`]: event-time pane windows per vehicle → feature vectors (with its naive
//!   reference implementation, [`windows::oracle`], that tests compare against).
#![forbid(unsafe_code)]

pub mod source;
pub mod windows;
