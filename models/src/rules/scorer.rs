//! [`RuleScorer`]: a [`RuleSet`] compiled against one [`FeatureSchema`].
//!
//! Building resolves every feature name to its index once; scoring then reads a handful of
//! values per rule from the vector, with no allocation until the risk reaches the low
//! severity threshold (only then are explanation strings written).

use std::collections::HashMap;

use pmi_core::features::Derived;
use pmi_core::{Component, FeatureRow, FeatureSchema, Prediction, Sensor, Severity, Stat};

use super::config::{Adjust, Combine, Require, Rule, RuleSet};
use crate::ModelError;

/// Number of components, the length of [`RuleEvaluation::component_risk`].
pub const COMPONENTS: usize = Component::ALL.len();

/// A rule set compiled for one feature schema. Cheap to share between threads (`Sync`).
#[derive(Clone, Debug)]
pub struct RuleScorer {
    rules: RuleSet,
    schema: FeatureSchema,
    fingerprint: u64,
    compiled: Vec<CompiledRule>,
    inactive: Vec<InactiveRule>,
}

/// A rule of the set that does not run, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct InactiveRule {
    /// The rule's id.
    pub id: String,
    /// The component the rule checks.
    pub component: Component,
    /// The rule's observed feature ([`Rule::feature`]).
    pub feature: String,
    /// Why it does not run.
    pub reason: InactiveReason,
}

/// Why a rule does not run.
#[derive(Clone, Debug, PartialEq)]
pub enum InactiveReason {
    /// `enabled = false` in the rule set.
    Disabled,
    /// Features the rule reads that the schema does not have (e.g. a window it lacks).
    MissingFeatures(Vec<String>),
}

/// The scorer's judgement of one vector without the explanation: no allocation.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct RuleEvaluation {
    /// How abnormal the vehicle is: the largest badness of any rule (or the largest
    /// component risk, when noisy-OR lifts one higher), in [0, 1].
    pub risk: f64,
    /// Severity of `risk` by the rule set's thresholds.
    pub severity: Severity,
    /// The component that best explains the symptoms, when `severity` is above normal.
    pub component: Option<Component>,
    /// Each component's risk after differential diagnosis (rules combined by
    /// [`RuleSet::combine`], each rule's badness lowered by the other explanations of its
    /// symptom), indexed like [`Component::ALL`]. This is the per-component input an
    /// ensemble can weigh against other models.
    pub component_risk: [f64; COMPONENTS],
}

impl RuleEvaluation {
    /// The risk of one component.
    pub fn risk_of(&self, component: Component) -> f64 {
        self.component_risk[component as usize]
    }
}

/// `feature + Σ coef × feature`, by index.
#[derive(Clone, Debug)]
struct Signal {
    index: usize,
    adjust: Box<[(usize, f64)]>,
}

impl Signal {
    /// The signal, NaN when any input is null (NaN propagates through the sum).
    #[inline(always)]
    fn value(&self, values: &[f64]) -> f64 {
        let mut s = values[self.index];
        for &(i, coef) in self.adjust.iter() {
            s += coef * values[i];
        }
        s
    }
}

/// Linear from 0 at `start` to 1 at the end, clamped; either direction.
#[derive(Copy, Clone, Debug)]
struct Ramp {
    start: f64,
    inv_span: f64,
}

impl Ramp {
    fn new(start: f64, end: f64) -> Ramp {
        Ramp {
            start,
            inv_span: 1.0 / (end - start),
        }
    }
    /// Position of `x` on the ramp; `x` must not be NaN.
    #[inline(always)]
    fn at(self, x: f64) -> f64 {
        ((x - self.start) * self.inv_span).clamp(0.0, 1.0)
    }
}

/// `min ≤ value ≤ max` conditions by index; absent bounds are infinite.
type Conditions = Box<[(usize, f64, f64)]>;

/// True when every condition holds; a null value fails (NaN fails both comparisons).
#[inline(always)]
fn holds(conditions: &[(usize, f64, f64)], values: &[f64]) -> bool {
    conditions.iter().all(|&(i, min, max)| {
        let x = values[i];
        x >= min && x <= max
    })
}

/// An alternative explanation: its signal, strength ramp and conditions.
#[derive(Clone, Debug)]
struct Alternative {
    signal: Signal,
    ramp: Ramp,
    require: Conditions,
}

#[derive(Clone, Debug)]
struct CompiledTrend {
    index: usize,
    ramp: Ramp,
    weight: f64,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    /// Index into `RuleSet::rules`.
    rule: usize,
    component: usize,
    signal: Signal,
    ramp: Ramp,
    require: Conditions,
    trend: Option<CompiledTrend>,
    unless: Box<[Alternative]>,
    weight: f64,
}

