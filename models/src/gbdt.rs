//! Gradient-boosted decision trees for binary targets ("fails within the horizon", "it is
//! this component"), fitted with `forust-ml` and scored by PMI's own compact trees.
//!
//! Why `forust-ml`: linfa (0.8) has no gradient boosting (its ensemble crate offers bagging,
//! random forests and AdaBoost). `forust-ml` is XGBoost-style (second-order, histogram
//! splits, L2 leaf regularisation), pure Rust on stable, seedable, handles missing values
//! natively (NaN goes down a learned side) and has been measured within 0.002 ROC-AUC of
//! XGBoost; `gbdt` is slower, `perpetual` needed nightly. Fitting is forust's; after fitting
//! the trees are copied into [`BoostedTrees`], a flat node array per tree that PMI owns, so
//! the model file format is PMI's (documented with the ensemble) and does not change
//! when forust's internals do, and scoring is a tight loop with no allocation.
//!
//! Scores are log-odds (`margin`): `base + Σ leaf values`; [`sigmoid`] turns them into
//! probabilities. [`BoostedTrees::contributions`] splits a margin over the features on the
//! path (Saabas' method, as XGBoost's `approx_contribs`): each split credits its feature
//! with the change in the expected value from the node to the child taken, where a node's
//! expected value is the hessian-weighted mean of its leaves. Those credits are what the
//! explanation of a prediction lists.

use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Boosting settings. Defaults suit a few hundred features and 10⁴–10⁶ rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbdtParams {
    /// Most boosting rounds (default 300); fewer when early stopping ends it.
    pub iterations: usize,
    /// Shrinkage per round (default 0.1).
    pub learning_rate: f32,
    /// Depth limit of each tree (default 5).
    pub max_depth: usize,
    /// L2 regularisation of leaf weights (default 1).
    pub l2: f32,
    /// Least hessian sum in a leaf (default 1).
    pub min_leaf_weight: f32,
    /// Histogram bins per feature (default 256).
    pub nbins: u16,
    /// Share of features each tree may use (default 0.8).
    pub colsample_bytree: f64,
    /// Stop when the validation log-loss has not improved for this many rounds (default
    /// 25); applies when validation data is given. 0: no early stopping (all rounds).
    pub early_stopping_rounds: usize,
    /// Seed of the feature sampling.
    pub seed: u64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            iterations: 300,
            learning_rate: 0.1,
            max_depth: 5,
            l2: 1.0,
            min_leaf_weight: 1.0,
            nbins: 256,
            colsample_bytree: 0.8,
            early_stopping_rounds: 25,
            seed: 0,
        }
    }
}

impl GbdtParams {
    fn check(&self) -> Result<(), ModelError> {
        let bad = |field: &str, message: &str| Err(ModelError::data(field, message));
        if self.iterations == 0 {
            return bad("gbdt.iterations", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("gbdt.learning_rate", "must be in (0, 1]");
        }
        if self.max_depth == 0 || self.max_depth > 16 {
            return bad("gbdt.max_depth", "must be 1 to 16");
        }
        if !(self.colsample_bytree > 0.0 && self.colsample_bytree <= 1.0) {
            return bad("gbdt.colsample_bytree", "must be in (0, 1]");
        }
        if self.nbins < 2 {
            return bad("gbdt.nbins", "must be at least 2");
        }
        Ok(())
    }
}

/// Column-major view of a row-major table, as forust reads it.
pub struct Columns {
    data: Vec<f64>,
    rows: usize,
    cols: usize,
}

impl Columns {
    /// Transposes `rows` (row-major, `cols` wide), keeping only the rows `keep` lists.
    pub fn from_rows(rows: &[f64], cols: usize, keep: &[usize]) -> Columns {
        let mut data = vec![0.0; keep.len() * cols];
        for (i, &r) in keep.iter().enumerate() {
            let row = &rows[r * cols..(r + 1) * cols];
            for (j, v) in row.iter().enumerate() {
                data[j * keep.len() + i] = *v;
            }
        }
        Columns {
            data,
            rows: keep.len(),
            cols,
        }
    }

    fn matrix(&self) -> Matrix<'_, f64> {
        Matrix::new(&self.data, self.rows, self.cols)
    }
}

