//! Binary classification metrics for training and evaluation reports: ROC and
//! precision–recall curves, their areas, and the confusion matrix at a threshold.
//!
//! The definitions match scikit-learn's (`roc_auc_score`, `roc_curve`,
//! `precision_recall_curve`, `average_precision_score`, `confusion_matrix`), so numbers in
//! our reports can be checked against a Python reference. They are pure functions of a
//! [`Scored`] set: one score per example (higher means "more likely positive", e.g. a risk
//! or an anomaly score) and its true label. [`Scored::new`] checks the input once, so the
//! metrics themselves cannot fail; a metric that is undefined for the data (an area without
//! one of the classes) is `None`.
//!
//! ```
//! use pmi_models::metrics::Scored;
//!
//! let scores = [0.1, 0.4, 0.35, 0.8];
//! let labels = [false, false, true, true];
//! let scored = Scored::new(&scores, &labels)?;
//! assert_eq!(scored.roc_auc(), Some(0.75));
//! assert!((scored.average_precision().unwrap() - 5.0 / 6.0).abs() < 1e-12);
//! let c = scored.confusion_at(0.35);
//! assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 1, 0));
//! # Ok::<(), pmi_models::ModelError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::ModelError;

#[cfg(test)]
mod tests;

/// Scores and their true labels, checked: as many labels as scores, every score finite.
#[derive(Clone, Copy, Debug)]
pub struct Scored<'a> {
    scores: &'a [f64],
    labels: &'a [bool],
}

impl<'a> Scored<'a> {
    /// Pairs `scores[i]` with `labels[i]` (`true` = positive). Fails with
    /// [`ModelError::InvalidData`] naming `labels` when the lengths differ and `scores`
    /// when a score is NaN or infinite. Empty input is valid (every area is then `None`).
    pub fn new(scores: &'a [f64], labels: &'a [bool]) -> Result<Self, ModelError> {
        check(scores, labels)?;
        Ok(Scored { scores, labels })
    }

