//! The ensemble: isolation forest + boosted trees + domain rules → one risk, a component,
//! a severity and the reasons, and the versioned file it is stored in.
//!
//! Members and how they combine:
//! - **boosted trees** ([`BoostedTrees`]), the `risk` model: log-odds that the vehicle fails
//!   (any component) within the horizon; and one `head` per component, trained on failing
//!   rows only: log-odds that it is this component, given a failure. The implicated
//!   component is the head with the highest probability; per-component risk is
//!   `risk × P(component | failure)` (heads normalised to sum to 1).
//! - **isolation forest** ([`IsolationForest`]), fitted on healthy training rows: how
//!   unlike healthy operation the vector is, in [0, 1]. Catches what no label taught.
//! - **domain rules** ([`RuleScorer`], when the rows are PMI feature vectors): documented
//!   health checks with their own risk.
//! - **stacker** ([`Stacker`]): a logistic regression on `[trees' log-odds, anomaly, rule
//!   risk]`, fitted on the validation split (rows the trees did not train on), gives the
//!   final, calibrated risk. Its weights say how much each member counts and are in the
//!   training report.
//!
//! Severity comes from the risk by [`SeverityThresholds`] (DESIGN.md defaults). The
//! explanation, written when the severity is above normal, names the risk and its members,
//! the features that raised the trees' log-odds most (Saabas contributions) with their
//! values, and the rules that fired.
//!
//! # File format (`model.json`, format `pmi-ensemble`, version 1)
//! One JSON object: `format` (`"pmi-ensemble"`), `format_version` (1),
//! `feature_schema_version` (PMI's [`FEATURE_SCHEMA_VERSION`]), `schema_fingerprint` (hex,
//! or null for a table), `meta` (version, creation time, horizon, feature names, the PMI
//! schema, classes, seed, where the data came from), `iforest`, `risk` and `heads` (trees
//! as node arrays `{f, t, l, r, m, v}`: feature, threshold, left/right/missing child,
//! value), `stacker` (weights), `rules` (the rule set, or null) and `severity`. A reader
//! checks `format` and `format_version` before anything else; a model is applied only to
//! vectors of its schema ([`ModelError::SchemaMismatch`]).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use pmi_core::{
    Component, FeatureRow, FeatureSchema, Prediction, Severity, SeverityThresholds,
    FEATURE_SCHEMA_VERSION,
};

use crate::gbdt::{sigmoid, BoostedTrees};
use crate::iforest::IsolationForest;
use crate::rules::{RuleEvaluation, RuleScorer, RuleSet};
use crate::ModelError;

/// Name of the format in a model file.
pub const MODEL_FORMAT: &str = "pmi-ensemble";
/// Version of the format this build writes and reads.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// What a model is and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Registry version (e.g. `v0003`); empty before it is published.
    pub version: String,
    /// When it was trained, ms since the epoch.
    pub created_ms: i64,
    /// Prediction horizon, ms (0 for a table's own label).
    pub horizon_ms: i64,
    /// Feature names, in row order.
    pub feature_names: Vec<String>,
    /// The PMI feature schema, when trained on PMI feature vectors.
    pub schema: Option<FeatureSchema>,
    /// Positive classes (components, or a table's label values).
    pub classes: Vec<String>,
    /// Seed of training.
    pub seed: u64,
    /// Where the training data came from, for people.
    pub trained_on: String,
}

/// Logistic regression over the members' outputs: `risk = σ(w · [1, trees' log-odds,
/// anomaly, rule risk])`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stacker {
    /// Weights: intercept, trees' log-odds, anomaly score, rule risk.
    pub weights: [f64; 4],
}

impl Stacker {
    /// Trees alone (weight 1 on their log-odds).
    pub const TREES_ONLY: Stacker = Stacker {
        weights: [0.0, 1.0, 0.0, 0.0],
    };