/// Fits boosted trees for a 0/1 target. `valid` (features and targets) enables early
/// stopping; the model keeps the rounds up to the best validation log-loss.
pub fn fit_binary(
    params: &GbdtParams,
    train: &Columns,
    target: &[f64],
    weights: Option<&[f64]>,
    valid: Option<(&Columns, &[f64])>,
) -> Result<BoostedTrees, ModelError> {
    params.check()?;
    if train.rows != target.len() {
        return Err(ModelError::data(
            "labels",
            format!("{} labels for {} rows", target.len(), train.rows),
        ));
    }
    let positives = target.iter().filter(|y| **y > 0.5).count();
    if positives == 0 || positives == target.len() {
        return Err(ModelError::data(
            "labels",
            "the target needs both classes in the training rows",
        ));
    }
    let mut booster = GradientBooster::default()
        .set_objective_type(ObjectiveType::LogLoss)
        .set_iterations(params.iterations)
        .set_learning_rate(params.learning_rate)
        .set_max_depth(params.max_depth)
        .set_l2(params.l2)
        .set_min_leaf_weight(params.min_leaf_weight)
        .set_nbins(params.nbins)
        .set_colsample_bytree(params.colsample_bytree)
        .set_seed(params.seed)
        .set_parallel(true);
    let ones;
    let weights = match weights {
        Some(w) => w,
        None => {
            ones = vec![1.0; target.len()];
            &ones
        }
    };
    let valid_ones;
    let evaluation = match valid {
        Some((cols, y))
            if cols.rows == y.len() && cols.rows > 0 && params.early_stopping_rounds > 0 =>
        {
            booster = booster
                .set_evaluation_metric(Some(forust_ml::metric::Metric::LogLoss))
                .set_early_stopping_rounds(Some(params.early_stopping_rounds));
            valid_ones = vec![1.0; y.len()];
            Some(vec![(cols.matrix(), y, &valid_ones[..])])
        }
        _ => None,
    };
    booster
        .fit(&train.matrix(), target, weights, evaluation)
        .map_err(|e| ModelError::data("gbdt", e.to_string()))?;
    Ok(BoostedTrees::from_forust(&booster, train.cols))
}

/// One node of a compact tree. A leaf has `feature == LEAF`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Feature index tested, or [`LEAF`].
    #[serde(rename = "f")]
    pub feature: u32,
    /// Go left when the value is below this; right otherwise.
    #[serde(rename = "t")]
    pub threshold: f64,
    /// Child for values below the threshold.
    #[serde(rename = "l")]
    pub left: u32,
    /// Child for values at or above the threshold.
    #[serde(rename = "r")]
    pub right: u32,
    /// Child for a missing (NaN) value.
    #[serde(rename = "m")]
    pub missing: u32,
    /// Leaf value (log-odds) at a leaf; the node's expected value elsewhere.
    #[serde(rename = "v")]
    pub value: f64,
}

/// Marks a leaf in [`Node::feature`].
pub const LEAF: u32 = u32::MAX;

/// A fitted boosted-trees model: `margin(x) = base + Σ_t tree_t(x)` in log-odds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoostedTrees {
    /// Number of features a row must have.
    pub n_features: usize,
    /// Initial log-odds.
    pub base: f64,
    /// The trees, each a node array with its root at 0.
    pub trees: Vec<Vec<Node>>,
    /// The same trees laid out for fast scoring (built from `trees`, not stored).
    #[serde(skip)]
    compiled: Option<Compiled>,
}

/// Trees as complete binary trees of one depth, scored several at a time.
///
/// A tree walk is a chain of dependent loads; walking [`LANES`] trees side by side lets
/// the processor overlap them. Each tree is padded to depth `depth`: a leaf above the
/// bottom becomes pass-through nodes (threshold +∞, missing goes left) over copies of its
/// value, so every walk is exactly `depth` branch-free steps: `i = 2i + 1 + go_right`.
/// Leaf values are added in tree order, so margins equal the node walk's to the bit.
#[derive(Clone, Debug, PartialEq)]
struct Compiled {
    depth: u32,
    /// Per tree, `2^depth − 1` internal nodes: feature, threshold, missing goes right.
    feature: Vec<u32>,
    threshold: Vec<f64>,
    missing_right: Vec<bool>,
    /// Per tree, `2^depth` leaf values.
    leaves: Vec<f64>,
}

/// Trees walked side by side.
const LANES: usize = 8;
/// Deepest tree compiled; deeper models keep the node walk.
const MAX_COMPILED_DEPTH: u32 = 10;

