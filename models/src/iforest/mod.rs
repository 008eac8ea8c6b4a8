//! An isolation forest of our own: the unsupervised anomaly score of the ensemble.
//!
//! # Why our own
//!
//! linfa 0.8 has no isolation forest, and the isolation-forest crates on crates.io are stale
//! or broken for our use: unseeded (so neither training nor tests can be reproduced),
//! limited to integer features, or their loading discards the fitted model. The algorithm is
//! small, so we keep it here, in a compact form that scores fast and serialises with serde,
//! and plug it into linfa through its [`Fit`] and [`PredictInplace`] traits.
//!
//! # The algorithm
//!
//! It follows Liu, Ting & Zhou, *Isolation Forest* (ICDM 2008), with the choices of
//! scikit-learn's `IsolationForest`, so a Python reference can reproduce its behaviour:
//!
//! - each of the [`IsolationForestParams::trees`] trees is grown on its own sub-sample of
//!   ψ = min([`sample_size`](IsolationForestParams::sample_size), n) training rows drawn
//!   without replacement;
//! - a tree grows to at most ⌈log₂ ψ⌉ levels. At each node a feature is drawn at random
//!   among the features that are not constant on the node's rows (constant ones are skipped;
//!   when all are constant the node is a leaf) and a threshold uniformly in [min, max) of that
//!   feature on the node's rows; rows with `x <= threshold` go left;
//! - the path length of a row in a tree is h(x) = depth + c(size) at the leaf it reaches,
//!   where size is the number of sub-sampled rows that reached that leaf and
//!   c(n) = 2H(n − 1) − 2(n − 1)/n, H(i) = ln(i) + 0.5772156649 (c(1) = 0, c(2) = 1) is the
//!   average path length of an unsuccessful search in a binary search tree of n keys;
//! - the anomaly score is s(x) = 2^(−E\[h(x)\] / c(ψ)) in (0, 1]: close to 1 for rows that
//!   are isolated quickly (anomalies), about 0.5 and below for ordinary rows. (scikit-learn's
//!   `score_samples` returns −s(x).)
//!
//! # Reproducibility
//!
//! Training is deterministic for a [`seed`](IsolationForestParams::seed): tree *i* draws
//! from its own `ChaCha8Rng` seeded with the seed on stream *i*, so a tree depends only on
//! the seed, its index and the data (not on the number of trees or on the order trees are
//! built in).
//!
//! # Missing values
//!
//! Rows may contain NaN (a feature not observed in a window). The model stores one fill
//! value per feature, the median of that feature's non-NaN training values (the mean of the
//! two middle values for an even count; 0.0 when a feature has no value at all), and replaces
//! NaN by it both when fitting and when scoring. A Python reference mimics this with
//! `SimpleImputer(strategy="median")` in front of `IsolationForest`. Infinite values are
//! rejected when fitting; when scoring they simply fall on one side of every threshold.
//!
//! ```
//! use pmi_models::iforest::IsolationForestParams;
//!
//! // 200 ordinary rows of two features, and one far away.
//! let mut rows: Vec<f64> = (0..200).flat_map(|i| [(i % 20) as f64, (i / 20) as f64]).collect();
//! rows.extend([100.0, -100.0]);
//! let forest = IsolationForestParams { seed: 7, ..Default::default() }.fit_rows(&rows, 2)?;
//! let scores = forest.score_rows(&rows);
//! assert!(scores[200] > 0.7 && scores[..200].iter().all(|&s| s < scores[200]));
//! # Ok::<(), pmi_models::ModelError>(())
//! ```

use linfa::dataset::DatasetBase;
use linfa::traits::{Fit, PredictInplace};
use ndarray::{Array1, ArrayBase, Data, Ix2};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::ModelError;

#[cfg(test)]
mod tests;

/// The Euler–Mascheroni constant, as in the paper and scikit-learn.
const EULER_GAMMA: f64 = 0.577_215_664_9;

/// Trees walked side by side when scoring: independent walks hide each other's load
/// latency (100 trees of 8 levels, 40 features, one core: 1 walk at a time scores ~0.46 M
/// rows/s, 4 ~0.77 M, 8 ~0.90 M, 16 ~1.09 M, 32 ~0.81 M).
const LANES: usize = 16;

/// Bound on feature indices, which are stored as `u32`.
const MAX_INDEX: u32 = u32::MAX;