    /// Fits the weights by Newton's method with a small ridge penalty (4 parameters: a
    /// closed 4×4 solve per step, no optimiser crate needed). Falls back to
    /// [`Stacker::TREES_ONLY`] when the fit does not converge.
    pub fn fit(inputs: &[[f64; 3]], labels: &[bool]) -> Stacker {
        const RIDGE: f64 = 1e-3;
        let mut w = Stacker::TREES_ONLY.weights;
        for _ in 0..50 {
            let mut grad = [0.0; 4];
            let mut hess = [[0.0; 4]; 4];
            for (x, y) in inputs.iter().zip(labels) {
                let z = [1.0, x[0], x[1], x[2]];
                let p = sigmoid(dot(&w, &z));
                let r = p - if *y { 1.0 } else { 0.0 };
                let h = (p * (1.0 - p)).max(1e-12);
                for i in 0..4 {
                    grad[i] += r * z[i];
                    for j in 0..4 {
                        hess[i][j] += h * z[i] * z[j];
                    }
                }
            }
            for i in 0..4 {
                grad[i] += RIDGE * w[i];
                hess[i][i] += RIDGE;
            }
            let Some(step) = solve4(hess, grad) else {
                return Stacker::TREES_ONLY;
            };
            let mut moved = 0.0f64;
            for i in 0..4 {
                w[i] -= step[i];
                moved = moved.max(step[i].abs());
            }
            if !w.iter().all(|x| x.is_finite()) {
                return Stacker::TREES_ONLY;
            }
            if moved < 1e-9 {
                break;
            }
        }
        Stacker { weights: w }
    }

    /// The combined risk.
    #[inline]
    pub fn risk(&self, margin: f64, anomaly: f64, rule_risk: f64) -> f64 {
        sigmoid(dot(&self.weights, &[1.0, margin, anomaly, rule_risk]))
    }
}

fn dot(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for col in 0..4 {
        let pivot = (col..4).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..4 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 4];
    for row in (0..4).rev() {
        let s: f64 = (row + 1..4).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// A trained ensemble.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ensemble {
    /// What it is.
    pub meta: ModelMeta,
    /// Anomaly model.
    pub iforest: IsolationForest,
    /// Failure within the horizon, any component.
    pub risk: BoostedTrees,
    /// Per class: which component, given a failure (absent for a class without training
    /// examples; empty with a single class).
    pub heads: Vec<Option<BoostedTrees>>,
    /// How the members combine.
    pub stacker: Stacker,
    /// The domain rules, for PMI feature vectors.
    pub rules: Option<RuleSet>,
    /// Severity thresholds.
    pub severity: SeverityThresholds,
    #[serde(skip)]
    rule_scorer: Option<RuleScorer>,
    /// The schema's fingerprint, computed once (hashing 441 names per vector would cost
    /// more than the trees).
    #[serde(skip)]
    fingerprint: Option<u64>,
    /// `ensemble-<version>`, formatted once (and shared by every prediction).
    #[serde(skip)]
    name: Arc<str>,
}

/// The members' outputs for one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowScore {
    /// Combined risk in [0, 1].
    pub risk: f64,
    /// The trees' log-odds.
    pub margin: f64,
    /// Isolation-forest anomaly score.
    pub anomaly: f64,
    /// Rule risk (0 without rules).
    pub rule_risk: f64,
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    format_version: u32,
    feature_schema_version: u32,
    schema_fingerprint: Option<String>,
    #[serde(flatten)]
    model: &'a Ensemble,
}

#[derive(Deserialize)]
struct Envelope {
    format: Option<String>,
    format_version: Option<u32>,
    feature_schema_version: Option<u32>,
}

#[derive(Deserialize)]
struct FileIn {
    #[serde(flatten)]
    model: Ensemble,
}

impl Ensemble {
    /// Assembles an ensemble from its members (training does this) and checks it.
    pub fn new(
        meta: ModelMeta,
        iforest: IsolationForest,
        risk: BoostedTrees,
        heads: Vec<Option<BoostedTrees>>,
        stacker: Stacker,
        rules: Option<RuleSet>,
        severity: SeverityThresholds,
    ) -> Result<Ensemble, ModelError> {
        let mut e = Ensemble {
            meta,
            iforest,
            risk,
            heads,
            stacker,
            rules,
            severity,
            rule_scorer: None,
            fingerprint: None,
            name: "".into(),
        };
        e.prepare("model")?;
        Ok(e)
    }

    /// Checks the parts agree and builds the rule scorer.
    fn prepare(&mut self, path: &str) -> Result<(), ModelError> {
        let bad = |message: String| ModelError::Format {
            path: path.to_owned(),
            message,
        };
        let n = self.meta.feature_names.len();
        if self.iforest.n_features() != n || self.risk.n_features != n {
            return Err(bad(format!(
                "members disagree on the number of features ({n} names, forest {}, trees {})",
                self.iforest.n_features(),
                self.risk.n_features
            )));
        }
        self.risk.validate().map_err(&bad)?;
        self.risk.compile();
        if !self.heads.is_empty() && self.heads.len() != self.meta.classes.len() {
            return Err(bad(format!(
                "{} heads for {} classes",
                self.heads.len(),
                self.meta.classes.len()
            )));
        }
        for h in self.heads.iter().flatten() {
            if h.n_features != n {
                return Err(bad("a head has another number of features".into()));
            }
            h.validate().map_err(&bad)?;
        }
        for h in self.heads.iter_mut().flatten() {
            h.compile();
        }
        self.severity.validate()?;
        self.fingerprint = self.meta.schema.as_ref().map(|s| s.fingerprint());
        self.set_version(self.meta.version.clone());
        self.rule_scorer = match (&self.rules, &self.meta.schema) {
            (Some(rules), Some(schema)) => {
                if schema.names() != self.meta.feature_names.as_slice() {
                    return Err(bad("feature names differ from the schema's".into()));
                }
                Some(RuleScorer::new(rules.clone(), schema)?)
            }
            _ => None,
        };
        Ok(())
    }

