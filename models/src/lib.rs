//! `pmi-models`: the models that turn feature vectors into predictions.
//!
//! The window operators emit one [`pmi_core::FeatureVector`] per vehicle and pane; this
//! crate judges it: a risk in [0, 1], the implicated [`pmi_core::Component`], a
//! [`pmi_core::Severity`] by the configured thresholds, and reasons a technician can read.
//! It is pure: no dataflow, no I/O, so a model is tested and benchmarked on its own and the
//! same model runs in the live stream, the batch backfill and evaluation.
//!
//! Today the crate holds the domain-rule scorer ([`rules`], [`RuleScorer`]): documented
//! health checks per component, thresholds in a serde [`RuleSet`]. It is the explainable
//! member of the ensemble DESIGN.md describes; the isolation forest (unsupervised anomaly
//! score), gradient-boosted trees (probability of failure within the horizon per
//! component), the ensemble that combines them, training, evaluation and the versioned model
//! registry come next, and will share this crate's contract: a model is built for one
//! [`pmi_core::FeatureSchema`] and refuses vectors of another
//! ([`ModelError::SchemaMismatch`]).
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