impl Compiled {
    fn build(trees: &[Vec<Node>]) -> Option<Compiled> {
        fn depth_of(tree: &[Node], i: usize) -> u32 {
            let n = &tree[i];
            if n.feature == LEAF {
                0
            } else {
                1 + depth_of(tree, n.left as usize)
                    .max(depth_of(tree, n.right as usize))
                    .max(depth_of(tree, n.missing as usize))
            }
        }
        let depth = trees.iter().map(|t| depth_of(t, 0)).max()?;
        if depth > MAX_COMPILED_DEPTH {
            return None;
        }
        let inner = (1usize << depth) - 1;
        let mut c = Compiled {
            depth,
            feature: Vec::with_capacity(trees.len() * inner),
            threshold: Vec::with_capacity(trees.len() * inner),
            missing_right: Vec::with_capacity(trees.len() * inner),
            leaves: Vec::with_capacity(trees.len() * (inner + 1)),
        };
        for tree in trees {
            let base = c.feature.len();
            c.feature.resize(base + inner, 0);
            c.threshold.resize(base + inner, f64::INFINITY);
            c.missing_right.resize(base + inner, false);
            let leaf_base = c.leaves.len();
            c.leaves.resize(leaf_base + inner + 1, 0.0);
            // (node in the tree, slot in the complete tree, level)
            let mut stack = vec![(0usize, 0usize, 0u32)];
            while let Some((i, slot, level)) = stack.pop() {
                let n = &tree[i];
                if n.feature == LEAF {
                    // Every bottom slot under `slot` gets the value.
                    let below = depth - level;
                    let first = ((slot + 1) << below) - 1 - inner;
                    for leaf in &mut c.leaves[leaf_base + first..leaf_base + first + (1 << below)] {
                        *leaf = n.value;
                    }
                    continue;
                }
                // Forust sends a missing value to the left or the right child (or to a
                // separate branch, which this layout cannot express: keep the node walk).
                let missing_right = if n.missing == n.right {
                    true
                } else if n.missing == n.left {
                    false
                } else {
                    return None;
                };
                c.feature[base + slot] = n.feature;
                c.threshold[base + slot] = n.threshold;
                c.missing_right[base + slot] = missing_right;
                stack.push((n.left as usize, 2 * slot + 1, level + 1));
                stack.push((n.right as usize, 2 * slot + 2, level + 1));
            }
        }
        Some(c)
    }

    #[inline]
    fn margin(&self, base: f64, row: &[f64]) -> f64 {
        let inner = (1usize << self.depth) - 1;
        let trees = self.leaves.len() / (inner + 1);
        let mut sum = base;
        let mut t = 0;
        while t < trees {
            let lanes = LANES.min(trees - t);
            let mut slot = [0usize; LANES];
            for _ in 0..self.depth {
                for (lane, s) in slot.iter_mut().enumerate().take(lanes) {
                    let n = (t + lane) * inner + *s;
                    let x = row[self.feature[n] as usize];
                    let right = if x.is_nan() {
                        self.missing_right[n]
                    } else {
                        x >= self.threshold[n]
                    };
                    *s = 2 * *s + 1 + usize::from(right);
                }
            }
            for (lane, s) in slot.iter().enumerate().take(lanes) {
                sum += self.leaves[(t + lane) * (inner + 1) + (*s - inner)];
            }
            t += lanes;
        }
        sum
    }
}

impl BoostedTrees {
    fn from_forust(booster: &GradientBooster, n_features: usize) -> BoostedTrees {
        let rounds = booster
            .best_iteration
            .map(|b| (b + 1).min(booster.trees.len()))
            .unwrap_or(booster.trees.len());
        let trees = booster.trees[..rounds]
            .iter()
            .map(|tree| {
                let mut nodes: Vec<Node> = tree
                    .nodes
                    .iter()
                    .map(|n| Node {
                        feature: if n.is_leaf {
                            LEAF
                        } else {
                            n.split_feature as u32
                        },
                        threshold: if n.is_leaf { 0.0 } else { n.split_value },
                        left: n.left_child as u32,
                        right: n.right_child as u32,
                        missing: n.missing_node as u32,
                        value: n.weight_value as f64,
                    })
                    .collect();
                let hessians: Vec<f64> = tree.nodes.iter().map(|n| n.hessian_sum as f64).collect();
                expected_values(&mut nodes, &hessians, 0);
                nodes
            })
            .collect();
        let mut model = BoostedTrees {
            n_features,
            base: booster.base_score,
            trees,
            compiled: None,
        };
        model.compile();
        model
    }

