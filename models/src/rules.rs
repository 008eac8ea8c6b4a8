//! Domain-rule health checks: each rule reads one window feature and maps it linearly from a
//! healthy level (badness 0) to a failed level (badness 1). A component's risk is the largest
//! badness of its rules; the prediction's risk is the largest component risk, its component
//! the argmax, its severity by the configured thresholds, and its explanation the rules
//! that fired, with the observed value and the healthy level — what a technician reads.
//!
//! A rule may carry a condition (another feature that must be at least some value), so that
//! e.g. a parked vehicle's zero fuel pressure is not read as a failing pump. A rule whose
//! feature is null (no readings of that channel in the window) says nothing.
//!
//! The default rules (levels from the fleet simulator's physics; see
//! `sources/src/fleet/failure.rs` for the signatures):
//!
//! | component | feature | healthy | failed | condition |
//! | --- | --- | --- | --- | --- |
//! | thermostat | `coolant_temp_c_mean_900s` | ≤ 100 °C | ≥ 116 °C | |
//! | water pump | `engine_coolant_delta_c_mean_300s` | ≤ 10 °C | ≥ 20 °C | |
//! | radiator | `engine_temp_c_max_300s` | ≤ 106 °C | ≥ 116 °C | |
//! | oil pump | `oil_pressure_per_krpm_mean_300s` | ≥ 130 kPa | ≤ 80 kPa | |
//! | oil leak | `oil_coolant_delta_c_mean_900s` | ≤ 16 °C | ≥ 27 °C | |
//! | engine mounts | `vibration_idle_g_mean_300s` | ≤ 0.25 g | ≥ 0.8 g | |
//! | wheel balance | `vibration_highway_g_mean_300s` | ≤ 0.55 g | ≥ 0.95 g | |
//! | driveshaft | `vibration_highway_g_mean_300s` | ≤ 0.5 g | ≥ 0.72 g | |
//! | battery | `battery_voltage_under_load_v_min_900s` | ≥ 10 V | ≤ 7 V | |
//! | battery | `battery_voltage_v_max_900s` | ≥ 13.9 V | ≤ 13.45 V | `rpm_min_300s` ≥ 500 |
//! | fuel pump | `fuel_pressure_high_load_kpa_mean_300s` | ≥ 330 kPa | ≤ 220 kPa | |
//! | fuel filter | `fuel_pressure_kpa_mean_300s` | ≥ 355 kPa | ≤ 315 kPa | `rpm_min_300s` ≥ 500 |
//!
//! Where signatures overlap (thermostat and radiator both heat the coolant; a clogged filter
//! and a weak pump both lower rail pressure), the stronger rule wins; the learned models are
//! there to separate them better.

use serde::{Deserialize, Serialize};

use pmi_core::{Component, FeatureSchema, FeatureVector, Prediction, SeverityThresholds};

use crate::ModelError;

/// One health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The component it implicates.
    pub component: Component,
    /// The feature it reads, by name.
    pub feature: String,
    /// Value at which badness is 0.
    pub healthy: f64,
    /// Value at which badness is 1 (below `healthy` for rules on falling values).
    pub failed: f64,
    /// Optional condition: this feature must be at least `condition_min`.
    #[serde(default)]
    pub condition: Option<String>,
    /// Threshold of the condition.
    #[serde(default)]
    pub condition_min: f64,
    /// Unit, for explanations.
    #[serde(default)]
    pub unit: String,
}

/// A set of rules and the severity thresholds (serde: a `[[rules]]` table per rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The rules.
    pub rules: Vec<Rule>,
    /// Severity thresholds.
    #[serde(default)]
    pub severity: SeverityThresholds,
}

