//! `pmi-models`: the models that turn feature vectors into predictions.
//!
//! The window operators emit the features of each vehicle and pane (a row of a
//! [`pmi_core::FeatureBatch`], scored as a [`pmi_core::FeatureRow`]); this crate judges
//! them: a risk in [0, 1], the implicated [`pmi_core::Component`], a
//! [`pmi_core::Severity`] by the configured thresholds, and reasons a technician can read.
//! It is pure but for the registry's files: no dataflow, so a model is tested and
//! benchmarked on its own and the same model runs in the live stream, the batch backfill,
//! the prediction API and evaluation.
//!
//! What is here, and why it is built this way:
//! - [`rules`]: the domain-rule scorer, documented health checks per component.
//! - [`iforest`]: an own isolation forest behind linfa's `Fit`/`Predict` traits. linfa
//!   (0.8) has none, and the crates.io ones are stale or broken (unseeded, integer-only, or
//!   their loading discards the model); this one follows scikit-learn's choices and is
//!   deterministic for a seed.
//! - [`gbdt`]: gradient-boosted trees, fitted by `forust-ml` (XGBoost-style, stable Rust,
//!   seedable, native missing values; linfa has no boosting) and scored by PMI's own
//!   compact trees, so the file format is PMI's and scoring is fast.
//! - [`ensemble`]: trees + forest + rules combined by a logistic stacker into risk,
//!   severity, component and reasons; its versioned file format.
//! - [`dataset`], [`train`], [`evaluate`], [`metrics`], [`plots`]: labelled tables and
//!   their splits (by vehicle), training, held-out evaluation, report plots.
//! - [`registry`]: versioned model folders and the `CURRENT` marker.
//!
//! Every model shares one contract: it is built for one [`pmi_core::FeatureSchema`] and
//! refuses vectors of another ([`ModelError::SchemaMismatch`]).
#![forbid(unsafe_code)]

pub mod dataset;
pub mod ensemble;
pub mod error;
pub mod evaluate;
pub mod gbdt;
pub mod iforest;
pub mod metrics;
pub mod plots;
pub mod registry;
pub mod rules;
pub mod train;

pub use error::ModelError;
pub use rules::{RuleEvaluation, RuleScorer, RuleSet};
