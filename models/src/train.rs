//! Training the ensemble on a labelled [`Dataset`] and a [`Split`].
//!
//! Steps, each deterministic for the seed:
//! 1. isolation forest on the healthy training rows (novelty detection: what healthy
//!    operation looks like);
//! 2. risk trees on all training rows, "fails within the horizon" (any class), early
//!    stopping on the validation rows;
//! 3. one head per class on the failing training rows, "is it this class", early stopping
//!    on the failing validation rows;
//! 4. the stacker on the validation rows (rows the trees did not fit).
//!
//! The test rows are untouched until [`crate::evaluate`] scores them.

use serde::{Deserialize, Serialize};

use pmi_core::SeverityThresholds;

use crate::dataset::{Dataset, Split};
use crate::ensemble::{Ensemble, ModelMeta, Stacker};
use crate::gbdt::{fit_binary, BoostedTrees, Columns, GbdtParams};
use crate::iforest::IsolationForestParams;
use crate::rules::RuleSet;
use crate::ModelError;

/// Training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainParams {
    /// Seed of everything random (forest sampling, tree feature sampling).
    pub seed: u64,
    /// Isolation forest.
    pub iforest: IsolationForestParams,
    /// Risk trees.
    pub risk: GbdtParams,
    /// Component heads (smaller: fewer rows, an easier question).
    pub heads: GbdtParams,
    /// Severity thresholds the model applies.
    pub severity: SeverityThresholds,
    /// Use the domain rules as a member (PMI feature vectors only).
    pub rules: bool,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            seed: 42,
            iforest: IsolationForestParams::default(),
            risk: GbdtParams::default(),
            heads: GbdtParams {
                iterations: 100,
                max_depth: 4,
                ..GbdtParams::default()
            },
            severity: SeverityThresholds::default(),
            rules: true,
        }
    }
}

/// A step of training, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Fitting the isolation forest.
    Forest,
    /// Fitting the risk trees.
    Risk,
    /// Fitting head `i` of `n`.
    Head(usize, usize),
    /// Fitting the stacker.
    Stacker,
}

