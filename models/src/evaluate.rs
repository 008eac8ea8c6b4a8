//! Evaluating an ensemble on held-out rows: the numbers a fleet operator decides on.
//!
//! - ROC-AUC and PR-AUC (average precision) overall ("fails within the horizon") and per
//!   class (score `risk × P(class | failure)`, positives the rows of that class), and of each
//!   member alone, so one sees what each adds.
//! - Precision and recall at each severity threshold (alert = risk at or above it).
//! - Lead time: for each failure of a held-out vehicle whose horizon the rows cover, how
//!   long before the failure the first medium-or-worse prediction came (missed if none).
//! - False alerts per 1000 vehicle-days: (vehicle, day) pairs of healthy rows with a
//!   medium-or-worse prediction, per 1000 (vehicle, day) pairs of healthy rows.
//!
//! As JSON ([`Evaluation`] is `Serialize`), as text ([`Evaluation::render_text`]) and as
//! SVG plots ([`Evaluation::plots`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use pmi_core::Severity;

use crate::dataset::Dataset;
use crate::ensemble::Ensemble;
use crate::gbdt::sigmoid;
use crate::metrics::{downsample_curve, CurvePoint, Scored};
use crate::plots::{histogram_svg, line_plot_svg, Series};
use crate::ModelError;

/// ROC-AUC and PR-AUC of one score against one label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    /// Rows.
    pub rows: u64,
    /// Positive rows.
    pub positives: u64,
    /// Area under the ROC curve (None with one class only).
    pub roc_auc: Option<f64>,
    /// Average precision (None without positives).
    pub pr_auc: Option<f64>,
}

impl Binary {
    fn of(scores: &[f64], labels: &[bool]) -> Result<Binary, ModelError> {
        let s = Scored::new(scores, labels)?;
        Ok(Binary {
            rows: s.len() as u64,
            positives: s.positives(),
            roc_auc: s.roc_auc(),
            pr_auc: s.average_precision(),
        })
    }
}

/// One class's metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class (component).
    pub class: String,
    /// Its metrics.
    #[serde(flatten)]
    pub metrics: Binary,
}

/// Alerting at one severity threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtSeverity {
    /// The severity.
    pub severity: Severity,
    /// Its risk threshold.
    pub threshold: f64,
    /// Rows at or above it.
    pub alerts: u64,
    /// Share of those that are positive.
    pub precision: Option<f64>,
    /// Share of positives at or above it.
    pub recall: Option<f64>,
}

/// How early failures were flagged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadTime {
    /// Failures whose horizon the rows cover.
    pub failures: u64,
    /// Flagged (medium or worse) before they happened.
    pub detected: u64,
    /// Hours from the first medium-or-worse prediction to the failure, per detected failure.
    pub hours: Vec<f64>,
    /// Median of `hours`.
    pub median_hours: Option<f64>,
    /// Share of flagged failures whose first alert named the failing component.
    pub right_component: Option<f64>,
}

/// Everything [`evaluate`] measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The model's version.
    pub model: String,
    /// The ensemble's risk, "fails within the horizon".
    pub overall: Binary,
    /// The boosted trees alone.
    pub trees: Binary,
    /// The isolation forest alone.
    pub anomaly: Binary,
    /// The rules alone (PMI vectors only).
    pub rules: Option<Binary>,
    /// Per class.
    pub per_class: Vec<ClassMetrics>,
    /// Per severity threshold.
    pub at_severity: Vec<AtSeverity>,
    /// Lead times (rows with times and failures only).
    pub lead_time: Option<LeadTime>,
    /// False alerts per 1000 vehicle-days (rows with times only).
    pub false_alerts_per_1000_vehicle_days: Option<f64>,
    /// ROC curve of the risk (at most 200 points).
    pub roc_curve: Vec<CurvePoint>,
    /// Precision–recall curve of the risk (at most 200 points).
    pub pr_curve: Vec<CurvePoint>,
}

const DAY_MS: i64 = 86_400_000;

