//! `pmi-models`: the scorers of PMI, pure code with no dataflow in it.
//!
//! - [`rules`]: transparent domain-rule health checks per component, the explainable member
//!   of the ensemble (the isolation forest and gradient-boosted trees join it later).
#![forbid(unsafe_code)]

pub mod rules;

/// Errors of the models.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A vector of another feature schema than the model's.
    #[error("feature schema mismatch: model expects {expected:016x}, vector has {found:016x}")]
    SchemaMismatch {
        /// The model's schema fingerprint.
        expected: u64,
        /// The vector's.
        found: u64,
    },
    /// An invalid rule.
    #[error("rule {index} ({component}): {message}")]
    InvalidRule {
        /// Position in the rule set.
        index: usize,
        /// Its component.
        component: String,
        /// What is wrong.
        message: String,
    },
}

impl ModelError {
    /// Whose fault.
    pub fn class(&self) -> pmi_core::ErrorClass {
        pmi_core::ErrorClass::User
    }
}