/// Trains the ensemble. `trained_on` describes the data for the model's metadata;
/// `progress` hears each step as it starts.
pub fn train(
    ds: &Dataset,
    split: &Split,
    params: &TrainParams,
    horizon_ms: i64,
    trained_on: &str,
    mut progress: impl FnMut(Step),
) -> Result<Ensemble, ModelError> {
    ds.validate()?;
    let w = ds.width();
    let y = |rows: &[usize]| -> Vec<f64> {
        rows.iter()
            .map(|r| f64::from(u8::from(ds.labels[*r].is_some())))
            .collect()
    };

    progress(Step::Forest);
    let healthy: Vec<usize> = split
        .train
        .iter()
        .copied()
        .filter(|r| ds.labels[*r].is_none())
        .collect();
    let mut healthy_rows = Vec::with_capacity(healthy.len() * w);
    for r in &healthy {
        healthy_rows.extend_from_slice(ds.row(*r));
    }
    let iforest = IsolationForestParams {
        seed: params.seed,
        ..params.iforest.clone()
    }
    .fit_rows(&healthy_rows, w)?;
    drop(healthy_rows);

    progress(Step::Risk);
    let train_cols = Columns::from_rows(&ds.values, w, &split.train);
    let valid_cols = Columns::from_rows(&ds.values, w, &split.valid);
    let risk_params = GbdtParams {
        seed: params.seed,
        ..params.risk.clone()
    };
    let risk = fit_binary(
        &risk_params,
        &train_cols,
        &y(&split.train),
        None,
        Some((&valid_cols, &y(&split.valid))),
    )?;
    drop((train_cols, valid_cols));

    let mut heads: Vec<Option<BoostedTrees>> = Vec::new();
    if ds.classes.len() > 1 {
        let failing = |rows: &[usize]| -> Vec<usize> {
            rows.iter()
                .copied()
                .filter(|r| ds.labels[*r].is_some())
                .collect()
        };
        let (ftrain, fvalid) = (failing(&split.train), failing(&split.valid));
        let train_cols = Columns::from_rows(&ds.values, w, &ftrain);
        let valid_cols = Columns::from_rows(&ds.values, w, &fvalid);
        let n = ds.classes.len();
        for class in 0..n {
            progress(Step::Head(class, n));
            let target = |rows: &[usize]| -> Vec<f64> {
                rows.iter()
                    .map(|r| f64::from(u8::from(ds.labels[*r] == Some(class as u16))))
                    .collect()
            };
            let t = target(&ftrain);
            let positives = t.iter().filter(|x| **x > 0.5).count();
            if positives == 0 || positives == t.len() {
                // No example of this class (or nothing else) in training: no head; the
                // class gets probability 0 (or all of it).
                heads.push(None);
                continue;
            }
            let vt = target(&fvalid);
            let valid = (!fvalid.is_empty()).then_some((&valid_cols, &vt[..]));
            let head_params = GbdtParams {
                seed: params.seed.wrapping_add(1 + class as u64),
                ..params.heads.clone()
            };
            heads.push(Some(fit_binary(
                &head_params,
                &train_cols,
                &t,
                None,
                valid,
            )?));
        }
    }

    progress(Step::Stacker);
    let rules = (params.rules && ds.schema.is_some()).then(|| RuleSet {
        severity: params.severity,
        ..RuleSet::default()
    });
    let meta = ModelMeta {
        version: String::new(),
        created_ms: pmi_core::EventTime::now().0,
        horizon_ms,
        feature_names: ds.feature_names.clone(),
        schema: ds.schema.clone(),
        classes: ds.classes.clone(),
        seed: params.seed,
        trained_on: trained_on.to_owned(),
    };
    let mut model = Ensemble::new(
        meta,
        iforest,
        risk,
        heads,
        Stacker::TREES_ONLY,
        rules,
        params.severity,
    )?;
    let (inputs, labels): (Vec<[f64; 3]>, Vec<bool>) = split
        .valid
        .iter()
        .map(|r| {
            let s = model.score_row(ds.row(*r));
            ([s.margin, s.anomaly, s.rule_risk], ds.labels[*r].is_some())
        })
        .unzip();
    model.stacker = Stacker::fit(&inputs, &labels);
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{split_stratified, Event, SplitShares};
    use crate::evaluate::evaluate;
    use crate::registry::Registry;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A table like a fleet's: two classes of failure, each raising its own feature, some
    /// missing values, rows with times over days.
    fn table(n: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut ds = Dataset {
            feature_names: vec!["temp".into(), "pressure".into(), "noise".into()],
            classes: vec!["cooling".into(), "oil".into()],
            ..Default::default()
        };
        for i in 0..n {
            let class = match rng.gen_range(0..10) {
                0 => Some(0u16),
                1 => Some(1u16),
                _ => None,
            };
            let temp = 90.0 + rng.gen_range(-3.0..3.0) + if class == Some(0) { 8.0 } else { 0.0 };
            let pressure =
                300.0 + rng.gen_range(-20.0..20.0) - if class == Some(1) { 60.0 } else { 0.0 };
            let pressure = if rng.gen_bool(0.05) {
                f64::NAN
            } else {
                pressure
            };
            ds.values.extend([temp, pressure, rng.gen_range(0.0..1.0)]);
            ds.labels.push(class);
            let g = (i % 50) as u32;
            ds.groups.push(g);
            ds.times.push(1_000 + (i / 50) as i64 * 3_600_000);
        }
        ds.group_names = (0..50).map(|g| format!("g{g}")).collect();
        ds.events.push(Event {
            group: 0,
            class: 0,
            failure_ms: 1_000 + 10 * 3_600_000,
        });
        ds
    }

    fn quick() -> TrainParams {
        TrainParams {
            risk: GbdtParams {
                iterations: 60,
                ..GbdtParams::default()
            },
            heads: GbdtParams {
                iterations: 30,
                ..GbdtParams::default()
            },
            ..TrainParams::default()
        }
    }

    #[test]
    fn trains_evaluates_and_round_trips_through_the_registry() {
        let ds = table(3000, 1);
        let split = split_stratified(&ds, SplitShares::default(), 3).unwrap();
        let mut steps = Vec::new();
        let mut model = train(&ds, &split, &quick(), 7 * 86_400_000, "test table", |s| {
            steps.push(s)
        })
        .unwrap();
        assert_eq!(steps.first(), Some(&Step::Forest));
        assert!(steps.contains(&Step::Head(1, 2)));
        assert_eq!(model.heads.len(), 2);
        let ev = evaluate(&model, &ds, &split.test).unwrap();
        assert!(ev.overall.roc_auc.unwrap() > 0.97, "{:?}", ev.overall);
        assert_eq!(ev.per_class.len(), 2);
        for c in &ev.per_class {
            assert!(c.metrics.roc_auc.unwrap() > 0.95, "{c:?}");
        }
        assert!(
            ev.anomaly.roc_auc.unwrap() > 0.6,
            "anomaly alone {:?}",
            ev.anomaly
        );
        assert!(ev.rules.is_none());
        let text = ev.render_text();
        assert!(
            text.contains("ROC-AUC") && text.contains("cooling"),
            "{text}"
        );
        assert_eq!(ev.plots().unwrap().len(), 3);

        // Same seed, same model.
        let again = train(&ds, &split, &quick(), 7 * 86_400_000, "test table", |_| {}).unwrap();
        for r in 0..50 {
            assert_eq!(model.score_row(ds.row(r)), again.score_row(ds.row(r)));
        }

        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path().join("models"));
        assert_eq!(reg.current().unwrap(), None);
        let files = vec![("report.txt".to_owned(), text.into_bytes())];
        let v1 = reg.publish(&mut model, &files, true).unwrap();
        let v2 = reg.publish(&mut model, &files, false).unwrap();
        assert_eq!((v1.as_str(), v2.as_str()), ("v0001", "v0002"));
        assert_eq!(reg.versions().unwrap(), vec!["v0001", "v0002"]);
        assert_eq!(reg.current().unwrap().as_deref(), Some("v0001"));
        assert!(reg.path_of("v0001").join("report.txt").is_file());
        let loaded = reg.load_current().unwrap().unwrap();
        assert_eq!(loaded.model_name(), "ensemble-v0001");
        for r in 0..200 {
            assert_eq!(
                loaded.score_row(ds.row(r)),
                model.score_row(ds.row(r)),
                "a loaded model scores exactly as the trained one"
            );
            assert_eq!(
                loaded.class_probabilities(ds.row(r)),
                model.class_probabilities(ds.row(r))
            );
        }
        // A reserved version is invisible until published; the next reservation skips it.
        let v3 = reg.reserve().unwrap();
        assert_eq!(v3, "v0003");
        assert_eq!(reg.versions().unwrap(), vec!["v0001", "v0002"]);
        assert_eq!(reg.reserve().unwrap(), "v0004");
        reg.publish_as(&v3, &mut model, &files, false).unwrap();
        assert_eq!(model.model_name(), "ensemble-v0003");
        assert!(
            reg.publish_as(&v3, &mut model, &files, false).is_err(),
            "published once"
        );
        assert_eq!(reg.versions().unwrap(), vec!["v0001", "v0002", "v0003"]);
        reg.set_current("v0002").unwrap();
        assert_eq!(reg.load_current().unwrap().unwrap().meta.version, "v0002");
        assert!(reg.set_current("v0009").is_err());
    }

    #[test]
    fn model_files_of_another_format_or_schema_are_clear_errors() {
        let ds = table(1500, 2);
        let split = split_stratified(&ds, SplitShares::default(), 1).unwrap();
        let model = train(&ds, &split, &quick(), 0, "t", |_| {}).unwrap();
        let json = model.to_json().unwrap();
        let back = Ensemble::from_json(&json, "m.json").unwrap();
        assert_eq!(back.score_row(ds.row(0)), model.score_row(ds.row(0)));

        let e = Ensemble::from_json("{\"format\":\"onnx\"}", "m.json").unwrap_err();
        assert!(e.to_string().contains("format `onnx`"), "{e}");
        let newer = json.replacen("\"format_version\":1", "\"format_version\":9", 1);
        let e = Ensemble::from_json(&newer, "m.json").unwrap_err();
        assert!(e.to_string().contains("format version"), "{e}");
        let e = Ensemble::from_json("not json", "m.json").unwrap_err();
        assert!(matches!(e, ModelError::Format { .. }), "{e}");

        // The stream's predict explains only above normal; predict_explained always.
        let normal = (0..ds.len())
            .find(|r| model.score_row(ds.row(*r)).risk < 0.1)
            .expect("a healthy row");
        let v = pmi_core::FeatureVector {
            vehicle_id: pmi_core::VehicleId::parse("VEH_000001").unwrap(),
            pane_end: pmi_core::EventTime(0),
            schema: 0,
            values: ds.row(normal).into(),
        };
        let quiet = model.predict(&v).unwrap();
        assert_eq!(quiet.severity, pmi_core::Severity::Normal);
        assert!(quiet.explanation.is_empty());
        let explained = model.predict_explained(&v).unwrap();
        assert_eq!(explained.risk, quiet.risk);
        assert!(
            explained.explanation[0].starts_with("risk "),
            "{explained:?}"
        );

        // A table model refuses PMI vectors' schema check.
        let schema = pmi_core::WindowConfig::default().schema().unwrap();
        assert!(model.check_schema(&schema).is_err());
    }

    #[test]
    fn stacker_learns_which_member_to_trust() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let label = rng.gen_bool(0.3);
            let margin = if label { 2.0 } else { -2.0 } + rng.gen_range(-2.5..2.5);
            let useless = rng.gen_range(0.0..1.0);
            x.push([margin, useless, if label { 0.8 } else { 0.1 }]);
            y.push(label);
        }
        let s = Stacker::fit(&x, &y);
        assert!(s.weights[1] > 0.1, "{:?}", s.weights);
        assert!(
            s.weights[3] > 1.0,
            "the perfect member counts most: {:?}",
            s.weights
        );
        assert!(s.weights[2].abs() < 1.0, "{:?}", s.weights);
    }
}
