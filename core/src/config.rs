//! Window configuration: pane length, window lengths, allowed lateness, channels.

use serde::{Deserialize, Serialize};

use crate::features::{Channel, FeatureSchema};
use crate::ConfigError;

/// How the window operator slices event time. Windows are sliding and aligned to panes:
/// every pane end `b` (a multiple of `pane_s` since the epoch) emits, per vehicle, the
/// statistics of each window `(b − W, b]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Pane length in seconds (default 10). At most 60.
    pub pane_s: u32,
    /// Window lengths in seconds, each a multiple of `pane_s` (default 60, 300, 900).
    pub windows_s: Vec<u32>,
    /// How far behind the largest seen event time the watermark trails, in seconds
    /// (default 30). Readings older than the watermark go to the late output.
    pub allowed_lateness_s: u32,
    /// Channels to aggregate, by name (sensor columns and derived channels). Empty means
    /// all sensors and all derived channels.
    pub channels: Vec<String>,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            pane_s: 10,
            windows_s: vec![60, 300, 900],
            allowed_lateness_s: 30,
            channels: Vec::new(),
        }
    }
}

impl WindowConfig {
    /// Checks the settings and returns the channels they select.
    pub fn validate(&self) -> Result<Vec<Channel>, ConfigError> {
        if self.pane_s == 0 || self.pane_s > 60 {
            return Err(ConfigError::new(
                "window.pane_s",
                "must be between 1 and 60 seconds",
            ));
        }
        if self.windows_s.is_empty() {
            return Err(ConfigError::new(
                "window.windows_s",
                "at least one window is needed",
            ));
        }
        for w in &self.windows_s {
            if *w == 0 || w % self.pane_s != 0 {
                return Err(ConfigError::new(
                    "window.windows_s",
                    format!(
                        "window {w} s is not a positive multiple of the pane ({} s)",
                        self.pane_s
                    ),
                ));
            }
        }
        if self.windows_s.windows(2).any(|p| p[0] >= p[1]) {
            return Err(ConfigError::new(
                "window.windows_s",
                "windows must be strictly ascending",
            ));
        }
        if self.windows_s.last().copied().unwrap_or(0) / self.pane_s > 4096 {
            return Err(ConfigError::new(
                "window.windows_s",
                "at most 4096 panes per window",
            ));
        }
        if self.channels.is_empty() {
            return Ok(Channel::all());
        }
        let mut out = Vec::with_capacity(self.channels.len());
        for name in &self.channels {
            let c = Channel::from_name(name).ok_or_else(|| {
                ConfigError::new("window.channels", format!("unknown channel `{name}`"))
            })?;
            if out.contains(&c) {
                return Err(ConfigError::new(
                    "window.channels",
                    format!("`{name}` listed twice"),
                ));
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The feature schema this configuration produces.
    pub fn schema(&self) -> Result<FeatureSchema, ConfigError> {
        Ok(FeatureSchema::new(self.validate()?, self.windows_s.clone()))
    }

    /// Pane length in ms.
    pub const fn pane_ms(&self) -> i64 {
        self.pane_s as i64 * 1000
    }

    /// Allowed lateness in ms.
    pub const fn lateness_ms(&self) -> i64 {
        self.allowed_lateness_s as i64 * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_name_the_field() {
        assert_eq!(WindowConfig::default().validate().unwrap().len(), 21);
        let bad = WindowConfig {
            windows_s: vec![60, 65],
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().setting, "window.windows_s");
        let bad = WindowConfig {
            channels: vec!["warp_core".into()],
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("warp_core"));
        let bad = WindowConfig {
            pane_s: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().setting, "window.pane_s");
    }
}