    /// The scores.
    pub fn scores(&self) -> &'a [f64] {
        self.scores
    }

    /// The labels (`true` = positive).
    pub fn labels(&self) -> &'a [bool] {
        self.labels
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Number of positive examples.
    pub fn positives(&self) -> u64 {
        self.labels.iter().filter(|&&l| l).count() as u64
    }

    /// Number of negative examples.
    pub fn negatives(&self) -> u64 {
        self.len() as u64 - self.positives()
    }

    /// Area under the ROC curve: the probability that a random positive scores higher than
    /// a random negative, ties counting ½ (the Mann–Whitney U statistic from mid-ranks,
    /// divided by P·N; equal to scikit-learn's `roc_auc_score`, the trapezoidal area under
    /// [`roc_curve`](Self::roc_curve)). O(n log n). `None` when either class is absent.
    pub fn roc_auc(&self) -> Option<f64> {
        let (p, n) = (self.positives(), self.negatives());
        if p == 0 || n == 0 {
            return None;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_unstable_by(|&a, &b| self.scores[a].total_cmp(&self.scores[b]));
        // Sum of the (1-based, mid-) ranks of the positives.
        let mut rank_sum = 0.0;
        let mut start = 0;
        while start < order.len() {
            let score = self.scores[order[start]];
            let end = start + order[start..].partition_point(|&i| self.scores[i] == score);
            let mid_rank = (start + 1 + end) as f64 / 2.0; // mean of ranks start+1 ..= end
            let positives = order[start..end]
                .iter()
                .filter(|&&i| self.labels[i])
                .count();
            rank_sum += mid_rank * positives as f64;
            start = end;
        }
        let (p, n) = (p as f64, n as f64);
        Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
    }

    /// The ROC curve: x = false-positive rate FP/N, y = true-positive rate TP/P, when
    /// every example scoring `>= threshold` is called positive. It starts at (0, 0) with
    /// threshold +∞ and has one point per distinct score, thresholds descending, ending at
    /// (1, 1) (scikit-learn's `roc_curve(…, drop_intermediate=False)`). Empty when either
    /// class is absent (a rate would divide by zero).
    pub fn roc_curve(&self) -> Vec<CurvePoint> {
        let (p, n) = (self.positives(), self.negatives());
        if p == 0 || n == 0 {
            return Vec::new();
        }
        let (p, n) = (p as f64, n as f64);
        let mut curve = vec![CurvePoint {
            x: 0.0,
            y: 0.0,
            threshold: f64::INFINITY,
        }];
        curve.extend(self.cumulative().into_iter().map(|c| CurvePoint {
            x: c.fp as f64 / n,
            y: c.tp as f64 / p,
            threshold: c.threshold,
        }));
        curve
    }

    /// The precision–recall curve: x = recall TP/P, y = precision TP/(TP + FP), when every
    /// example scoring `>= threshold` is called positive. It starts at recall 0, precision
    /// 1 with threshold +∞ and has one point per distinct score, thresholds descending.
    /// scikit-learn's `precision_recall_curve` gives the same points in the opposite
    /// order (its final (recall 0, precision 1) point has no threshold). Empty without
    /// positives (recall would divide by zero).
    pub fn pr_curve(&self) -> Vec<CurvePoint> {
        let p = self.positives();
        if p == 0 {
            return Vec::new();
        }
        let p = p as f64;
        let mut curve = vec![CurvePoint {
            x: 0.0,
            y: 1.0,
            threshold: f64::INFINITY,
        }];
        curve.extend(self.cumulative().into_iter().map(|c| CurvePoint {
            x: c.tp as f64 / p,
            y: c.tp as f64 / (c.tp + c.fp) as f64, // every threshold calls ≥ 1 example
            threshold: c.threshold,
        }));
        curve
    }

    /// Average precision, the area under the precision–recall curve as scikit-learn's
    /// `average_precision_score`: Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct thresholds in
    /// descending order (R₀ = 0), a step-wise sum without interpolation. `None` without
    /// positives.
    pub fn average_precision(&self) -> Option<f64> {
        let p = self.positives();
        if p == 0 {
            return None;
        }
        let mut ap = 0.0;
        let mut tp_before = 0;
        for c in self.cumulative() {
            let recall_gain = (c.tp - tp_before) as f64 / p as f64;
            ap += recall_gain * c.tp as f64 / (c.tp + c.fp) as f64;
            tp_before = c.tp;
        }
        Some(ap)
    }

    /// The confusion matrix when every example scoring `>= threshold` is called positive.
    pub fn confusion_at(&self, threshold: f64) -> Confusion {
        let mut c = Confusion::default();
        for (&s, &l) in self.scores.iter().zip(self.labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// For each distinct score, descending, the positives and negatives scoring at least as
    /// high (scikit-learn's `_binary_clf_curve`).
    fn cumulative(&self) -> Vec<Cumulative> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_unstable_by(|&a, &b| self.scores[b].total_cmp(&self.scores[a]));
        let mut out: Vec<Cumulative> = Vec::new();
        let (mut tp, mut fp) = (0, 0);
        for (k, &i) in order.iter().enumerate() {
            if self.labels[i] {
                tp += 1;
            } else {
                fp += 1;
            }
            // Close the group at the last example of each distinct score (−0.0 == 0.0).
            let last = order
                .get(k + 1)
                .is_none_or(|&j| self.scores[j] != self.scores[i]);
            if last {
                out.push(Cumulative {
                    threshold: self.scores[i],
                    tp,
                    fp,
                });
            }
        }
        out
    }
}

/// Checks that `scores` and `labels` pair up and every score is finite.
fn check(scores: &[f64], labels: &[bool]) -> Result<(), ModelError> {
    if scores.len() != labels.len() {
        return Err(ModelError::data(
            "labels",
            format!("{} labels for {} scores", labels.len(), scores.len()),
        ));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(ModelError::data(
            "scores",
            format!("score {i} is {}, scores must be finite", scores[i]),
        ));
    }
    Ok(())
}

/// Positives and negatives scoring at least `threshold`.
struct Cumulative {
    threshold: f64,
    tp: u64,
    fp: u64,
}

/// The confusion matrix of a decision: true/false positives and negatives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Positives called positive.
    pub tp: u64,
    /// Negatives called positive (false alarms).
    pub fp: u64,
    /// Negatives called negative.
    pub tn: u64,
    /// Positives called negative (misses); `fn` in serialised form.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// TP / (TP + FP), the share of alarms that were right; `None` without any alarm.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// TP / (TP + FN), the share of positives caught; `None` without positives.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// F1 = 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall (0 when
    /// there are alarms or positives but no true positive); `None` when there is neither an
    /// alarm nor a positive.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// `num / den`, `None` for a zero denominator.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// A point of a ROC or precision–recall curve and the score threshold that gives it.
///
/// In serialised form (e.g. a JSON report) the +∞ threshold of a curve's first point is
/// written as `null`, since JSON has no infinity, and read back as +∞.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// False-positive rate (ROC) or recall (precision–recall).
    pub x: f64,
    /// True-positive rate (ROC) or precision (precision–recall).
    pub y: f64,
    /// Examples scoring `>= threshold` are called positive.
    #[serde(with = "infinity_as_null")]
    pub threshold: f64,
}

/// Serde for a threshold that may be +∞: non-finite values as `null`, `null` as +∞.
mod infinity_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_none()
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// At most `max_points` points of `points`, evenly spaced along the curve's order, always
/// keeping the first and the last (for plots and JSON reports of large sets, whose curves
/// have a point per distinct score). A curve of at most `max_points` points is returned
/// whole; `max_points` below 2 is taken as 2.
pub fn downsample_curve(points: &[CurvePoint], max_points: usize) -> Vec<CurvePoint> {
    let m = max_points.max(2);
    if points.len() <= m {
        return points.to_vec();
    }
    let last = points.len() - 1;
    // Indices round(k·last/(m−1)), k = 0..m: strictly increasing since last ≥ m − 1.
    (0..m)
        .map(|k| points[(k * last + (m - 1) / 2) / (m - 1)])
        .collect()
}