    /// `ensemble-<version>`: what predictions record as their model.
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// Sets the registry version (and so the model name predictions record).
    pub fn set_version(&mut self, version: String) {
        self.name = if version.is_empty() {
            "ensemble".into()
        } else {
            format!("ensemble-{version}").into()
        };
        self.meta.version = version;
    }

    /// Fingerprint of the PMI schema the model was trained on (None for a table model).
    pub fn schema_fingerprint(&self) -> Option<u64> {
        self.fingerprint
    }

    /// Checks that the pipeline's schema is the model's.
    pub fn check_schema(&self, schema: &FeatureSchema) -> Result<(), ModelError> {
        match self.schema_fingerprint() {
            Some(f) if f == schema.fingerprint() => Ok(()),
            Some(f) => Err(ModelError::SchemaMismatch {
                expected: f,
                found: schema.fingerprint(),
            }),
            None => Err(ModelError::data(
                "schema",
                "the model was trained on a table, not on PMI feature vectors",
            )),
        }
    }

    /// The members' outputs and the combined risk of a row (no allocation).
    #[inline]
    pub fn score_row(&self, row: &[f64]) -> RowScore {
        let margin = self.risk.margin(row);
        let anomaly = self.iforest.score_row(row);
        let rule_risk = self
            .rule_scorer
            .as_ref()
            .and_then(|r| r.evaluate_row(row).ok())
            .map_or(0.0, |e| e.risk);
        RowScore {
            risk: self.stacker.risk(margin, anomaly, rule_risk),
            margin,
            anomaly,
            rule_risk,
        }
    }

    /// P(class | failure) for each class (sums to 1; one class: `[1]`).
    pub fn class_probabilities(&self, row: &[f64]) -> Vec<f64> {
        if self.heads.is_empty() {
            return vec![1.0; self.meta.classes.len().max(1)];
        }
        let mut p: Vec<f64> = self
            .heads
            .iter()
            .map(|h| h.as_ref().map_or(0.0, |h| sigmoid(h.margin(row))))
            .collect();
        let sum: f64 = p.iter().sum();
        if sum > 0.0 {
            p.iter_mut().for_each(|x| *x /= sum);
        }
        p
    }

    /// The class a prediction implicates, from [`Ensemble::class_probabilities`]: the most
    /// probable one, if any has a probability.
    pub fn likeliest_class(&self, probabilities: &[f64]) -> Option<usize> {
        probabilities
            .iter()
            .enumerate()
            .filter(|(_, x)| **x > 0.0)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    }