/// Bound on the nodes of a tree (2ψ − 1 at most), whose indices are stored as `u32`.
const MAX_NODES: usize = u32::MAX as usize;

/// c(n): the average path length of an unsuccessful search in a binary search tree of `n`
/// keys, c(n) = 2H(n − 1) − 2(n − 1)/n with H(i) = ln(i) + γ; c(0) = c(1) = 0, c(2) = 1.
///
/// It normalises path lengths: a leaf holding `n` rows adds c(n) to its depth, and the
/// anomaly score divides the mean path length by c(ψ).
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// How to grow an [`IsolationForest`]: the serde config of the model. Unknown fields are
/// rejected; missing ones take the defaults (scikit-learn's `n_estimators=100`,
/// `max_samples="auto"`, and seed 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationForestParams {
    /// Number of trees (at least 1; default 100). The score averages the path lengths over
    /// all trees, so more trees give a smoother score and cost proportionally more.
    pub trees: usize,
    /// Rows drawn (without replacement) to grow each tree: ψ = min(sample_size, rows), at
    /// least 2 (default 256, as in the paper). Trees grow to ⌈log₂ ψ⌉ levels.
    pub sample_size: usize,
    /// Seed of the random draws; the same seed and data give the same forest (default 0).
    pub seed: u64,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        IsolationForestParams {
            trees: 100,
            sample_size: 256,
            seed: 0,
        }
    }
}

impl IsolationForestParams {
    /// Checks the parameters, naming the field at fault.
    fn validate(&self) -> Result<(), ModelError> {
        if self.trees == 0 {
            return Err(ModelError::data(
                "trees",
                "an isolation forest needs at least 1 tree",
            ));
        }
        if self.sample_size < 2 {
            return Err(ModelError::data(
                "sample_size",
                format!("must be at least 2, is {}", self.sample_size),
            ));
        }
        Ok(())
    }

    /// Grows a forest on `rows`, a row-major matrix of `n_features` columns
    /// (`rows.len()` a multiple of `n_features`, at least 2 rows).
    ///
    /// NaN values are replaced by the feature's median (see the [module docs](self));
    /// infinite values are rejected. Errors ([`ModelError::InvalidData`]) name the parameter
    /// (`trees`, `sample_size`) or the input (`n_features`, `rows`) at fault.
    pub fn fit_rows(&self, rows: &[f64], n_features: usize) -> Result<IsolationForest, ModelError> {
        self.validate()?;
        if n_features == 0 {
            return Err(ModelError::data("n_features", "needs at least 1 feature"));
        }
        if n_features > MAX_INDEX as usize {
            return Err(ModelError::data(
                "n_features",
                format!("at most {MAX_INDEX} features"),
            ));
        }
        if !rows.len().is_multiple_of(n_features) {
            return Err(ModelError::data(
                "rows",
                format!(
                    "{} values are not a whole number of rows of {n_features} features",
                    rows.len()
                ),
            ));
        }
        let n = rows.len() / n_features;
        if n < 2 {
            return Err(ModelError::data(
                "rows",
                format!("an isolation forest needs at least 2 rows, got {n}"),
            ));
        }
        if let Some(i) = rows.iter().position(|x| x.is_infinite()) {
            return Err(ModelError::data(
                "rows",
                format!(
                    "row {}, feature {} is infinite (use NaN for a missing value)",
                    i / n_features,
                    i % n_features
                ),
            ));
        }

        let fill = medians(rows, n_features);
        let mut filled = rows.to_vec();
        for (i, x) in filled.iter_mut().enumerate() {
            if x.is_nan() {
                *x = fill[i % n_features];
            }
        }

        let psi = self.sample_size.min(n);
        if psi > MAX_NODES / 2 {
            return Err(ModelError::data(
                "sample_size",
                format!("trees of {psi} rows would not fit 32-bit node indices"),
            ));
        }
        let height = height_limit(psi);
        let trees = (0..self.trees)
            .map(|t| {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(t as u64);
                let mut builder = TreeBuilder {
                    data: &filled,
                    n_features,
                    height,
                    rng,
                    features: (0..n_features).collect(),
                    nodes: Vec::new(),
                };
                let mut sample = index::sample(&mut builder.rng, n, psi).into_vec();
                builder.grow(&mut sample, 0);
                builder.nodes
            })
            .collect();
        Ok(IsolationForest {
            n_features,
            psi,
            fill,
            trees,
        })
    }
}

