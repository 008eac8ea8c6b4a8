//! Errors of the core vocabulary, and the fault classification every PMI error carries.

use serde::{Deserialize, Serialize};

/// Whose fault an error is, and so whether retrying can help (after Arroyo's error classes).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Bad input or configuration: fix the input, retrying will not help.
    User,
    /// A service or the file system failed: retrying may help.
    External,
    /// A bug in PMI.
    Internal,
}

/// An invalid configuration value; names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid setting `{setting}`: {message}")]
pub struct ConfigError {
    /// The setting's name, e.g. `window.pane_s`.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A new configuration error.
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }
    /// Always [`ErrorClass::User`].
    pub const fn class(&self) -> ErrorClass {
        ErrorClass::User
    }
}