    /// Builds the fast scoring layout (after loading; [`BoostedTrees::validate`] first).
    pub fn compile(&mut self) {
        self.compiled = Compiled::build(&self.trees);
    }

    /// The margin (log-odds) of one row. `row.len()` must be `n_features`.
    #[inline]
    pub fn margin(&self, row: &[f64]) -> f64 {
        match &self.compiled {
            Some(c) => c.margin(self.base, row),
            None => self.margin_by_walk(row),
        }
    }

    /// The margin by walking each tree's nodes (the reference for the compiled layout).
    pub fn margin_by_walk(&self, row: &[f64]) -> f64 {
        let mut sum = self.base;
        for tree in &self.trees {
            sum += leaf(tree, row).value;
        }
        sum
    }

    /// Adds each feature's share of `margin(row) − expected` to `out` (Saabas); returns the
    /// expected margin (the bias every row starts from).
    pub fn contributions(&self, row: &[f64], out: &mut [f64]) -> f64 {
        let mut bias = self.base;
        for tree in &self.trees {
            let mut i = 0usize;
            bias += tree[0].value;
            loop {
                let n = &tree[i];
                if n.feature == LEAF {
                    break;
                }
                let next = child(n, row[n.feature as usize]);
                out[n.feature as usize] += tree[next].value - n.value;
                i = next;
            }
        }
        bias
    }