/// What one rule found in one vector.
#[derive(Copy, Clone, Debug)]
struct Outcome {
    /// The rule's signal value.
    signal: f64,
    /// How abnormal, in [0, weight].
    badness: f64,
    /// `badness × Π(1 − unless)`: the rule's vote for its component.
    score: f64,
    /// Contribution of the trend term (before weight).
    trend: f64,
    /// The strongest alternative explanation: (index into `unless`, strength).
    unless: Option<(usize, f64)>,
}

impl CompiledRule {
    /// The rule's outcome, `None` when it does not apply or has no evidence.
    #[inline(always)]
    fn outcome(&self, values: &[f64]) -> Option<Outcome> {
        if !holds(&self.require, values) {
            return None;
        }
        let signal = self.signal.value(values);
        if signal.is_nan() {
            return None;
        }
        let mut badness = self.ramp.at(signal);
        let mut trend = 0.0;
        if badness > 0.0 {
            if let Some(t) = &self.trend {
                let slope = values[t.index];
                if !slope.is_nan() {
                    trend = t.weight * t.ramp.at(slope);
                    badness = (badness + trend).min(1.0);
                }
            }
        }
        badness *= self.weight;
        let mut score = badness;
        let mut strongest: Option<(usize, f64)> = None;
        if badness > 0.0 {
            for (k, alt) in self.unless.iter().enumerate() {
                let s = alt.signal.value(values);
                if s.is_nan() || !holds(&alt.require, values) {
                    continue;
                }
                let g = alt.ramp.at(s);
                score *= 1.0 - g;
                if g > strongest.map_or(0.0, |(_, x)| x) {
                    strongest = Some((k, g));
                }
            }
        }
        Some(Outcome {
            signal,
            badness,
            score,
            trend,
            unless: strongest,
        })
    }
}

impl RuleScorer {
    /// Checks `rules` and compiles them for `schema`. A rule reading a feature the schema
    /// lacks is not an error: it is left out and listed by [`RuleScorer::inactive_rules`].
    ///
    /// Errors: [`ModelError::InvalidRule`] for a malformed rule (empty or duplicate id,
    /// non-finite or equal thresholds, weight outside (0, 1], `min > max`),
    /// [`ModelError::Config`] for invalid severity thresholds.
    pub fn new(rules: RuleSet, schema: &FeatureSchema) -> Result<RuleScorer, ModelError> {
        rules.severity.validate()?;
        let index: HashMap<&str, usize> = schema
            .names()
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut compiled = Vec::new();
        let mut inactive = Vec::new();
        for (k, rule) in rules.rules.iter().enumerate() {
            validate(rule)?;
            if !seen.insert(rule.id.as_str()) {
                return Err(ModelError::rule(&rule.id, "duplicate id"));
            }
            if !rule.enabled {
                inactive.push(InactiveRule {
                    id: rule.id.clone(),
                    component: rule.component,
                    feature: rule.feature.clone(),
                    reason: InactiveReason::Disabled,
                });
                continue;
            }
            let mut names = Resolver {
                index: &index,
                missing: Vec::new(),
            };
            let main = names.signal(&rule.feature, &rule.adjust);
            let unless: Box<[Alternative]> = rule
                .unless
                .iter()
                .map(|u| Alternative {
                    signal: names.signal(&u.feature, &u.adjust),
                    ramp: Ramp::new(u.from, u.to),
                    require: names.conditions(&u.require),
                })
                .collect();
            let require = names.conditions(&rule.require);
            let trend = rule.trend.as_ref().map(|t| CompiledTrend {
                index: names.get(&t.feature),
                ramp: Ramp::new(t.healthy, t.failed),
                weight: t.weight,
            });
            let missing = names.missing;
            if !missing.is_empty() {
                inactive.push(InactiveRule {
                    id: rule.id.clone(),
                    component: rule.component,
                    feature: rule.feature.clone(),
                    reason: InactiveReason::MissingFeatures(missing),
                });
                continue;
            }
            compiled.push(CompiledRule {
                rule: k,
                component: rule.component as usize,
                signal: main,
                ramp: Ramp::new(rule.healthy, rule.failed),
                require,
                trend,
                unless,
                weight: rule.weight,
            });
        }
        Ok(RuleScorer {
            rules,
            schema: schema.clone(),
            fingerprint: schema.fingerprint(),
            compiled,
            inactive,
        })
    }

    /// The rule set the scorer was built from.
    pub fn rule_set(&self) -> &RuleSet {
        &self.rules
    }

