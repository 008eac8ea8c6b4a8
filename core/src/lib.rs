//! `pmi-core`: the shared vocabulary of PMI.
//!
//! Every other crate speaks in these types: a [`Telemetry`] reading with its event time
//! ([`EventTime`]) and [`SensorValues`], the [`Sensor`] catalogue with the valid ranges of
//! `DESIGN.md`, validation of raw input into readings or [`Rejected`] records that name the
//! offending field, the feature vocabulary ([`FeatureSchema`], [`FeatureVector`]), and the
//! scoring vocabulary ([`Component`], [`Severity`], [`Prediction`]) and the alert vocabulary
//! ([`Alert`], [`VehicleInfo`], [`AlertChange`]).
//!
//! This crate does no I/O and has no dataflow dependency, so it can be used anywhere.
#![forbid(unsafe_code)]

pub mod alert;
pub mod component;
pub mod config;
pub mod error;
pub mod features;
pub mod prediction;
pub mod sensor;
pub mod source;
pub mod telemetry;
pub mod time;
pub mod wire;

pub use alert::{
    Alert, AlertChange, AlertConfig, CustomerRecord, Hold, RetractReason, ServiceCenterRecord,
    TableRow, TableUpdate, VehicleInfo, VehicleRecord,
};
pub use component::{Component, FailureEvent, System};
pub use config::WindowConfig;
pub use error::{ConfigError, ErrorClass};
pub use features::{
    any_nan, Channel, Derived, FeatureBatch, FeatureBatchBuilder, FeatureRow, FeatureSchema,
    FeatureVector, Stat, FEATURE_SCHEMA_VERSION,
};
pub use prediction::{Prediction, Severity, SeverityThresholds};
pub use sensor::{Sensor, SENSOR_COUNT};
pub use source::{SourceBatch, SourceFailure, SourceStatus, TelemetrySource, Waker};
pub use telemetry::{
    CheckedColumns, RawReading, RejectReason, Rejected, SensorValues, Sequenced, Telemetry,
    Validator, VehicleId,
};
pub use time::{EventKey, EventTime};

/// How many rows a record stands for where outputs are counted (sinks' row counts, replay
/// suppression): one, except for a [`FeatureBatch`], which is many.
pub trait Rows {
    /// Rows of this record.
    fn rows(&self) -> usize {
        1
    }
}

impl Rows for Telemetry {}
impl Rows for RawReading {}
impl Rows for Rejected {}
impl Rows for Prediction {}
impl Rows for AlertChange {}
impl Rows for FailureEvent {}
impl Rows for FeatureVector {}
impl Rows for FeatureBatch {
    fn rows(&self) -> usize {
        FeatureBatch::rows(self)
    }
}
