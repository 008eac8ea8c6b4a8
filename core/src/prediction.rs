//! Severity, its thresholds and SLAs, and the [`Prediction`] a scorer makes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::time::EventTime;
use crate::VehicleId;

/// How urgent a prediction is. Ordered: `Normal < Low < Medium < High < Critical`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// No action.
    Normal,
    /// Respond within 168 h.
    Low,
    /// Respond within 72 h.
    Medium,
    /// Respond within 24 h.
    High,
    /// Respond within 2 h.
    Critical,
}

impl Severity {
    /// Response SLA in hours, `None` for [`Severity::Normal`].
    pub const fn sla_hours(self) -> Option<u32> {
        match self {
            Severity::Normal => None,
            Severity::Low => Some(168),
            Severity::Medium => Some(72),
            Severity::High => Some(24),
            Severity::Critical => Some(2),
        }
    }
    /// Stable lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Normal => "normal",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    /// Looks a severity up by name.
    pub fn from_name(name: &str) -> Option<Severity> {
        [
            Severity::Normal,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Risk thresholds (inclusive lower bounds) for each severity.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeverityThresholds {
    /// Risk at or above which a prediction is critical (default 0.9).
    pub critical: f64,
    /// … high (default 0.75).
    pub high: f64,
    /// … medium (default 0.5).
    pub medium: f64,
    /// … low (default 0.3).
    pub low: f64,
}

impl Default for SeverityThresholds {
    fn default() -> Self {
        SeverityThresholds {
            critical: 0.9,
            high: 0.75,
            medium: 0.5,
            low: 0.3,
        }
    }
}

impl SeverityThresholds {
    /// The severity of `risk`.
    pub fn classify(&self, risk: f64) -> Severity {
        if risk >= self.critical {
            Severity::Critical
        } else if risk >= self.high {
            Severity::High
        } else if risk >= self.medium {
            Severity::Medium
        } else if risk >= self.low {
            Severity::Low
        } else {
            Severity::Normal
        }
    }
    /// The lowest risk of `severity` (−∞ for `Normal`).
    pub fn of(&self, severity: Severity) -> f64 {
        match severity {
            Severity::Normal => f64::NEG_INFINITY,
            Severity::Low => self.low,
            Severity::Medium => self.medium,
            Severity::High => self.high,
            Severity::Critical => self.critical,
        }
    }

    /// Checks that thresholds are in (0, 1] and descending.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let t = [self.critical, self.high, self.medium, self.low];
        if t.iter().any(|x| !(*x > 0.0 && *x <= 1.0)) || t.windows(2).any(|w| w[0] < w[1]) {
            return Err(crate::ConfigError::new(
                "severity",
                "thresholds must lie in (0, 1] with critical ≥ high ≥ medium ≥ low",
            ));
        }
        Ok(())
    }
}

/// A scorer's judgement of one feature vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// Pane end of the feature vector scored.
    pub pane_end: EventTime,
    /// Combined risk in [0, 1].
    pub risk: f64,
    /// Severity by the configured thresholds.
    pub severity: Severity,
    /// The implicated component, when risk is above normal.
    pub component: Option<Component>,
    /// Which model (and version) scored it, e.g. `rules-v1`: shared, as every prediction of
    /// a model carries the same name.
    pub model: Arc<str>,
    /// Human-readable reasons, most important first.
    pub explanation: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_classify_inclusively() {
        let t = SeverityThresholds::default();
        assert_eq!(t.classify(0.95), Severity::Critical);
        assert_eq!(t.classify(0.9), Severity::Critical);
        assert_eq!(t.classify(0.8), Severity::High);
        assert_eq!(t.classify(0.5), Severity::Medium);
        assert_eq!(t.classify(0.3), Severity::Low);
        assert_eq!(t.classify(0.1), Severity::Normal);
        assert!(t.validate().is_ok());
        let bad = SeverityThresholds { high: 0.95, ..t };
        assert!(bad.validate().is_err());
        assert_eq!(Severity::Critical.sla_hours(), Some(2));
        assert!(Severity::Critical > Severity::High);
    }
}