    /// Scores a PMI feature vector: risk, severity, component, reasons. The component and
    /// the reasons are worked out when the severity is above normal (the stream's common
    /// case costs only the scores); [`Ensemble::predict_explained`] always gives them.
    pub fn predict<'v>(&self, v: impl Into<FeatureRow<'v>>) -> Result<Prediction, ModelError> {
        self.predict_with(v.into(), false)
    }

    /// [`Ensemble::predict`] with the likeliest component and the reasons even for a
    /// normal prediction (one-off requests: the prediction API).
    pub fn predict_explained<'v>(
        &self,
        v: impl Into<FeatureRow<'v>>,
    ) -> Result<Prediction, ModelError> {
        self.predict_with(v.into(), true)
    }

    fn predict_with(&self, v: FeatureRow<'_>, always: bool) -> Result<Prediction, ModelError> {
        match self.schema_fingerprint() {
            Some(f) if f != v.schema => {
                return Err(ModelError::SchemaMismatch {
                    expected: f,
                    found: v.schema,
                })
            }
            _ => {}
        }
        if v.values.len() != self.meta.feature_names.len() {
            return Err(ModelError::VectorLength {
                expected: self.meta.feature_names.len(),
                found: v.values.len(),
            });
        }
        let row = v.values;
        let s = self.score_row(row);
        let severity = self.severity.classify(s.risk);
        let (component, explanation) = if severity > Severity::Normal || always {
            let component = self
                .likeliest_class(&self.class_probabilities(row))
                .and_then(|i| Component::from_name(&self.meta.classes[i]));
            let component = component.or_else(|| self.rule_evaluation(row)?.component);
            (component, self.explain(row, &s, component))
        } else {
            (None, Vec::new())
        };
        Ok(Prediction {
            vehicle_id: v.vehicle_id.clone(),
            pane_end: v.pane_end,
            risk: s.risk,
            severity,
            component,
            model: self.name.clone(),
            explanation,
        })
    }

    fn rule_evaluation(&self, row: &[f64]) -> Option<RuleEvaluation> {
        self.rule_scorer.as_ref()?.evaluate_row(row).ok()
    }

    /// The reasons for a row's score, most important first.
    pub fn explain(&self, row: &[f64], s: &RowScore, component: Option<Component>) -> Vec<String> {
        let mut out = Vec::new();
        let horizon_days = self.meta.horizon_ms as f64 / 86_400_000.0;
        out.push(format!(
            "risk {:.2}{}: boosted trees {:.2}, anomaly {:.2}, rules {:.2}",
            s.risk,
            match (component, horizon_days > 0.0) {
                (Some(c), true) => format!(" that {c} fails within {horizon_days:.0} days"),
                (None, true) => format!(" of a failure within {horizon_days:.0} days"),
                (Some(c), false) => format!(" ({c})"),
                (None, false) => String::new(),
            },
            sigmoid(s.margin),
            s.anomaly,
            s.rule_risk
        ));
        let mut contrib = vec![0.0; row.len()];
        self.risk.contributions(row, &mut contrib);
        let mut order: Vec<usize> = (0..row.len()).filter(|i| contrib[*i] > 0.0).collect();
        order.sort_by(|a, b| contrib[*b].total_cmp(&contrib[*a]));
        for i in order.into_iter().take(3) {
            let value = if row[i].is_nan() {
                "missing".to_owned()
            } else {
                format!("{:.3}", row[i])
            };
            out.push(format!(
                "{} = {value} (raises the log-odds by {:.2})",
                self.meta.feature_names[i], contrib[i]
            ));
        }
        if let (Some(scorer), Some(e)) = (&self.rule_scorer, self.rule_evaluation(row)) {
            if e.severity > Severity::Normal {
                out.extend(
                    scorer
                        .explain_row(row, &e)
                        .into_iter()
                        .take(2)
                        .map(|r| format!("rule: {r}")),
                );
            }
        }
        out
    }

    /// Serialises the model (see the module docs for the format).
    pub fn to_json(&self) -> Result<String, ModelError> {
        serde_json::to_string(&FileOut {
            format: MODEL_FORMAT,
            format_version: MODEL_FORMAT_VERSION,
            feature_schema_version: FEATURE_SCHEMA_VERSION,
            schema_fingerprint: self.schema_fingerprint().map(|f| format!("{f:#018x}")),
            model: self,
        })
        .map_err(|e| ModelError::Format {
            path: "model".into(),
            message: e.to_string(),
        })
    }

    /// Reads a model serialised by [`Ensemble::to_json`]; `path` names the source in errors.
    pub fn from_json(text: &str, path: &str) -> Result<Ensemble, ModelError> {
        let bad = |message: String| ModelError::Format {
            path: path.to_owned(),
            message,
        };
        let env: Envelope =
            serde_json::from_str(text).map_err(|e| bad(format!("not a JSON model: {e}")))?;
        match env.format.as_deref() {
            Some(MODEL_FORMAT) => {}
            Some(other) => return Err(bad(format!("format `{other}`, expected `{MODEL_FORMAT}`"))),
            None => return Err(bad(format!("no `format` field: not a {MODEL_FORMAT} file"))),
        }
        match env.format_version {
            Some(MODEL_FORMAT_VERSION) => {}
            v => {
                return Err(bad(format!(
                    "format version {v:?}; this build reads version {MODEL_FORMAT_VERSION}"
                )))
            }
        }
        if env.feature_schema_version != Some(FEATURE_SCHEMA_VERSION) {
            return Err(bad(format!(
                "trained on feature definitions version {:?}; this build computes version \
                 {FEATURE_SCHEMA_VERSION}: retrain the model",
                env.feature_schema_version
            )));
        }
        let file: FileIn = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut model = file.model;
        model.prepare(path)?;
        Ok(model)
    }

    /// Reads a model file.
    pub fn load(path: &Path) -> Result<Ensemble, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path.display(), e))?;
        Ensemble::from_json(&text, &path.display().to_string())
    }
}
