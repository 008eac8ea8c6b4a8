//! The rule set: the serde configuration that is the rule scorer's documented surface.
//!
//! A [`RuleSet`] is plain data (TOML or JSON); [`crate::RuleScorer::new`] checks it and
//! resolves its feature names against a [`pmi_core::FeatureSchema`] once. Every field left
//! out of a config file takes its default, and the default rule list is the documented table
//! in [`crate::rules`].
//!
//! A [`Rule`] reads like a technician's check:
//!
//! ```toml
//! [[rules]]
//! id = "thermostat_coolant_hot"
//! component = "thermostat"
//! title = "coolant hot, more than engine load explains"
//! feature = "coolant_temp_c_mean_300s"   # the symptom
//! healthy = 98.0                         # badness 0 at or below (direction: failed > healthy)
//! failed = 108.0                         # badness 1 at or above
//! require = [{ feature = "coolant_temp_c_count_300s", min = 10.0 }]
//! unless = [{ title = "engine load explains the heat", feature = "coolant_temp_c_mean_300s",
//!             adjust = [{ feature = "engine_load_pct_mean_300s", coef = -0.2 }],
//!             from = 97.0, to = 95.5 }]
//! ```

use pmi_core::{Component, SeverityThresholds};
use serde::{Deserialize, Serialize};

/// How the rules of one component combine into the component's risk.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The strongest rule decides (default): two weak symptoms stay weak.
    #[default]
    Max,
    /// Noisy-OR, `1 − Π(1 − score)`: independent weak symptoms of one component add up.
    NoisyOr,
}

/// The rule scorer's configuration: severity thresholds, how rules combine, and the rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSet {
    /// Model name and version reported in every prediction's `model` field (default
    /// `rules-v1`). Change it whenever you change a threshold, so that predictions say which
    /// rules made them. Shared by every prediction.
    pub model: std::sync::Arc<str>,
    /// Risk thresholds of the severities (defaults from DESIGN.md: critical ≥ 0.9, high ≥
    /// 0.75, medium ≥ 0.5, low ≥ 0.3).
    pub severity: SeverityThresholds,
    /// How the rules of one component combine (default [`Combine::Max`]).
    pub combine: Combine,
    /// At most this many reasons in a prediction's explanation (default 3).
    pub max_explanations: usize,
    /// The rules (default: the table in [`crate::rules`]). Giving `rules` in a config file
    /// replaces the whole list.
    pub rules: Vec<Rule>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            model: "rules-v1".into(),
            severity: SeverityThresholds::default(),
            combine: Combine::Max,
            max_explanations: 3,
            rules: super::defaults::default_rules(),
        }
    }
}

/// One health check of one component.
///
/// The rule's *signal* is `feature + Σ adjust[i].coef × adjust[i].feature`. Its *badness*
/// rises linearly from 0 at `healthy` to 1 at `failed` (either direction: `failed < healthy`
/// means low values are bad), is raised by the optional [`Trend`] once the level is out of
/// the healthy band, and is scaled by `weight`. A rule applies only when every
/// [`Require`] holds and every feature it reads has a value (null means no evidence, never
/// an alarm).
///
/// The badness says how abnormal the vehicle is. Each [`Unless`] term then says how well
/// *another* cause explains the same symptom, and lowers the rule's share in picking the
/// component: `score = badness × Π(1 − unless)`. The prediction's risk is the largest
/// badness; its component is the one with the largest score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable identifier, unique in the set, e.g. `thermostat_coolant_hot`.
    pub id: String,
    /// The component this rule implicates.
    pub component: Component,
    /// What the check looks for, in a technician's words; starts each explanation line.
    pub title: String,
    /// The observed feature, e.g. `coolant_temp_c_mean_300s`.
    pub feature: String,
    /// Linear corrections added to the observed feature (e.g. subtract what engine load
    /// explains). Empty by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjust: Vec<Adjust>,
    /// Signal level with badness 0 (the edge of the healthy band).
    pub healthy: f64,
    /// Signal level with badness 1 (the component has failed).
    pub failed: f64,
    /// Conditions for the rule to apply (enough readings, operating point).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Require>,
    /// Optional trend term from a slope feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<Trend>,
    /// Other causes that explain the same symptom better (differential diagnosis).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<Unless>,
    /// Largest badness the rule can give, in (0, 1] (default 1): below 1 for supporting
    /// evidence that should not raise an alert on its own.
    #[serde(default = "one")]
    pub weight: f64,
    /// Switch a rule off without deleting it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// A linear correction term of a signal: `coef × feature`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    /// The feature, e.g. `engine_load_pct_mean_300s`.
    pub feature: String,
    /// Its coefficient (negative to subtract), e.g. `-0.2` °C per % load.
    pub coef: f64,
}

