//! The one error type of `pmi-models`, classified by whose fault it is (see
//! [`pmi_core::ErrorClass`]).

use pmi_core::{ConfigError, ErrorClass};

/// Everything that can go wrong building or applying a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The feature vector follows another schema than the one the model was built for. A
    /// model is never applied to another schema: rebuild (or retrain) it for the schema the
    /// pipeline emits.
    #[error(
        "feature vector follows schema {found:#018x}, the model was built for schema {expected:#018x}"
    )]
    SchemaMismatch {
        /// Fingerprint of the model's schema.
        expected: u64,
        /// Fingerprint the vector carries.
        found: u64,
    },
    /// The vector carries the right fingerprint but not as many values as the schema has
    /// features: whoever built the vector broke the schema's contract.
    #[error("feature vector has {found} values, its schema has {expected} features")]
    VectorLength {
        /// Number of features in the schema.
        expected: usize,
        /// Number of values in the vector.
        found: usize,
    },
    /// A rule of a rule set is malformed (thresholds equal or not finite, duplicate id, …).
    #[error("rule `{rule}`: {message}")]
    InvalidRule {
        /// The rule's id.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// Another invalid setting (e.g. severity thresholds).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Training or evaluation data that cannot be used as given (too few rows, a column of
    /// the wrong length, a label with one class only, …). `field` names the column, the
    /// parameter or the part of the data at fault.
    #[error("invalid data `{field}`: {message}")]
    InvalidData {
        /// The column, parameter or part of the data at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A model file (or registry entry) that cannot be read as a PMI model: wrong format,
    /// unsupported format version, or corrupt content.
    #[error("model file {path}: {message}")]
    Format {
        /// The file (or a description of where the bytes came from).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file of the registry or a report failed.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's message.
        message: String,
    },
}

impl From<linfa::Error> for ModelError {
    fn from(e: linfa::Error) -> Self {
        ModelError::InvalidData {
            field: "dataset".into(),
            message: e.to_string(),
        }
    }
}

impl ModelError {
    /// Whose fault the error is, and so whether retrying can help.
    ///
    /// A schema mismatch or a bad rule is a configuration problem ([`ErrorClass::User`]); a
    /// vector whose length contradicts its own schema fingerprint is a bug in PMI
    /// ([`ErrorClass::Internal`]). File I/O of the registry is [`ErrorClass::External`]; everything else is pure.
    pub const fn class(&self) -> ErrorClass {
        match self {
            ModelError::SchemaMismatch { .. }
            | ModelError::InvalidRule { .. }
            | ModelError::Config(_)
            | ModelError::InvalidData { .. }
            | ModelError::Format { .. } => ErrorClass::User,
            ModelError::Io { .. } => ErrorClass::External,
            ModelError::VectorLength { .. } => ErrorClass::Internal,
        }
    }

    pub(crate) fn data(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::InvalidData {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        ModelError::Io {
            path: path.to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn rule(rule: &str, message: impl Into<String>) -> Self {
        ModelError::InvalidRule {
            rule: rule.to_owned(),
            message: message.into(),
        }
    }
}