    /// The schema the scorer accepts vectors of.
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    /// The model name reported in predictions ([`RuleSet::model`]).
    pub fn model_name(&self) -> &str {
        &self.rules.model
    }

    /// Rules that do not run: disabled, or reading features the schema lacks.
    pub fn inactive_rules(&self) -> &[InactiveRule] {
        &self.inactive
    }

    /// The rules that run, in rule-set order.
    pub fn active_rules(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.compiled.iter().map(|c| &self.rules.rules[c.rule])
    }

    /// Checks that `v` follows the scorer's schema and returns its values.
    fn values<'v>(&self, v: FeatureRow<'v>) -> Result<&'v [f64], ModelError> {
        if v.schema != self.fingerprint {
            return Err(ModelError::SchemaMismatch {
                expected: self.fingerprint,
                found: v.schema,
            });
        }
        if v.values.len() != self.schema.len() {
            return Err(ModelError::VectorLength {
                expected: self.schema.len(),
                found: v.values.len(),
            });
        }
        Ok(v.values)
    }

    /// Risk, severity, component and per-component risks of `v`, without explanation and
    /// without allocating. Errors when `v` follows another schema.
    pub fn evaluate<'v>(&self, v: impl Into<FeatureRow<'v>>) -> Result<RuleEvaluation, ModelError> {
        let values = self.values(v.into())?;
        Ok(self.evaluate_values(values))
    }

    /// [`RuleScorer::evaluate`] of a bare row of the scorer's schema (an ensemble scoring
    /// a table). Errors when the row has another length than the schema.
    pub fn evaluate_row(&self, values: &[f64]) -> Result<RuleEvaluation, ModelError> {
        if values.len() != self.schema.len() {
            return Err(ModelError::VectorLength {
                expected: self.schema.len(),
                found: values.len(),
            });
        }
        Ok(self.evaluate_values(values))
    }

    /// The explanation lines of an evaluation of `values` (a row of the scorer's schema, as
    /// passed to [`RuleScorer::evaluate_row`]).
    pub fn explain_row(&self, values: &[f64], e: &RuleEvaluation) -> Vec<String> {
        self.explain(values, e)
    }

    fn evaluate_values(&self, values: &[f64]) -> RuleEvaluation {
        let mut component_risk = [0.0f64; COMPONENTS];
        let mut max_badness = 0.0f64;
        let mut max_badness_component = 0usize;
        let noisy_or = self.rules.combine == Combine::NoisyOr;
        for rule in &self.compiled {
            let Some(o) = rule.outcome(values) else {
                continue;
            };
            if o.badness > max_badness {
                max_badness = o.badness;
                max_badness_component = rule.component;
            }
            let c = &mut component_risk[rule.component];
            *c = if noisy_or {
                *c + o.score - *c * o.score
            } else {
                c.max(o.score)
            };
        }
        let (mut best, mut best_risk) = (0usize, 0.0f64);
        for (i, r) in component_risk.iter().enumerate() {
            if *r > best_risk {
                (best, best_risk) = (i, *r);
            }
        }
        if best_risk == 0.0 {
            // Every rule that saw a symptom deferred to an explanation with no symptom of its
            // own: name the component of the strongest symptom.
            best = max_badness_component;
        }
        let risk = max_badness.max(best_risk);
        let severity = self.rules.severity.classify(risk);
        RuleEvaluation {
            risk,
            severity,
            component: (severity > Severity::Normal).then(|| Component::ALL[best]),
            component_risk,
        }
    }

    /// Scores `v`, or errors when it follows another schema than the scorer's.
    ///
    /// The explanation (strings) is written only when the risk reaches the low threshold:
    /// the implicated component's rules first, then the other rules that saw a symptom, by
    /// score, at most [`RuleSet::max_explanations`] lines.
    pub fn try_score<'v>(&self, v: impl Into<FeatureRow<'v>>) -> Result<Prediction, ModelError> {
        let v = v.into();
        let values = self.values(v)?;
        let e = self.evaluate_values(values);
        let explanation = if e.risk >= self.rules.severity.low {
            self.explain(values, &e)
        } else {
            Vec::new()
        };
        Ok(Prediction {
            vehicle_id: v.vehicle_id.clone(),
            pane_end: v.pane_end,
            risk: e.risk,
            severity: e.severity,
            component: e.component,
            model: self.rules.model.clone(),
            explanation,
        })
    }

    /// Scores `v`.
    ///
    /// # Panics
    /// When `v` follows another schema than the scorer's: the pipeline builds the scorer
    /// from the schema its window operator emits, so that is a broken invariant. Use
    /// [`RuleScorer::try_score`] where vectors of several schemas can arrive.
    pub fn score<'v>(&self, v: impl Into<FeatureRow<'v>>) -> Prediction {
        match self.try_score(v) {
            Ok(p) => p,
            Err(e) => panic!("rule scorer `{}`: {e}", self.rules.model),
        }
    }

    fn explain(&self, values: &[f64], e: &RuleEvaluation) -> Vec<String> {
        let implicated = e.component.map(|c| c as usize);
        let mut found: Vec<(&CompiledRule, Outcome)> = self
            .compiled
            .iter()
            .filter_map(|r| r.outcome(values).map(|o| (r, o)))
            .filter(|(_, o)| o.badness > 0.0)
            .collect();
        found.sort_by(|(ra, a), (rb, b)| {
            let ia = Some(ra.component) == implicated;
            let ib = Some(rb.component) == implicated;
            ib.cmp(&ia)
                .then(b.score.total_cmp(&a.score))
                .then(b.badness.total_cmp(&a.badness))
        });
        found
            .iter()
            .take(self.rules.max_explanations)
            .map(|(r, o)| self.line(values, r, o))
            .collect()
    }

    /// One explanation line: the rule's title, the observed value, the corrections applied
    /// to it, and the healthy and failed levels, e.g. `thermostat: coolant hot at any load:
    /// coolant_temp_c_mean_300s = 114.5 °C; less 0.08 × engine_load_pct_mean_300s (49 %)
    /// and 0.1 × ambient_temp_c_mean_300s (19.4 °C): 108.6 °C (healthy ≤ 87, failed ≥ 100)`.
    fn line(&self, values: &[f64], r: &CompiledRule, o: &Outcome) -> String {
        use std::fmt::Write;
        let rule = &self.rules.rules[r.rule];
        let names = self.schema.names();
        let unit = self.unit(r.signal.index);
        let (le, ge) = if rule.failed > rule.healthy {
            ("≤", "≥")
        } else {
            ("≥", "≤")
        };
        let mut s = format!(
            "{}: {}: {} = {}",
            rule.component,
            rule.title,
            rule.feature,
            unit.show(values[r.signal.index])
        );
        if !rule.adjust.is_empty() {
            for (k, (a, &(i, _))) in rule.adjust.iter().zip(r.signal.adjust.iter()).enumerate() {
                let lead = match (k, a.coef < 0.0) {
                    (0, true) => "; less ",
                    (0, false) => "; plus ",
                    (_, true) => " and less ",
                    (_, false) => " and plus ",
                };
                let _ = write!(
                    s,
                    "{lead}{} × {} ({})",
                    a.coef.abs(),
                    names[i],
                    self.unit(i).show(values[i])
                );
            }
            let _ = write!(s, ": {}", unit.show(o.signal));
        }
        let _ = write!(
            s,
            " (healthy {le} {}, failed {ge} {})",
            rule.healthy, rule.failed
        );
        if o.trend > 0.0 {
            if let Some(t) = &r.trend {
                let _ = write!(
                    s,
                    "; trend {} = {}",
                    names[t.index],
                    self.unit(t.index).show(values[t.index])
                );
            }
        }
        if let Some((k, g)) = o.unless {
            if g >= 0.5 {
                let _ = write!(s, "; less likely: {}", rule.unless[k].title);
            }
        }
        s
    }

    /// Unit and display precision of the feature at `index` (layout: channel-major, then
    /// window, then the seven statistics).
    fn unit(&self, index: usize) -> Unit {
        let per_channel = self.schema.windows_s.len() * Stat::ALL.len();
        let channel = self.schema.channels[index / per_channel];
        let stat = Stat::ALL[index % Stat::ALL.len()];
        let (unit, decimals) = channel_unit(channel);
        match stat {
            Stat::Count => Unit {
                unit: "readings",
                decimals: 0,
                per_second: false,
            },
            Stat::Slope => Unit {
                unit,
                decimals: decimals + 3,
                per_second: true,
            },
            _ => Unit {
                unit,
                decimals,
                per_second: false,
            },
        }
    }
}