/// Scores `rows` of `ds` with `model` and measures.
pub fn evaluate(model: &Ensemble, ds: &Dataset, rows: &[usize]) -> Result<Evaluation, ModelError> {
    ds.validate()?;
    if ds.feature_names != model.meta.feature_names {
        return Err(ModelError::data(
            "features",
            "the table's columns are not the ones the model was trained on",
        ));
    }
    let labels: Vec<bool> = rows.iter().map(|r| ds.labels[*r].is_some()).collect();
    let scores: Vec<_> = rows.iter().map(|r| model.score_row(ds.row(*r))).collect();
    let risk: Vec<f64> = scores.iter().map(|s| s.risk).collect();
    let trees: Vec<f64> = scores.iter().map(|s| sigmoid(s.margin)).collect();
    let anomaly: Vec<f64> = scores.iter().map(|s| s.anomaly).collect();
    let rule_risk: Vec<f64> = scores.iter().map(|s| s.rule_risk).collect();

    let probs: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| model.class_probabilities(ds.row(*r)))
        .collect();
    let mut per_class = Vec::new();
    if ds.classes.len() > 1 {
        for (c, name) in ds.classes.iter().enumerate() {
            let l: Vec<bool> = rows
                .iter()
                .map(|r| ds.labels[*r] == Some(c as u16))
                .collect();
            if !l.iter().any(|x| *x) {
                continue;
            }
            let s: Vec<f64> = risk.iter().zip(&probs).map(|(r, p)| r * p[c]).collect();
            per_class.push(ClassMetrics {
                class: name.clone(),
                metrics: Binary::of(&s, &l)?,
            });
        }
    }

    let scored = Scored::new(&risk, &labels)?;
    let t = model.severity;
    let at_severity = [
        (Severity::Critical, t.critical),
        (Severity::High, t.high),
        (Severity::Medium, t.medium),
        (Severity::Low, t.low),
    ]
    .into_iter()
    .map(|(severity, threshold)| {
        let c = scored.confusion_at(threshold);
        AtSeverity {
            severity,
            threshold,
            alerts: c.tp + c.fp,
            precision: c.precision(),
            recall: c.recall(),
        }
    })
    .collect();

    let timed = rows.iter().any(|r| ds.times[*r] != 0);
    let alert = |i: usize| risk[i] >= t.medium;
    let lead_time = (timed && !ds.events.is_empty()).then(|| {
        let mut by_group: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_group.entry(ds.groups[*r]).or_default().push(i);
        }
        let mut lt = LeadTime::default();
        let mut right = 0u64;
        for e in &ds.events {
            let Some(idx) = by_group.get(&e.group) else {
                continue;
            };
            let horizon = model.meta.horizon_ms.max(1);
            let mut window: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|i| {
                    let t = ds.times[rows[*i]];
                    t >= e.failure_ms - horizon && t < e.failure_ms
                })
                .collect();
            if window.is_empty() {
                continue;
            }
            window.sort_by_key(|i| ds.times[rows[*i]]);
            lt.failures += 1;
            if let Some(first) = window.into_iter().find(|i| alert(*i)) {
                lt.detected += 1;
                lt.hours
                    .push((e.failure_ms - ds.times[rows[first]]) as f64 / 3_600_000.0);
                if model.likeliest_class(&probs[first]) == Some(e.class as usize) {
                    right += 1;
                }
            }
        }
        let mut sorted = lt.hours.clone();
        sorted.sort_by(f64::total_cmp);
        lt.median_hours = (!sorted.is_empty()).then(|| sorted[sorted.len() / 2]);
        lt.right_component = (lt.detected > 0).then(|| right as f64 / lt.detected as f64);
        lt
    });
    let false_alerts_per_1000_vehicle_days = timed.then(|| {
        let mut days = BTreeSet::new();
        let mut false_days = BTreeSet::new();
        for (i, r) in rows.iter().enumerate() {
            if labels[i] {
                continue;
            }
            let key = (ds.groups[*r], ds.times[*r].div_euclid(DAY_MS));
            days.insert(key);
            if alert(i) {
                false_days.insert(key);
            }
        }
        1000.0 * false_days.len() as f64 / days.len().max(1) as f64
    });

    Ok(Evaluation {
        model: model.model_name().to_owned(),
        overall: Binary::of(&risk, &labels)?,
        trees: Binary::of(&trees, &labels)?,
        anomaly: Binary::of(&anomaly, &labels)?,
        rules: model
            .rules
            .is_some()
            .then(|| Binary::of(&rule_risk, &labels))
            .transpose()?,
        per_class,
        at_severity,
        lead_time,
        false_alerts_per_1000_vehicle_days,
        roc_curve: downsample_curve(&scored.roc_curve(), 200),
        pr_curve: downsample_curve(&scored.pr_curve(), 200),
    })
}

