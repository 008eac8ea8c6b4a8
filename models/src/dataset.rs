//! Labelled tables for training and evaluation, their labels and their splits.
//!
//! A [`Dataset`] is a row-major table of `f64` features (NaN = missing), a label per row
//! (`None` = negative, `Some(class)` = positive for that class), the group each row belongs
//! to (a vehicle: rows of one group never straddle a split, or the model would be scored on
//! the vehicles it memorised) and the row's time. It is built from the dataflow's own
//! feature vectors ([`Dataset::push_vector`]) or from an operator's table.
//!
//! Labels from ground truth ([`label_at`]): a row at time `t` of a vehicle is positive for
//! component `c` when `c` fails within the horizon (`failure − horizon ≤ t < failure`) or
//! has failed and is not yet repaired (`failure ≤ t < failure + repair`): a broken part
//! still wants a technician.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use pmi_core::{FailureEvent, FeatureSchema, FeatureVector};

use crate::ModelError;

/// A labelled table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Column names, one per feature.
    pub feature_names: Vec<String>,
    /// The PMI feature schema, when the rows are PMI feature vectors.
    pub schema: Option<FeatureSchema>,
    /// Names of the positive classes (components, or a table's label values).
    pub classes: Vec<String>,
    /// Row-major values, `feature_names.len()` per row; NaN is missing.
    pub values: Vec<f64>,
    /// Per row: `None` negative, `Some(i)` positive for `classes[i]`.
    pub labels: Vec<Option<u16>>,
    /// Per row: the unit a split keeps together (vehicle).
    pub groups: Vec<u32>,
    /// Names of the groups (vehicle ids), indexed by group.
    pub group_names: Vec<String>,
    /// Per row: event time, ms (0 when the table has none).
    pub times: Vec<i64>,
    /// Failures of the groups, for lead-time metrics: (group, class, failure time ms).
    pub events: Vec<Event>,
}

/// A failure of one group, as evaluation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The group (vehicle).
    pub group: u32,
    /// The class (component) index.
    pub class: u16,
    /// When it failed, ms.
    pub failure_ms: i64,
}

/// The label of a vehicle's row at `t` from its failures: the component failing within
/// `horizon_ms` (or failed and awaiting repair, `repair_ms` after the failure).
pub fn label_at(
    failures: &[FailureEvent],
    t_ms: i64,
    horizon_ms: i64,
    repair_ms: i64,
) -> Option<pmi_core::Component> {
    failures
        .iter()
        .find(|f| t_ms >= f.failure.0 - horizon_ms && t_ms < f.failure.0 + repair_ms)
        .map(|f| f.component)
}

impl Dataset {
    /// An empty dataset of PMI feature vectors of `schema`, with the components as classes.
    pub fn for_schema(schema: &FeatureSchema) -> Dataset {
        Dataset {
            feature_names: schema.names().to_vec(),
            schema: Some(schema.clone()),
            classes: pmi_core::Component::ALL
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            ..Default::default()
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features.
    pub fn width(&self) -> usize {
        self.feature_names.len()
    }

    /// Row `i`'s values.
    pub fn row(&self, i: usize) -> &[f64] {
        let w = self.width();
        &self.values[i * w..(i + 1) * w]
    }

    /// The group index of a name, adding it when new.
    pub fn group(&mut self, name: &str) -> u32 {
        match self.group_names.iter().position(|g| g == name) {
            Some(i) => i as u32,
            None => {
                self.group_names.push(name.to_owned());
                (self.group_names.len() - 1) as u32
            }
        }
    }

    /// Appends a feature vector with its label. The vector must follow the dataset's schema.
    pub fn push_vector(
        &mut self,
        v: &FeatureVector,
        group: u32,
        label: Option<u16>,
    ) -> Result<(), ModelError> {
        if let Some(schema) = &self.schema {
            if v.schema != schema.fingerprint() {
                return Err(ModelError::SchemaMismatch {
                    expected: schema.fingerprint(),
                    found: v.schema,
                });
            }
        }
        if v.values.len() != self.width() {
            return Err(ModelError::VectorLength {
                expected: self.width(),
                found: v.values.len(),
            });
        }
        self.values.extend_from_slice(&v.values);
        self.labels.push(label);
        self.groups.push(group);
        self.times.push(v.pane_end.0);
        Ok(())
    }

    /// Checks that the columns agree in length and the labels name known classes.
    pub fn validate(&self) -> Result<(), ModelError> {
        let n = self.labels.len();
        if self.values.len() != n * self.width() {
            return Err(ModelError::data(
                "values",
                format!(
                    "{} values for {n} rows of {}",
                    self.values.len(),
                    self.width()
                ),
            ));
        }
        for (field, len) in [("groups", self.groups.len()), ("times", self.times.len())] {
            if len != n {
                return Err(ModelError::data(
                    field,
                    format!("{len} entries for {n} rows"),
                ));
            }
        }
        if let Some(bad) = self
            .labels
            .iter()
            .flatten()
            .find(|c| **c as usize >= self.classes.len())
        {
            return Err(ModelError::data(
                "labels",
                format!("class {bad} of {}", self.classes.len()),
            ));
        }
        Ok(())
    }

    /// Positive rows (any class).
    pub fn positives(&self) -> usize {
        self.labels.iter().filter(|l| l.is_some()).count()
    }
}

/// Which rows train, which validate (early stopping, the stacker) and which test.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows.
    pub valid: Vec<usize>,
    /// Held-out test rows.
    pub test: Vec<usize>,
    /// Groups (by name) of the test rows, for the report.
    pub test_groups: Vec<String>,
}

/// Shares of a split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitShares {
    /// Share of groups (or rows) for validation (default 0.15).
    pub valid: f64,
    /// Share for test (default 0.2).
    pub test: f64,
}