fn rule(component: Component, feature: &str, healthy: f64, failed: f64, unit: &str) -> Rule {
    Rule {
        component,
        feature: feature.into(),
        healthy,
        failed,
        condition: None,
        condition_min: 0.0,
        unit: unit.into(),
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        use Component::*;
        let running = |mut r: Rule| {
            r.condition = Some("rpm_min_300s".into());
            r.condition_min = 500.0;
            r
        };
        RuleSet {
            rules: vec![
                rule(Thermostat, "coolant_temp_c_mean_900s", 100.0, 116.0, "°C"),
                rule(
                    WaterPump,
                    "engine_coolant_delta_c_mean_300s",
                    10.0,
                    20.0,
                    "°C",
                ),
                rule(Radiator, "engine_temp_c_max_300s", 106.0, 116.0, "°C"),
                rule(
                    OilPump,
                    "oil_pressure_per_krpm_mean_300s",
                    130.0,
                    80.0,
                    "kPa/krpm",
                ),
                rule(OilLeak, "oil_coolant_delta_c_mean_900s", 16.0, 27.0, "°C"),
                rule(EngineMounts, "vibration_idle_g_mean_300s", 0.25, 0.8, "g"),
                rule(
                    WheelBalance,
                    "vibration_highway_g_mean_300s",
                    0.55,
                    0.95,
                    "g",
                ),
                rule(Driveshaft, "vibration_highway_g_mean_300s", 0.5, 0.72, "g"),
                rule(
                    Battery,
                    "battery_voltage_under_load_v_min_900s",
                    10.0,
                    7.0,
                    "V",
                ),
                running(rule(
                    Battery,
                    "battery_voltage_v_max_900s",
                    13.9,
                    13.45,
                    "V",
                )),
                rule(
                    FuelPump,
                    "fuel_pressure_high_load_kpa_mean_300s",
                    330.0,
                    220.0,
                    "kPa",
                ),
                running(rule(
                    FuelFilter,
                    "fuel_pressure_kpa_mean_300s",
                    355.0,
                    315.0,
                    "kPa",
                )),
            ],
            severity: SeverityThresholds::default(),
        }
    }
}

#[derive(Clone, Debug)]
struct Compiled {
    rule: Rule,
    feature: usize,
    condition: Option<usize>,
}

/// The rule scorer for one feature schema.
#[derive(Clone, Debug)]
pub struct RuleScorer {
    rules: Vec<Compiled>,
    inactive: Vec<Rule>,
    severity: SeverityThresholds,
    fingerprint: u64,
}

/// Name recorded as the model of rule predictions.
pub const MODEL_NAME: &str = "rules-v1";

impl RuleScorer {
    /// Resolves the rules against `schema`. Rules whose features the schema lacks are kept
    /// aside (see [`RuleScorer::inactive_rules`]), not an error: a deployment may aggregate
    /// fewer channels.
    pub fn new(set: RuleSet, schema: &FeatureSchema) -> Result<RuleScorer, ModelError> {
        set.severity
            .validate()
            .map_err(|e| ModelError::InvalidRule {
                index: 0,
                component: "severity".into(),
                message: e.to_string(),
            })?;
        let mut rules = Vec::new();
        let mut inactive = Vec::new();
        for (index, r) in set.rules.into_iter().enumerate() {
            if !(r.healthy.is_finite() && r.failed.is_finite()) || r.healthy == r.failed {
                return Err(ModelError::InvalidRule {
                    index,
                    component: r.component.name().into(),
                    message: "healthy and failed levels must be finite and different".into(),
                });
            }
            let feature = schema.index_of_name(&r.feature);
            let condition = r.condition.as_deref().map(|c| schema.index_of_name(c));
            match (feature, condition) {
                (Some(f), None) => rules.push(Compiled {
                    rule: r,
                    feature: f,
                    condition: None,
                }),
                (Some(f), Some(Some(c))) => rules.push(Compiled {
                    rule: r,
                    feature: f,
                    condition: Some(c),
                }),
                _ => inactive.push(r),
            }
        }
        Ok(RuleScorer {
            rules,
            inactive,
            severity: set.severity,
            fingerprint: schema.fingerprint(),
        })
    }

    /// Rules that could not be resolved against the schema.
    pub fn inactive_rules(&self) -> &[Rule] {
        &self.inactive
    }

    /// Scores a vector, checking its schema.
    pub fn try_score(&self, v: &FeatureVector) -> Result<Prediction, ModelError> {
        if v.schema != self.fingerprint {
            return Err(ModelError::SchemaMismatch {
                expected: self.fingerprint,
                found: v.schema,
            });
        }
        Ok(self.score_unchecked(v))
    }

    /// Scores a vector of this scorer's schema (checked in debug builds).
    pub fn score(&self, v: &FeatureVector) -> Prediction {
        debug_assert_eq!(v.schema, self.fingerprint, "feature schema mismatch");
        self.score_unchecked(v)
    }

    fn badness(&self, c: &Compiled, v: &FeatureVector) -> Option<(f64, f64)> {
        if let Some(ci) = c.condition {
            if v.get(ci)? < c.rule.condition_min {
                return None;
            }
        }
        let x = v.get(c.feature)?;
        let b = ((x - c.rule.healthy) / (c.rule.failed - c.rule.healthy)).clamp(0.0, 1.0);
        Some((b, x))
    }