#[derive(Copy, Clone)]
struct Unit {
    unit: &'static str,
    decimals: usize,
    per_second: bool,
}

impl Unit {
    /// `x` with this unit's precision and name, formatted where it is written.
    fn show(self, x: f64) -> Shown {
        Shown(self, x)
    }
}

/// A value with its unit, displayed without an intermediate allocation.
struct Shown(Unit, f64);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Shown(unit, x), p) = (self, self.0.decimals);
        match (unit.unit, unit.per_second) {
            ("", false) => write!(f, "{x:.p$}"),
            ("", true) => write!(f, "{x:.p$}/s"),
            (u, false) => write!(f, "{x:.p$} {u}"),
            (u, true) => write!(f, "{x:.p$} {u}/s"),
        }
    }
}

/// Unit and natural display precision of a channel.
fn channel_unit(channel: pmi_core::features::Channel) -> (&'static str, usize) {
    use pmi_core::features::Channel;
    match channel {
        Channel::Sensor(s) => match s {
            Sensor::EngineTempC
            | Sensor::CoolantTempC
            | Sensor::OilTempC
            | Sensor::AmbientTempC => ("°C", 1),
            Sensor::OilPressureKpa | Sensor::FuelPressureKpa => ("kPa", 0),
            Sensor::Rpm => ("rpm", 0),
            Sensor::SpeedKmh => ("km/h", 0),
            Sensor::EngineLoadPct | Sensor::FuelLevelPct | Sensor::ThrottlePct => ("%", 0),
            Sensor::BatteryVoltageV => ("V", 2),
            Sensor::VibrationRmsG => ("g", 2),
            Sensor::OdometerKm => ("km", 0),
        },
        Channel::Derived(d) => match d {
            Derived::EngineCoolantDeltaC | Derived::OilCoolantDeltaC => ("°C", 1),
            Derived::OilPressurePerKrpm => ("kPa/krpm", 0),
            Derived::VibrationIdleG | Derived::VibrationHighwayG => ("g", 2),
            Derived::BatteryVoltageUnderLoadV => ("V", 2),
            Derived::FuelPressureHighLoadKpa => ("kPa", 0),
        },
    }
}