/// Per feature, the median of the non-NaN values of a row-major matrix (0.0 when there is
/// none).
fn medians(rows: &[f64], n_features: usize) -> Vec<f64> {
    let mut column = Vec::with_capacity(rows.len() / n_features);
    (0..n_features)
        .map(|f| {
            column.clear();
            column.extend(
                rows.iter()
                    .skip(f)
                    .step_by(n_features)
                    .copied()
                    .filter(|x| !x.is_nan()),
            );
            column.sort_unstable_by(f64::total_cmp);
            match column.len() {
                0 => 0.0,
                m if m % 2 == 1 => column[m / 2],
                m => column[m / 2 - 1] / 2.0 + column[m / 2] / 2.0, // no overflow
            }
        })
        .collect()
}

/// Grows one tree into a flat, pre-ordered node array.
struct TreeBuilder<'a> {
    /// The training rows, NaN already filled.
    data: &'a [f64],
    n_features: usize,
    /// Depth limit ⌈log₂ ψ⌉.
    height: usize,
    rng: ChaCha8Rng,
    /// Feature indices, reordered as features are drawn (kept to avoid an allocation per
    /// node).
    features: Vec<usize>,
    nodes: Vec<Node>,
}

impl TreeBuilder<'_> {
    /// Grows the subtree of the rows `sample` at `depth`; returns its root's index.
    fn grow(&mut self, sample: &mut [usize], depth: usize) -> u32 {
        let at = self.nodes.len();
        let leaf = Node::leaf(at as u32, depth as f64 + average_path_length(sample.len()));
        self.nodes.push(leaf);
        if depth >= self.height || sample.len() < 2 {
            return at as u32;
        }
        let Some((feature, threshold)) = self.draw_split(sample) else {
            return at as u32; // every feature constant on these rows
        };
        // Partition: rows with x <= threshold first.
        let value = |r: usize| self.data[r * self.n_features + feature];
        let mut split = 0;
        for i in 0..sample.len() {
            if value(sample[i]) <= threshold {
                sample.swap(i, split);
                split += 1;
            }
        }
        let (left_rows, right_rows) = sample.split_at_mut(split);
        let left = self.grow(left_rows, depth + 1);
        let right = self.grow(right_rows, depth + 1);
        self.nodes[at] = Node {
            feature: feature as u32,
            value: threshold,
            left,
            right,
        };
        at as u32
    }

    /// Draws a feature among those not constant on `sample` and a threshold uniformly in
    /// [min, max) of it; `None` when all features are constant.
    fn draw_split(&mut self, sample: &[usize]) -> Option<(usize, f64)> {
        let mut remaining = self.n_features;
        while remaining > 0 {
            let j = self.rng.gen_range(0..remaining);
            let feature = self.features[j];
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in sample {
                let x = self.data[r * self.n_features + feature];
                min = min.min(x);
                max = max.max(x);
            }
            if min < max {
                let u: f64 = self.rng.gen();
                let mut threshold = min + u * (max - min);
                if !threshold.is_finite() {
                    threshold = (1.0 - u) * min + u * max; // max − min overflowed
                }
                if !(min..max).contains(&threshold) {
                    threshold = min; // rounding: keep the max row on the right
                }
                return Some((feature, threshold));
            }
            // Constant here (and so in every descendant): draw among the others.
            self.features.swap(j, remaining - 1);
            remaining -= 1;
        }
        None
    }
}

/// The height limit ⌈log₂ ψ⌉ of a tree grown on ψ ≥ 2 rows.
fn height_limit(psi: usize) -> usize {
    (usize::BITS - (psi - 1).leading_zeros()) as usize
}

/// One node of a tree: a split, or a leaf, which points back to itself on both sides
/// (`left == right ==` its own index) and whose `value` is its precomputed path length
/// depth + c(size).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    /// Feature the split reads (0 in a leaf).
    #[serde(rename = "f")]
    feature: u32,
    /// The split's threshold (`x <= threshold` goes left), or the leaf's path length.
    #[serde(rename = "v")]
    value: f64,
    /// Index of the left child in the tree's node array (the leaf's own index).
    #[serde(rename = "l")]
    left: u32,
    /// Index of the right child in the tree's node array (the leaf's own index).
    #[serde(rename = "r")]
    right: u32,
}