    fn score_unchecked(&self, v: &FeatureVector) -> Prediction {
        let mut best: Option<(f64, usize)> = None;
        for (i, c) in self.rules.iter().enumerate() {
            if let Some((b, _)) = self.badness(c, v) {
                if b > 0.0 && best.is_none_or(|(bb, _)| b > bb) {
                    best = Some((b, i));
                }
            }
        }
        let risk = best.map_or(0.0, |(b, _)| b);
        let severity = self.severity.classify(risk);
        let component = best
            .filter(|_| risk >= self.severity.low)
            .map(|(_, i)| self.rules[i].rule.component);
        let mut explanation = Vec::new();
        if let Some(component) = component {
            let mut fired: Vec<(f64, String)> = self
                .rules
                .iter()
                .filter_map(|c| {
                    let (b, x) = self.badness(c, v)?;
                    (b > 0.0).then(|| {
                        let cmp = if c.rule.failed > c.rule.healthy {
                            "≤"
                        } else {
                            "≥"
                        };
                        let focus = if c.rule.component == component {
                            ""
                        } else {
                            " [other component]"
                        };
                        (
                            b,
                            format!(
                                "{}: {} = {:.2} {} (healthy {cmp} {}){focus}",
                                c.rule.component, c.rule.feature, x, c.rule.unit, c.rule.healthy
                            ),
                        )
                    })
                })
                .collect();
            fired.sort_by(|a, b| b.0.total_cmp(&a.0));
            explanation = fired.into_iter().take(3).map(|(_, s)| s).collect();
        }
        Prediction {
            vehicle_id: v.vehicle_id.clone(),
            pane_end: v.pane_end,
            risk,
            severity,
            component,
            model: MODEL_NAME.into(),
            explanation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{Channel, EventTime, Severity, VehicleId};

    fn schema() -> FeatureSchema {
        FeatureSchema::new(Channel::all(), vec![60, 300, 900])
    }

    /// A healthy warm vehicle on the highway.
    fn healthy(schema: &FeatureSchema) -> FeatureVector {
        let mut values = vec![f64::NAN; schema.len()];
        let mut set = |name: &str, x: f64| values[schema.index_of_name(name).unwrap()] = x;
        set("coolant_temp_c_mean_900s", 92.0);
        set("engine_coolant_delta_c_mean_300s", 6.0);
        set("engine_temp_c_max_300s", 100.0);
        set("oil_pressure_per_krpm_mean_300s", 170.0);
        set("oil_coolant_delta_c_mean_900s", 10.0);
        set("vibration_idle_g_mean_300s", 0.14);
        set("vibration_highway_g_mean_300s", 0.43);
        set("battery_voltage_under_load_v_min_900s", 10.6);
        set("battery_voltage_v_max_900s", 14.2);
        set("rpm_min_300s", 2200.0);
        set("fuel_pressure_high_load_kpa_mean_300s", 362.0);
        set("fuel_pressure_kpa_mean_300s", 372.0);
        FeatureVector {
            vehicle_id: VehicleId::parse("VEH_000001").unwrap(),
            pane_end: EventTime(0),
            schema: schema.fingerprint(),
            values,
        }
    }

    fn with(mut v: FeatureVector, schema: &FeatureSchema, name: &str, x: f64) -> FeatureVector {
        v.values[schema.index_of_name(name).unwrap()] = x;
        v
    }

    #[test]
    fn healthy_vehicle_is_normal() {
        let s = schema();
        let scorer = RuleScorer::new(RuleSet::default(), &s).unwrap();
        assert!(scorer.inactive_rules().is_empty());
        let p = scorer.try_score(&healthy(&s)).unwrap();
        assert_eq!(
            (p.severity, p.component, p.risk),
            (Severity::Normal, None, 0.0)
        );
        assert!(p.explanation.is_empty());
    }

    #[test]
    fn each_signature_at_failure_implicates_its_component() {
        let s = schema();
        let scorer = RuleScorer::new(RuleSet::default(), &s).unwrap();
        let cases: &[(Component, &[(&str, f64)])] = &[
            (
                Component::Thermostat,
                &[
                    ("coolant_temp_c_mean_900s", 117.0),
                    ("engine_temp_c_max_300s", 112.0),
                ],
            ),
            (
                Component::WaterPump,
                &[("engine_coolant_delta_c_mean_300s", 24.0)],
            ),
            (
                Component::Radiator,
                &[
                    ("engine_temp_c_max_300s", 118.0),
                    ("coolant_temp_c_mean_900s", 104.0),
                ],
            ),
            (
                Component::OilPump,
                &[
                    ("oil_pressure_per_krpm_mean_300s", 75.0),
                    ("oil_coolant_delta_c_mean_900s", 19.0),
                ],
            ),
            (
                Component::OilLeak,
                &[
                    ("oil_coolant_delta_c_mean_900s", 30.0),
                    ("oil_pressure_per_krpm_mean_300s", 100.0),
                ],
            ),
            (
                Component::EngineMounts,
                &[("vibration_idle_g_mean_300s", 0.9)],
            ),
            (
                Component::WheelBalance,
                &[("vibration_highway_g_mean_300s", 1.1)],
            ),
            (
                Component::Driveshaft,
                &[("vibration_highway_g_mean_300s", 0.74)],
            ),
            (
                Component::Battery,
                &[("battery_voltage_under_load_v_min_900s", 6.0)],
            ),
            (
                Component::FuelPump,
                &[
                    ("fuel_pressure_high_load_kpa_mean_300s", 200.0),
                    ("fuel_pressure_kpa_mean_300s", 345.0),
                ],
            ),
            (
                Component::FuelFilter,
                &[
                    ("fuel_pressure_kpa_mean_300s", 300.0),
                    ("fuel_pressure_high_load_kpa_mean_300s", 280.0),
                ],
            ),
        ];
        for (component, features) in cases {
            let v = features
                .iter()
                .fold(healthy(&s), |v, (n, x)| with(v, &s, n, *x));
            let p = scorer.score(&v);
            assert!(p.severity >= Severity::High, "{component}: {p:?}");
            assert_eq!(p.component, Some(*component), "{p:?}");
            assert!(
                p.explanation[0].contains(component.name()),
                "{:?}",
                p.explanation
            );
        }
    }

    #[test]
    fn risk_grows_with_degradation_and_conditions_gate_rules() {
        let s = schema();
        let scorer = RuleScorer::new(RuleSet::default(), &s).unwrap();
        let risks: Vec<f64> = [100.0, 104.0, 108.0, 112.0, 116.0]
            .iter()
            .map(|x| {
                scorer
                    .score(&with(healthy(&s), &s, "coolant_temp_c_mean_900s", *x))
                    .risk
            })
            .collect();
        assert!(risks.windows(2).all(|w| w[0] < w[1]), "{risks:?}");
        assert!(risks[0] == 0.0 && risks[4] == 1.0);
        // A parked vehicle: no fuel pressure, but the engine is off, so no alarm.
        let parked = with(
            with(healthy(&s), &s, "fuel_pressure_kpa_mean_300s", 0.0),
            &s,
            "rpm_min_300s",
            0.0,
        );
        assert_eq!(scorer.score(&parked).severity, Severity::Normal);
        // Missing features say nothing.
        let empty = FeatureVector {
            values: vec![f64::NAN; s.len()],
            ..healthy(&s)
        };
        assert_eq!(scorer.score(&empty).risk, 0.0);
    }

    #[test]
    fn schema_mismatch_is_an_error_and_rules_round_trip() {
        let s = schema();
        let scorer = RuleScorer::new(RuleSet::default(), &s).unwrap();
        let mut v = healthy(&s);
        v.schema ^= 1;
        assert!(matches!(
            scorer.try_score(&v),
            Err(ModelError::SchemaMismatch { .. })
        ));
        let text = toml::to_string(&RuleSet::default()).unwrap();
        let back: RuleSet = toml::from_str(&text).unwrap();
        assert_eq!(back, RuleSet::default());
        let narrow = FeatureSchema::new(
            vec![Channel::Sensor(pmi_core::Sensor::CoolantTempC)],
            vec![900],
        );
        let scorer = RuleScorer::new(RuleSet::default(), &narrow).unwrap();
        assert_eq!(
            scorer.inactive_rules().len(),
            RuleSet::default().rules.len() - 1
        );
        let bad = RuleSet {
            rules: vec![rule(Component::Battery, "x", 1.0, 1.0, "V")],
            ..Default::default()
        };
        assert!(matches!(
            RuleScorer::new(bad, &s),
            Err(ModelError::InvalidRule { .. })
        ));
    }
}
