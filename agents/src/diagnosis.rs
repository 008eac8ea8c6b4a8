//! The diagnosis agent: from an alert's component and the vehicle's latest features to the
//! likely failure mode, its symptoms, the repair actions, parts, estimated cost and downtime.
//!
//! The knowledge is data, not code: a catalogue in TOML (`agents/catalogue/diagnosis.toml`
//! is the embedded default, documented in the file itself; [`Catalogue::load`] reads a
//! fleet's own). Each component lists its failure modes, most common first, each with
//! evidence conditions on named features. [`Catalogue::diagnose`] scores every mode of the
//! component by the share of its conditions the features meet (a missing or non-finite
//! feature counts as not met) and picks the best; ties go to the earlier mode, so with no
//! evidence at all the most common mode is reported, with confidence 0.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use pmi_core::{Component, FeatureSchema, FeatureVector};

/// The embedded default catalogue's text.
pub const DEFAULT_CATALOGUE: &str = include_str!("../catalogue/diagnosis.toml");

/// Errors reading or checking a catalogue; each names the place at fault.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML for a catalogue (the message names the key and line).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Valid TOML, wrong content.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Where, e.g. `component[2].mode[0].evidence[1].feature`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A condition on one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Feature name, e.g. `coolant_temp_c_mean_300s`.
    pub feature: String,
    /// Met when the value is above this.
    pub above: Option<f64>,
    /// Met when the value is below this.
    pub below: Option<f64>,
}

impl Evidence {
    /// Whether `value` meets the condition (both bounds when both are given).
    pub fn met_by(&self, value: f64) -> bool {
        value.is_finite()
            && self.above.is_none_or(|a| value > a)
            && self.below.is_none_or(|b| value < b)
    }

    fn describe(&self, value: f64) -> String {
        match (self.above, self.below) {
            (Some(a), Some(b)) => format!("{} = {value:.3} in ({a}, {b})", self.feature),
            (Some(a), None) => format!("{} = {value:.3} > {a}", self.feature),
            (None, Some(b)) => format!("{} = {value:.3} < {b}", self.feature),
            (None, None) => format!("{} = {value:.3}", self.feature),
        }
    }
}

/// A part and its list price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// What it is.
    pub name: String,
    /// List price, in the catalogue's currency.
    pub cost: f64,
}

/// One way a component fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureMode {
    /// Machine-readable name, e.g. `stuck_closed`.
    pub name: String,
    /// One sentence for a person.
    pub description: String,
    /// What the driver notices.
    pub symptoms: Vec<String>,
    /// Conditions on features that point to this mode.
    pub evidence: Vec<Evidence>,
    /// What the workshop does, in order.
    pub repair_actions: Vec<String>,
    /// Parts the repair needs.
    pub parts: Vec<Part>,
    /// Workshop hours.
    pub labour_hours: f64,
    /// Hours the vehicle is off the road.
    pub downtime_hours: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentEntry {
    component: String,
    #[serde(rename = "mode")]
    modes: Vec<FailureMode>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    version: u32,
    currency: String,
    labour_rate: f64,
    #[serde(rename = "component")]
    components: Vec<ComponentEntry>,
}

/// The diagnosis catalogue, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Catalogue {
    /// Currency of the costs.
    pub currency: String,
    /// Labour price per hour.
    pub labour_rate: f64,
    modes: BTreeMap<Component, Vec<FailureMode>>,
}

/// What the agent concludes for one alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The component the alert implicates.
    pub component: Component,
    /// The most likely failure mode.
    pub failure_mode: String,
    /// Its description.
    pub description: String,
    /// Share of the mode's evidence the features meet, in [0, 1].
    pub confidence: f64,
    /// The conditions met, with the values seen.
    pub evidence: Vec<String>,
    /// What the driver may notice.
    pub symptoms: Vec<String>,
    /// What the workshop does.
    pub repair_actions: Vec<String>,
    /// Parts needed.
    pub parts: Vec<Part>,
    /// Parts plus labour, in [`Catalogue::currency`].
    pub estimated_cost: f64,
    /// Workshop hours.
    pub labour_hours: f64,
    /// Hours off the road.
    pub downtime_hours: f64,
}

impl Catalogue {
    /// The embedded default catalogue.
    pub fn embedded() -> Catalogue {
        Catalogue::parse(DEFAULT_CATALOGUE, "embedded diagnosis catalogue")
            .expect("the embedded catalogue is valid (checked by its tests)")
    }