impl Node {
    /// The leaf at index `at` with path length `path`.
    fn leaf(at: u32, path: f64) -> Node {
        Node {
            feature: 0,
            value: path,
            left: at,
            right: at,
        }
    }

    /// Whether the node at index `at` is a leaf.
    fn is_leaf(&self, at: usize) -> bool {
        self.left as usize == at && self.right as usize == at
    }
}

/// A fitted isolation forest (see the [module docs](self)): scores rows of
/// [`n_features`](Self::n_features) values with an anomaly score in (0, 1].
///
/// It serialises with serde (e.g. JSON) and is checked when deserialised, so a corrupt
/// model file is an error, not a panic or an endless loop while scoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ForestRepr")]
pub struct IsolationForest {
    /// Number of features of a row.
    n_features: usize,
    /// Rows each tree was grown on, ψ.
    psi: usize,
    /// Per feature, the value that replaces NaN (the training median).
    fill: Vec<f64>,
    /// The trees, each a pre-ordered node array, root first.
    trees: Vec<Vec<Node>>,
}

/// The serialised form of [`IsolationForest`], checked by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForestRepr {
    n_features: usize,
    psi: usize,
    fill: Vec<f64>,
    trees: Vec<Vec<Node>>,
}

impl TryFrom<ForestRepr> for IsolationForest {
    type Error = ModelError;

    fn try_from(r: ForestRepr) -> Result<Self, ModelError> {
        if r.n_features == 0 || r.n_features > MAX_INDEX as usize {
            return Err(ModelError::data("n_features", "out of range"));
        }
        if r.psi < 2 {
            return Err(ModelError::data("psi", "must be at least 2"));
        }
        if r.fill.len() != r.n_features || r.fill.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::data(
                "fill",
                "needs one finite value per feature",
            ));
        }
        if r.trees.is_empty() {
            return Err(ModelError::data("trees", "a forest needs at least 1 tree"));
        }
        let height = height_limit(r.psi);
        for (t, nodes) in r.trees.iter().enumerate() {
            if !well_formed(nodes, r.n_features, height) {
                return Err(ModelError::data("trees", format!("tree {t} is malformed")));
            }
        }
        Ok(IsolationForest {
            n_features: r.n_features,
            psi: r.psi,
            fill: r.fill,
            trees: r.trees,
        })
    }
}

/// Whether `nodes` is a tree scoring can walk: every node reading an existing feature,
/// every node but the root the child of exactly one split before it, splits above the
/// height limit, leaves at most at the height limit with a finite path length. Then a walk of `height` steps from
/// the root stays in bounds and ends on a leaf.
fn well_formed(nodes: &[Node], n_features: usize, height: usize) -> bool {
    let mut depth: Vec<Option<usize>> = vec![None; nodes.len()];
    if let Some(root) = depth.first_mut() {
        *root = Some(0);
    } else {
        return false;
    }
    for (i, node) in nodes.iter().enumerate() {
        let Some(d) = depth[i] else {
            return false; // unreachable node
        };
        if node.feature as usize >= n_features {
            return false; // read by every step, leaves included
        }
        if node.is_leaf(i) {
            if !(node.value.is_finite() && node.value >= 0.0) {
                return false;
            }
            continue;
        }
        if d >= height || node.value.is_nan() {
            return false;
        }
        for child in [node.left as usize, node.right as usize] {
            if child <= i || child >= nodes.len() || depth[child].is_some() {
                return false;
            }
            depth[child] = Some(d + 1);
        }
    }
    true
}

impl IsolationForest {
    /// Number of features a row must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Rows each tree was grown on, ψ = min(sample_size, training rows).
    pub fn psi(&self) -> usize {
        self.psi
    }

    /// Number of trees.
    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// Per feature, the value that replaces NaN (the median of its training values).
    pub fn fill_values(&self) -> &[f64] {
        &self.fill
    }