/// A condition for a rule to apply: `min ≤ feature ≤ max` (either bound optional). A null
/// feature fails the condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Require {
    /// The feature, e.g. `coolant_temp_c_count_300s`.
    pub feature: String,
    /// Inclusive lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Inclusive upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A trend term: a slope feature adds up to `weight` to the badness, rising linearly from 0
/// at `healthy` to `weight` at `failed`. It counts only when the level is already outside the
/// healthy band, so a normal warm-up (steep but from cold) never alarms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trend {
    /// The slope feature, e.g. `coolant_temp_c_slope_900s` (units per second).
    pub feature: String,
    /// Slope with no contribution.
    pub healthy: f64,
    /// Slope with the full contribution.
    pub failed: f64,
    /// Largest contribution, in (0, 1].
    pub weight: f64,
}

/// Evidence that another cause explains a rule's symptom: its signal (`feature + Σ adjust`)
/// rises linearly from no effect at `from` to fully explaining the symptom at `to` (either
/// direction). It counts only when its own conditions hold (e.g. at light load, where the
/// other cause is the likelier); a null input means no such evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unless {
    /// The other explanation, in a technician's words, e.g. `engine load explains the heat`.
    pub title: String,
    /// The observed feature.
    pub feature: String,
    /// Linear corrections, as in [`Rule::adjust`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjust: Vec<Adjust>,
    /// Signal level where the other explanation starts to count.
    pub from: f64,
    /// Signal level where it fully explains the symptom.
    pub to: f64,
    /// Conditions for this explanation to count (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Require>,
}

impl Rule {
    /// A rule with no corrections, conditions, trend or alternatives, weight 1, enabled.
    pub fn new(
        id: &str,
        component: Component,
        title: &str,
        feature: &str,
        healthy: f64,
        failed: f64,
    ) -> Rule {
        Rule {
            id: id.to_owned(),
            component,
            title: title.to_owned(),
            feature: feature.to_owned(),
            adjust: Vec::new(),
            healthy,
            failed,
            require: Vec::new(),
            trend: None,
            unless: Vec::new(),
            weight: 1.0,
            enabled: true,
        }
    }

    /// Adds `coef × feature` to the signal.
    pub fn adjust(mut self, feature: &str, coef: f64) -> Rule {
        self.adjust.push(Adjust {
            feature: feature.to_owned(),
            coef,
        });
        self
    }

    /// Requires `feature ≥ min`.
    pub fn require_min(mut self, feature: &str, min: f64) -> Rule {
        self.require.push(Require {
            feature: feature.to_owned(),
            min: Some(min),
            max: None,
        });
        self
    }

    /// Requires `feature ≤ max`.
    pub fn require_max(mut self, feature: &str, max: f64) -> Rule {
        self.require.push(Require {
            feature: feature.to_owned(),
            min: None,
            max: Some(max),
        });
        self
    }

    /// Sets the trend term.
    pub fn trend(mut self, feature: &str, healthy: f64, failed: f64, weight: f64) -> Rule {
        self.trend = Some(Trend {
            feature: feature.to_owned(),
            healthy,
            failed,
            weight,
        });
        self
    }

    /// Adds an alternative explanation.
    pub fn unless(mut self, unless: Unless) -> Rule {
        self.unless.push(unless);
        self
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: f64) -> Rule {
        self.weight = weight;
        self
    }
}

impl Unless {
    /// An alternative explanation with no corrections.
    pub fn new(title: &str, feature: &str, from: f64, to: f64) -> Unless {
        Unless {
            title: title.to_owned(),
            feature: feature.to_owned(),
            adjust: Vec::new(),
            from,
            to,
            require: Vec::new(),
        }
    }

    /// Counts only when `feature ≥ min`.
    pub fn require_min(mut self, feature: &str, min: f64) -> Unless {
        self.require.push(Require {
            feature: feature.to_owned(),
            min: Some(min),
            max: None,
        });
        self
    }

    /// Counts only when `feature ≤ max`.
    pub fn require_max(mut self, feature: &str, max: f64) -> Unless {
        self.require.push(Require {
            feature: feature.to_owned(),
            min: None,
            max: Some(max),
        });
        self
    }

    /// Adds `coef × feature` to the signal.
    pub fn adjust(mut self, feature: &str, coef: f64) -> Unless {
        self.adjust.push(Adjust {
            feature: feature.to_owned(),
            coef,
        });
        self
    }
}