    /// Reads a catalogue file.
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Catalogue::parse(&text, &path.display().to_string())
    }

    /// Parses and checks catalogue text; `name` names it in errors.
    pub fn parse(text: &str, name: &str) -> Result<Catalogue, CatalogueError> {
        let file: CatalogueFile = toml::from_str(text).map_err(|e| CatalogueError::Syntax {
            path: name.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |field: String, message: String| CatalogueError::Invalid {
            path: name.to_owned(),
            field,
            message,
        };
        if file.version != 1 {
            return Err(invalid(
                "version".into(),
                format!("{} is not a known version (1)", file.version),
            ));
        }
        if !(file.labour_rate.is_finite() && file.labour_rate >= 0.0) {
            return Err(invalid(
                "labour_rate".into(),
                "must be a non-negative number".into(),
            ));
        }
        let mut modes = BTreeMap::new();
        for (i, entry) in file.components.into_iter().enumerate() {
            let at = format!("component[{i}]");
            let component = Component::from_name(&entry.component).ok_or_else(|| {
                invalid(
                    format!("{at}.component"),
                    format!("unknown component `{}`", entry.component),
                )
            })?;
            if entry.modes.is_empty() {
                return Err(invalid(format!("{at}.mode"), "no failure modes".into()));
            }
            for (j, m) in entry.modes.iter().enumerate() {
                let at = format!("{at}.mode[{j}]");
                if m.name.is_empty() || m.repair_actions.is_empty() {
                    return Err(invalid(at, "needs a name and repair actions".into()));
                }
                let numbers = [m.labour_hours, m.downtime_hours]
                    .into_iter()
                    .chain(m.parts.iter().map(|p| p.cost));
                if numbers.into_iter().any(|x| !(x.is_finite() && x >= 0.0)) {
                    return Err(invalid(
                        at,
                        "hours and costs must be non-negative numbers".into(),
                    ));
                }
                for (k, e) in m.evidence.iter().enumerate() {
                    if e.above.is_none() && e.below.is_none() {
                        return Err(invalid(
                            format!("{at}.evidence[{k}]"),
                            "needs `above` or `below`".into(),
                        ));
                    }
                }
            }
            if modes.insert(component, entry.modes).is_some() {
                return Err(invalid(
                    format!("{at}.component"),
                    format!("`{}` is listed twice", component.name()),
                ));
            }
        }
        Ok(Catalogue {
            currency: file.currency,
            labour_rate: file.labour_rate,
            modes,
        })
    }

    /// Every feature the catalogue's evidence names, sorted, once each (what an alert must
    /// carry for the diagnosis).
    pub fn feature_names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&str> = self
            .modes
            .values()
            .flatten()
            .flat_map(|m| m.evidence.iter().map(|e| e.feature.as_str()))
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Checks that every evidence feature exists in `schema` (a misspelt name would never
    /// be met). Errors name the component, mode and feature.
    pub fn check_features(&self, schema: &FeatureSchema) -> Result<(), CatalogueError> {
        for (component, modes) in &self.modes {
            for m in modes {
                for e in &m.evidence {
                    if schema.index_of_name(&e.feature).is_none() {
                        return Err(CatalogueError::Invalid {
                            path: "catalogue".into(),
                            field: format!("{}.{}.evidence.feature", component.name(), m.name),
                            message: format!("no feature `{}` in the feature schema", e.feature),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The failure modes of `component`, most common first (none if it is not catalogued).
    pub fn modes(&self, component: Component) -> &[FailureMode] {
        self.modes.get(&component).map_or(&[], Vec::as_slice)
    }

    /// Diagnoses an alert on `component` from feature values looked up by name. `None` when
    /// the catalogue has no entry for the component.
    pub fn diagnose(
        &self,
        component: Component,
        feature: impl Fn(&str) -> Option<f64>,
    ) -> Option<Diagnosis> {
        let modes = self.modes.get(&component)?;
        let mut best: Option<(f64, &FailureMode, Vec<String>)> = None;
        for m in modes {
            let met: Vec<String> = m
                .evidence
                .iter()
                .filter_map(|e| {
                    let v = feature(&e.feature)?;
                    e.met_by(v).then(|| e.describe(v))
                })
                .collect();
            let score = if m.evidence.is_empty() {
                0.0
            } else {
                met.len() as f64 / m.evidence.len() as f64
            };
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, m, met));
            }
        }
        let (confidence, m, evidence) = best?;
        let parts_cost: f64 = m.parts.iter().map(|p| p.cost).sum();
        Some(Diagnosis {
            component,
            failure_mode: m.name.clone(),
            description: m.description.clone(),
            confidence,
            evidence,
            symptoms: m.symptoms.clone(),
            repair_actions: m.repair_actions.clone(),
            parts: m.parts.clone(),
            estimated_cost: parts_cost + m.labour_hours * self.labour_rate,
            labour_hours: m.labour_hours,
            downtime_hours: m.downtime_hours,
        })
    }

    /// [`Catalogue::diagnose`] on a feature vector of `schema`.
    pub fn diagnose_vector(
        &self,
        component: Component,
        vector: &FeatureVector,
        schema: &FeatureSchema,
    ) -> Option<Diagnosis> {
        self.diagnose(component, |name| {
            schema.index_of_name(name).and_then(|i| vector.get(i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::WindowConfig;

    fn values<'a>(pairs: &'a [(&'a str, f64)]) -> impl Fn(&str) -> Option<f64> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn the_embedded_catalogue_covers_every_component_with_real_feature_names() {
        let c = Catalogue::embedded();
        for component in Component::ALL {
            assert!(!c.modes(component).is_empty(), "{}", component.name());
        }
        let schema = WindowConfig::default().schema().unwrap();
        c.check_features(&schema).unwrap();
        assert_eq!(c.currency, "EUR");
    }

    #[test]
    fn evidence_picks_the_failure_mode() {
        let c = Catalogue::embedded();
        let hot = c
            .diagnose(
                Component::Thermostat,
                values(&[
                    ("coolant_temp_c_mean_300s", 109.0),
                    ("coolant_temp_c_slope_900s", 0.01),
                ]),
            )
            .unwrap();
        assert_eq!(hot.failure_mode, "stuck_closed");
        assert_eq!(hot.confidence, 1.0);
        assert_eq!(hot.evidence.len(), 2);
        // 45 + 8 + 32 parts, 1.5 h at 95.
        assert!((hot.estimated_cost - (85.0 + 1.5 * 95.0)).abs() < 1e-9);
        assert_eq!(hot.downtime_hours, 3.0);

        let cold = c
            .diagnose(
                Component::Thermostat,
                values(&[
                    ("coolant_temp_c_mean_300s", 62.0),
                    ("engine_load_pct_mean_300s", 45.0),
                ]),
            )
            .unwrap();
        assert_eq!(cold.failure_mode, "stuck_open");

        let sag = c
            .diagnose(
                Component::Battery,
                values(&[
                    ("battery_voltage_v_mean_300s", 12.6),
                    ("battery_voltage_under_load_v_min_900s", 8.9),
                ]),
            )
            .unwrap();
        assert_eq!(sag.failure_mode, "cranking_sag");
    }

    #[test]
    fn without_evidence_the_most_common_mode_is_reported_with_no_confidence() {
        let c = Catalogue::embedded();
        let d = c.diagnose(Component::WaterPump, |_| None).unwrap();
        assert_eq!(d.failure_mode, "impeller_wear");
        assert_eq!(d.confidence, 0.0);
        assert!(d.evidence.is_empty());
        // Non-finite values are no evidence either.
        let d = c.diagnose(Component::Battery, |_| Some(f64::NAN)).unwrap();
        assert_eq!(
            (d.failure_mode.as_str(), d.confidence),
            ("cell_degradation", 0.0)
        );
    }

    #[test]
    fn a_vector_is_read_through_its_schema() {
        let schema = WindowConfig::default().schema().unwrap();
        let mut values = vec![f64::NAN; schema.len()];
        values[schema.index_of_name("vibration_idle_g_mean_900s").unwrap()] = 0.9;
        let v = FeatureVector {
            vehicle_id: pmi_core::VehicleId::parse("VEH_000001").unwrap(),
            pane_end: pmi_core::EventTime(0),
            schema: schema.fingerprint(),
            values: values.into(),
        };
        let d = Catalogue::embedded()
            .diagnose_vector(Component::EngineMounts, &v, &schema)
            .unwrap();
        assert_eq!(
            (d.failure_mode.as_str(), d.confidence),
            ("mount_collapse", 1.0)
        );
    }

    #[test]
    fn bad_catalogues_are_refused_naming_the_field() {
        let base = |component: &str, evidence: &str| {
            format!(
                "version = 1\ncurrency = \"EUR\"\nlabour_rate = 90.0\n\
                 [[component]]\ncomponent = \"{component}\"\n\
                 [[component.mode]]\nname = \"m\"\ndescription = \"d\"\nsymptoms = []\n\
                 evidence = [{evidence}]\nrepair_actions = [\"fix\"]\nparts = []\n\
                 labour_hours = 1.0\ndowntime_hours = 1.0\n"
            )
        };
        let ok = base(
            "battery",
            "{ feature = \"battery_voltage_v_mean_300s\", below = 12.0 }",
        );
        Catalogue::parse(&ok, "t").unwrap();
        let e = Catalogue::parse(&base("flux_capacitor", ""), "t").unwrap_err();
        assert!(e.to_string().contains("component[0].component"), "{e}");
        assert!(e.to_string().contains("flux_capacitor"), "{e}");
        let e = Catalogue::parse(&base("battery", "{ feature = \"x\" }"), "t").unwrap_err();
        assert!(
            e.to_string().contains("component[0].mode[0].evidence[0]"),
            "{e}"
        );
        let e = Catalogue::parse(
            &ok.replace("labour_hours = 1.0", "labour_hours = -1.0"),
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("component[0].mode[0]"), "{e}");
        let e = Catalogue::parse(&ok.replace("name = \"m\"", "nme = \"m\""), "t").unwrap_err();
        assert!(e.to_string().contains("nme"), "{e}");
        let typo = Catalogue::parse(
            &base(
                "battery",
                "{ feature = \"battery_voltage_mean_300s\", below = 12.0 }",
            ),
            "t",
        )
        .unwrap();
        let e = typo
            .check_features(&WindowConfig::default().schema().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("battery_voltage_mean_300s"), "{e}");
    }
}