    /// The mean path length E\[h(x)\] of `row` over the trees (NaN filled).
    ///
    /// Leaves loop back to themselves and no split lies deeper than the height limit, so
    /// every tree is walked exactly `height` steps without a branch on the node kind;
    /// [`LANES`] trees are walked side by side, as their loads do not depend on each other.
    fn mean_path_length(&self, row: &[f64]) -> f64 {
        let height = self.height();
        let step = |nodes: &[Node], i: usize| {
            let node = &nodes[i];
            let f = node.feature as usize;
            let mut x = row[f];
            if x.is_nan() {
                x = self.fill[f];
            }
            if x <= node.value {
                node.left as usize
            } else {
                node.right as usize
            }
        };
        let mut sum = 0.0;
        let mut groups = self.trees.chunks_exact(LANES);
        for group in &mut groups {
            let mut at = [0; LANES];
            for _ in 0..height {
                for (i, nodes) in at.iter_mut().zip(group) {
                    *i = step(nodes, *i);
                }
            }
            sum += at
                .iter()
                .zip(group)
                .map(|(&i, nodes)| nodes[i].value)
                .sum::<f64>();
        }
        for nodes in groups.remainder() {
            let mut i = 0;
            for _ in 0..height {
                i = step(nodes, i);
            }
            sum += nodes[i].value;
        }
        sum / self.trees.len() as f64
    }

    /// The height limit ⌈log₂ ψ⌉ of the trees.
    fn height(&self) -> usize {
        height_limit(self.psi)
    }

    /// The anomaly score s(x) = 2^(−E\[h(x)\]/c(ψ)) of one row, in (0, 1]; NaN values are
    /// replaced by the training medians.
    ///
    /// # Panics
    ///
    /// If `row.len() != self.n_features()`: a caller's bug, so callers check the length
    /// (e.g. against the model's schema) before scoring.
    pub fn score_row(&self, row: &[f64]) -> f64 {
        assert_eq!(
            row.len(),
            self.n_features,
            "isolation forest: a row of {} values, the model has {} features",
            row.len(),
            self.n_features
        );
        (-self.mean_path_length(row) / average_path_length(self.psi)).exp2()
    }

    /// The anomaly scores of the rows of a row-major matrix of
    /// [`n_features`](Self::n_features) columns (see [`score_row`](Self::score_row)).
    ///
    /// # Panics
    ///
    /// If `rows.len()` is not a multiple of `self.n_features()`.
    pub fn score_rows(&self, rows: &[f64]) -> Vec<f64> {
        assert!(
            rows.len().is_multiple_of(self.n_features),
            "isolation forest: {} values are not whole rows of {} features",
            rows.len(),
            self.n_features
        );
        let c = average_path_length(self.psi);
        rows.chunks_exact(self.n_features)
            .map(|row| (-self.mean_path_length(row) / c).exp2())
            .collect()
    }
}

/// linfa's training entry point: the records are the rows (targets are ignored, the forest
/// is unsupervised). Same errors as [`IsolationForestParams::fit_rows`].
impl<D: Data<Elem = f64>, T> Fit<ArrayBase<D, Ix2>, T, ModelError> for IsolationForestParams {
    type Object = IsolationForest;

    fn fit(
        &self,
        dataset: &DatasetBase<ArrayBase<D, Ix2>, T>,
    ) -> Result<IsolationForest, ModelError> {
        let records = &dataset.records;
        match records.as_slice() {
            Some(rows) => self.fit_rows(rows, records.ncols()),
            None => {
                let rows: Vec<f64> = records.iter().copied().collect(); // logical row-major order
                self.fit_rows(&rows, records.ncols())
            }
        }
    }
}

/// Anomaly scores through linfa: `forest.predict(&records)` gives an `Array1<f64>` of
/// [`IsolationForest::score_row`] per row (linfa's blanket `Predict` implementations).
///
/// # Panics
///
/// If the records do not have [`IsolationForest::n_features`] columns, or `y` not one entry
/// per row (linfa's `PredictInplace` cannot return an error).
impl<D: Data<Elem = f64>> PredictInplace<ArrayBase<D, Ix2>, Array1<f64>> for IsolationForest {
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<f64>) {
        assert_eq!(
            x.ncols(),
            self.n_features,
            "isolation forest: records of {} columns, the model has {} features",
            x.ncols(),
            self.n_features
        );
        assert_eq!(x.nrows(), y.len(), "isolation forest: one target per row");
        let c = average_path_length(self.psi);
        let mut buffer = Vec::new();
        for (row, y) in x.rows().into_iter().zip(y.iter_mut()) {
            let row = match row.as_slice() {
                Some(row) => row,
                None => {
                    buffer.clear();
                    buffer.extend(row.iter().copied());
                    &buffer
                }
            };
            *y = (-self.mean_path_length(row) / c).exp2();
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<f64> {
        Array1::zeros(x.nrows())
    }
}