impl Default for SplitShares {
    fn default() -> Self {
        SplitShares {
            valid: 0.15,
            test: 0.2,
        }
    }
}

impl SplitShares {
    fn check(&self) -> Result<(), ModelError> {
        if !(self.valid > 0.0 && self.test > 0.0 && self.valid + self.test < 0.9) {
            return Err(ModelError::data(
                "split",
                "validation and test shares must be positive and leave at least 10% to train",
            ));
        }
        Ok(())
    }
}

/// Splits by group: every row of a group lands in the same part. Groups are shuffled with
/// `seed`; groups with a failure and groups without are split separately, so each part gets
/// its share of both.
pub fn split_by_group(ds: &Dataset, shares: SplitShares, seed: u64) -> Result<Split, ModelError> {
    shares.check()?;
    let n_groups = ds.groups.iter().map(|g| *g as usize + 1).max().unwrap_or(0);
    let mut has_positive = vec![false; n_groups];
    let mut present = vec![false; n_groups];
    for (g, l) in ds.groups.iter().zip(&ds.labels) {
        present[*g as usize] = true;
        has_positive[*g as usize] |= l.is_some();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut part = vec![0u8; n_groups];
    for wanted in [true, false] {
        let mut groups: Vec<usize> = (0..n_groups)
            .filter(|g| present[*g] && has_positive[*g] == wanted)
            .collect();
        groups.shuffle(&mut rng);
        let n = groups.len();
        let n_test = ((n as f64 * shares.test).round() as usize).max(usize::from(n >= 3));
        let n_valid = ((n as f64 * shares.valid).round() as usize).max(usize::from(n >= 3));
        for (i, g) in groups.into_iter().enumerate() {
            part[g] = if i < n_test {
                2
            } else if i < n_test + n_valid {
                1
            } else {
                0
            };
        }
    }
    let mut split = Split::default();
    for (row, g) in ds.groups.iter().enumerate() {
        match part[*g as usize] {
            0 => split.train.push(row),
            1 => split.valid.push(row),
            _ => split.test.push(row),
        }
    }
    let mut test_groups: Vec<u32> = split.test.iter().map(|r| ds.groups[*r]).collect();
    test_groups.sort_unstable();
    test_groups.dedup();
    split.test_groups = test_groups
        .into_iter()
        .map(|g| {
            ds.group_names
                .get(g as usize)
                .cloned()
                .unwrap_or_else(|| g.to_string())
        })
        .collect();
    check_parts(ds, &split)?;
    Ok(split)
}

/// Splits rows (not groups), stratified by label: for tables whose rows are independent.
pub fn split_stratified(ds: &Dataset, shares: SplitShares, seed: u64) -> Result<Split, ModelError> {
    shares.check()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split::default();
    for positive in [true, false] {
        let mut rows: Vec<usize> = (0..ds.len())
            .filter(|r| ds.labels[*r].is_some() == positive)
            .collect();
        rows.shuffle(&mut rng);
        let n = rows.len();
        let n_test = (n as f64 * shares.test).round() as usize;
        let n_valid = (n as f64 * shares.valid).round() as usize;
        split.test.extend(&rows[..n_test]);
        split.valid.extend(&rows[n_test..n_test + n_valid]);
        split.train.extend(&rows[n_test + n_valid..]);
    }
    for part in [&mut split.train, &mut split.valid, &mut split.test] {
        part.sort_unstable();
    }
    check_parts(ds, &split)?;
    Ok(split)
}

fn check_parts(ds: &Dataset, split: &Split) -> Result<(), ModelError> {
    for (name, rows) in [
        ("train", &split.train),
        ("validation", &split.valid),
        ("test", &split.test),
    ] {
        let pos = rows.iter().filter(|r| ds.labels[**r].is_some()).count();
        if pos == 0 || pos == rows.len() {
            return Err(ModelError::data(
                "labels",
                format!(
                    "the {name} part has {pos} positive rows of {}: it needs both classes \
                     (more vehicles, more days or more failures)",
                    rows.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{Component, EventTime, VehicleId};

    fn toy(groups: u32, rows_per_group: usize) -> Dataset {
        let mut ds = Dataset {
            feature_names: vec!["a".into()],
            classes: vec!["x".into()],
            ..Default::default()
        };
        for g in 0..groups {
            ds.group(&format!("g{g}"));
            for r in 0..rows_per_group {
                ds.values.push(r as f64);
                ds.labels.push((g % 3 == 0 && r % 2 == 0).then_some(0));
                ds.groups.push(g);
                ds.times.push(r as i64);
            }
        }
        ds
    }

    #[test]
    fn group_split_never_shares_a_group_and_is_seeded() {
        let ds = toy(40, 10);
        ds.validate().unwrap();
        let s = split_by_group(&ds, SplitShares::default(), 7).unwrap();
        assert_eq!(s.train.len() + s.valid.len() + s.test.len(), ds.len());
        let groups = |rows: &[usize]| -> std::collections::BTreeSet<u32> {
            rows.iter().map(|r| ds.groups[*r]).collect()
        };
        let (a, b, c) = (groups(&s.train), groups(&s.valid), groups(&s.test));
        assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        assert_eq!(c.len(), 8, "20% of 40 groups");
        assert_eq!(s, split_by_group(&ds, SplitShares::default(), 7).unwrap());
        assert_ne!(s, split_by_group(&ds, SplitShares::default(), 8).unwrap());
        assert_eq!(s.test_groups.len(), 8);
    }

    #[test]
    fn stratified_split_keeps_the_positive_share() {
        let ds = toy(30, 20);
        let s = split_stratified(&ds, SplitShares::default(), 1).unwrap();
        let share = |rows: &[usize]| {
            rows.iter().filter(|r| ds.labels[**r].is_some()).count() as f64 / rows.len() as f64
        };
        let all = ds.positives() as f64 / ds.len() as f64;
        for part in [&s.train, &s.valid, &s.test] {
            assert!((share(part) - all).abs() < 0.02, "{} vs {all}", share(part));
        }
    }

    #[test]
    fn one_class_parts_and_bad_columns_are_named() {
        let mut ds = toy(5, 4);
        ds.labels.iter_mut().for_each(|l| *l = None);
        let e = split_by_group(&ds, SplitShares::default(), 1).unwrap_err();
        assert!(e.to_string().contains("positive rows"), "{e}");
        let mut ds = toy(5, 4);
        ds.times.pop();
        assert!(
            matches!(ds.validate(), Err(ModelError::InvalidData { ref field, .. }) if field == "times")
        );
    }

    #[test]
    fn labels_cover_the_horizon_and_the_wait_for_repair() {
        let day = 86_400_000;
        let f = FailureEvent {
            vehicle_id: VehicleId::parse("VEH_000001").unwrap(),
            component: Component::Battery,
            onset: EventTime(10 * day),
            failure: EventTime(20 * day),
        };
        let at = |t| label_at(std::slice::from_ref(&f), t, 7 * day, day);
        assert_eq!(at(13 * day - 1), None);
        assert_eq!(at(13 * day), Some(Component::Battery));
        assert_eq!(at(20 * day + day / 2), Some(Component::Battery));
        assert_eq!(at(21 * day), None);
    }
}