fn opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.4}"))
}

impl Evaluation {
    /// A plain-text report.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let o = &self.overall;
        let _ = writeln!(
            s,
            "model {}: {} rows, {} positive",
            self.model, o.rows, o.positives
        );
        let _ = writeln!(s, "{:<22} {:>8} {:>8}", "", "ROC-AUC", "PR-AUC");
        let mut line = |name: &str, b: &Binary| {
            let _ = writeln!(s, "{:<22} {:>8} {:>8}", name, opt(b.roc_auc), opt(b.pr_auc));
        };
        line("ensemble", &self.overall);
        line("  boosted trees", &self.trees);
        line("  isolation forest", &self.anomaly);
        if let Some(r) = &self.rules {
            line("  rules", r);
        }
        for c in &self.per_class {
            line(&format!("  {}", c.class), &c.metrics);
        }
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>8} {:>10} {:>8}",
            "severity", "threshold", "alerts", "precision", "recall"
        );
        for a in &self.at_severity {
            let _ = writeln!(
                s,
                "{:<10} {:>9.2} {:>8} {:>10} {:>8}",
                a.severity.name(),
                a.threshold,
                a.alerts,
                opt(a.precision),
                opt(a.recall)
            );
        }
        if let Some(lt) = &self.lead_time {
            let _ = writeln!(
                s,
                "lead time: {} of {} failures flagged medium or worse before failing, median {} h ahead, right component {}",
                lt.detected,
                lt.failures,
                lt.median_hours.map_or("–".into(), |h| format!("{h:.0}")),
                lt.right_component.map_or("–".into(), |r| format!("{:.0}%", 100.0 * r)),
            );
        }
        if let Some(f) = self.false_alerts_per_1000_vehicle_days {
            let _ = writeln!(s, "false alerts: {f:.1} per 1000 vehicle-days");
        }
        s
    }

    /// SVG plots: `(file name, svg)` for the ROC curve, the PR curve and (with lead times)
    /// the lead-time histogram.
    pub fn plots(&self) -> Result<Vec<(String, String)>, ModelError> {
        let pts = |c: &[CurvePoint]| -> Vec<(f64, f64)> { c.iter().map(|p| (p.x, p.y)).collect() };
        let roc = pts(&self.roc_curve);
        let pr = pts(&self.pr_curve);
        let roc_label = format!("ensemble (AUC {})", opt(self.overall.roc_auc));
        let pr_label = format!("ensemble (AP {})", opt(self.overall.pr_auc));
        let mut out = vec![
            (
                "roc.svg".to_owned(),
                line_plot_svg(
                    "ROC: fails within the horizon",
                    "false positive rate",
                    "true positive rate",
                    &[Series {
                        label: &roc_label,
                        points: &roc,
                    }],
                    true,
                )?,
            ),
            (
                "pr.svg".to_owned(),
                line_plot_svg(
                    "Precision–recall: fails within the horizon",
                    "recall",
                    "precision",
                    &[Series {
                        label: &pr_label,
                        points: &pr,
                    }],
                    false,
                )?,
            ),
        ];
        if let Some(lt) = &self.lead_time {
            out.push((
                "lead_time.svg".to_owned(),
                histogram_svg(
                    "Lead time: first medium-or-worse alert before the failure",
                    "hours before failure",
                    &lt.hours,
                    12.0,
                )?,
            ));
        }
        Ok(out)
    }
}