    /// Features used by any split, with how often.
    pub fn split_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.n_features];
        for n in self.trees.iter().flatten() {
            if n.feature != LEAF {
                counts[n.feature as usize] += 1;
            }
        }
        counts
    }

    /// Checks the structure (child indices in range, acyclic by construction: children come
    /// after their parent) after loading from a file.
    pub fn validate(&self) -> Result<(), String> {
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.is_empty() {
                return Err(format!("tree {t} is empty"));
            }
            for (i, n) in tree.iter().enumerate() {
                if n.feature == LEAF {
                    continue;
                }
                if n.feature as usize >= self.n_features {
                    return Err(format!(
                        "tree {t} node {i}: feature {} out of range",
                        n.feature
                    ));
                }
                for c in [n.left, n.right, n.missing] {
                    if c as usize >= tree.len() || c as usize <= i {
                        return Err(format!("tree {t} node {i}: child {c} out of order"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[inline]
fn child(n: &Node, v: f64) -> usize {
    if v.is_nan() {
        n.missing as usize
    } else if v < n.threshold {
        n.left as usize
    } else {
        n.right as usize
    }
}

#[inline]
fn leaf<'a>(tree: &'a [Node], row: &[f64]) -> &'a Node {
    let mut i = 0usize;
    loop {
        let n = &tree[i];
        if n.feature == LEAF {
            return n;
        }
        i = child(n, row[n.feature as usize]);
    }
}

/// Sets every internal node's value to the hessian-weighted mean of its children's (the
/// expected margin below it); returns the node's hessian.
fn expected_values(nodes: &mut [Node], hessians: &[f64], i: usize) -> f64 {
    let n = nodes[i];
    if n.feature == LEAF {
        return hessians[i].max(f64::MIN_POSITIVE);
    }
    let hl = expected_values(nodes, hessians, n.left as usize);
    let hr = expected_values(nodes, hessians, n.right as usize);
    let (vl, vr) = (nodes[n.left as usize].value, nodes[n.right as usize].value);
    nodes[i].value = (hl * vl + hr * vr) / (hl + hr);
    hl + hr
}

/// The logistic function: log-odds to probability.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Probability to log-odds, clamped away from ±∞.
#[inline]
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Two informative features (one with gaps), one noise column.
    fn data(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a: f64 = rng.gen_range(-1.0..1.0);
            let b: f64 = rng.gen_range(-1.0..1.0);
            let noise: f64 = rng.gen();
            let positive = a + 0.5 * b > 0.2;
            rows.extend([a, if rng.gen_bool(0.1) { f64::NAN } else { b }, noise]);
            y.push(if positive { 1.0 } else { 0.0 });
        }
        (rows, y)
    }

    fn all(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn fits_a_separable_set_and_matches_forust_margins() {
        let (rows, y) = data(2000, 1);
        let cols = Columns::from_rows(&rows, 3, &all(2000));
        let params = GbdtParams {
            iterations: 60,
            ..Default::default()
        };
        let model = fit_binary(&params, &cols, &y, None, None).unwrap();
        assert_eq!(model.trees.len(), 60);
        model.validate().unwrap();
        let (test, ty) = data(500, 2);
        let correct = (0..500)
            .filter(|&i| (sigmoid(model.margin(&test[i * 3..i * 3 + 3])) > 0.5) == (ty[i] > 0.5))
            .count();
        assert!(correct > 470, "{correct}/500 correct");

        // The compact trees score exactly as forust's own predict.
        let booster_margins = {
            let mut b = GradientBooster::default()
                .set_objective_type(ObjectiveType::LogLoss)
                .set_iterations(60)
                .set_learning_rate(0.1)
                .set_max_depth(5)
                .set_l2(1.0)
                .set_min_leaf_weight(1.0)
                .set_nbins(256)
                .set_colsample_bytree(0.8)
                .set_seed(0)
                .set_parallel(true);
            b.fit(&cols.matrix(), &y, &vec![1.0; 2000], None).unwrap();
            let tcols = Columns::from_rows(&test, 3, &all(500));
            b.predict(&tcols.matrix(), false)
        };
        for i in 0..500 {
            let m = model.margin(&test[i * 3..i * 3 + 3]);
            assert!(
                (m - booster_margins[i]).abs() < 1e-9,
                "{m} vs {}",
                booster_margins[i]
            );
        }
    }

    #[test]
    fn contributions_add_up_and_credit_the_informative_features() {
        let (rows, y) = data(2000, 3);
        let cols = Columns::from_rows(&rows, 3, &all(2000));
        let model = fit_binary(&GbdtParams::default(), &cols, &y, None, None).unwrap();
        let mut informative = 0.0;
        let mut noise = 0.0;
        for i in 0..200 {
            let row = &rows[i * 3..i * 3 + 3];
            let mut c = [0.0; 3];
            let bias = model.contributions(row, &mut c);
            let total: f64 = bias + c.iter().sum::<f64>();
            assert!((total - model.margin(row)).abs() < 1e-9);
            informative += c[0].abs();
            noise += c[2].abs();
        }
        assert!(informative > 5.0 * noise, "{informative} vs {noise}");
    }

    #[test]
    fn early_stopping_keeps_the_best_rounds_and_training_is_deterministic() {
        let (rows, y) = data(1500, 4);
        let (vrows, vy) = data(500, 5);
        let cols = Columns::from_rows(&rows, 3, &all(1500));
        let vcols = Columns::from_rows(&vrows, 3, &all(500));
        let params = GbdtParams {
            iterations: 1000,
            learning_rate: 0.3,
            early_stopping_rounds: 10,
            ..Default::default()
        };
        let a = fit_binary(&params, &cols, &y, None, Some((&vcols, &vy))).unwrap();
        let b = fit_binary(&params, &cols, &y, None, Some((&vcols, &vy))).unwrap();
        assert!(a.trees.len() < 1000, "stopped early at {}", a.trees.len());
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).unwrap();
        let mut back: BoostedTrees = serde_json::from_str(&json).unwrap();
        back.compile();
        assert_eq!(back, a);
        for i in 0..500 {
            let r = &vrows[i * 3..i * 3 + 3];
            assert_eq!(a.margin(r).to_bits(), back.margin(r).to_bits());
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let (rows, _) = data(10, 6);
        let cols = Columns::from_rows(&rows, 3, &all(10));
        let e = fit_binary(&GbdtParams::default(), &cols, &[0.0; 10], None, None).unwrap_err();
        assert!(matches!(e, ModelError::InvalidData { ref field, .. } if field == "labels"));
        let e = fit_binary(&GbdtParams::default(), &cols, &[0.0; 3], None, None).unwrap_err();
        assert!(matches!(e, ModelError::InvalidData { ref field, .. } if field == "labels"));
        let p = GbdtParams {
            max_depth: 0,
            ..Default::default()
        };
        let e = fit_binary(&p, &cols, &[0.0, 1.0].repeat(5), None, None).unwrap_err();
        assert!(
            matches!(e, ModelError::InvalidData { ref field, .. } if field == "gbdt.max_depth")
        );
    }
}
