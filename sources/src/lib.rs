//! `pmi-sources`: where telemetry comes from. Each source yields readings with event time
//! and implements [`pmi_core::TelemetrySource`] (directly or through `pmi-dataflows`).
//!
//! - [`fleet`]: the fleet simulator (vehicles, usage, physics, failure injection, bad
//!   readings), deterministic from a seed.
//! - [`parquet_in`]: telemetry Parquet from PMI or any other tool, decoded and validated
//!   column-wise, one row group at a time.
//! - [`kafka`]: JSON readings from a Kafka topic, partitions divided among all workers.
//! - [`ingest`]: the HTTP ingest queue and the graph source over it.

#![forbid(unsafe_code)]

pub mod fleet;
pub mod ingest;
pub mod kafka;
pub mod parquet_in;
pub mod store;
pub mod table;