/// Resolves feature names to indices, collecting the names the schema lacks.
struct Resolver<'a> {
    index: &'a HashMap<&'a str, usize>,
    missing: Vec<String>,
}

impl Resolver<'_> {
    fn get(&mut self, name: &str) -> usize {
        match self.index.get(name) {
            Some(i) => *i,
            None => {
                if !self.missing.iter().any(|m| m == name) {
                    self.missing.push(name.to_owned());
                }
                0
            }
        }
    }

    fn conditions(&mut self, require: &[Require]) -> Conditions {
        require
            .iter()
            .map(|r| {
                (
                    self.get(&r.feature),
                    r.min.unwrap_or(f64::NEG_INFINITY),
                    r.max.unwrap_or(f64::INFINITY),
                )
            })
            .collect()
    }

    fn signal(&mut self, feature: &str, adjust: &[Adjust]) -> Signal {
        Signal {
            index: self.get(feature),
            adjust: adjust
                .iter()
                .map(|a| (self.get(&a.feature), a.coef))
                .collect(),
        }
    }
}

fn validate(rule: &Rule) -> Result<(), ModelError> {
    let err = |m: &str| Err(ModelError::rule(&rule.id, m));
    let ramp_ok = |a: f64, b: f64| a.is_finite() && b.is_finite() && a != b;
    if rule.id.trim().is_empty() {
        return err("empty id");
    }
    if !ramp_ok(rule.healthy, rule.failed) {
        return err("`healthy` and `failed` must be finite and differ");
    }
    if !(rule.weight > 0.0 && rule.weight <= 1.0) {
        return err("`weight` must lie in (0, 1]");
    }
    if rule.adjust.iter().any(|a| !a.coef.is_finite()) {
        return err("adjust coefficients must be finite");
    }
    let check_require = |require: &[Require]| {
        for r in require {
            let lo = r.min.unwrap_or(f64::NEG_INFINITY);
            let hi = r.max.unwrap_or(f64::INFINITY);
            if r.min.is_none() && r.max.is_none() {
                return err(&format!("require `{}` has neither min nor max", r.feature));
            }
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return err(&format!("require `{}`: min must not exceed max", r.feature));
            }
        }
        Ok(())
    };
    check_require(&rule.require)?;
    if let Some(t) = &rule.trend {
        if !ramp_ok(t.healthy, t.failed) {
            return err("trend `healthy` and `failed` must be finite and differ");
        }
        if !(t.weight > 0.0 && t.weight <= 1.0) {
            return err("trend `weight` must lie in (0, 1]");
        }
    }
    for u in &rule.unless {
        if !ramp_ok(u.from, u.to) {
            return err(&format!(
                "unless `{}`: `from` and `to` must be finite and differ",
                u.title
            ));
        }
        check_require(&u.require)?;
        if u.adjust.iter().any(|a| !a.coef.is_finite()) {
            return err("adjust coefficients must be finite");
        }
    }
    Ok(())
}
