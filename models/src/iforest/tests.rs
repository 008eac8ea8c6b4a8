//! Tests of the isolation forest: known constants, ranking of an obvious outlier,
//! determinism, serde round trip, missing values, input validation and the linfa path.

use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// `n` rows of `d` roughly Gaussian values (sum of uniforms), row-major.
fn gaussian_cloud(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0)
        .collect()
}

fn field_of(e: ModelError) -> String {
    match e {
        ModelError::InvalidData { field, .. } => field,
        other => panic!("expected InvalidData, got {other:?}"),
    }
}

#[test]
fn average_path_length_known_values() {
    assert_eq!(average_path_length(0), 0.0);
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
    // c(3) = 2(ln 2 + γ) − 4/3.
    let c3 = 2.0 * (2f64.ln() + 0.577_215_664_9) - 4.0 / 3.0;
    assert!((average_path_length(3) - c3).abs() < 1e-12);
    // c(256) ≈ 10.2448, as in the paper and scikit-learn.
    assert!((average_path_length(256) - 10.2448).abs() < 1e-4);
    // Monotone increasing.
    for n in 1..1000 {
        assert!(average_path_length(n + 1) > average_path_length(n));
    }
}

#[test]
fn obvious_outlier_scores_highest() {
    let mut rows = gaussian_cloud(500, 3, 1);
    rows.extend([8.0, -8.0, 8.0]);
    let forest = IsolationForestParams::default().fit_rows(&rows, 3).unwrap();
    let scores = forest.score_rows(&rows);
    let outlier = scores[500];
    assert!(scores[..500].iter().all(|&s| s < outlier), "{outlier}");
    assert!(outlier > 0.65, "{outlier}");
    assert!(scores.iter().all(|&s| s > 0.0 && s <= 1.0));
}

/// The score by a plain walk of each tree down to its leaf.
fn oracle_score(forest: &IsolationForest, row: &[f64]) -> f64 {
    let mut sum = 0.0;
    for nodes in &forest.trees {
        let mut i = 0;
        while !nodes[i].is_leaf(i) {
            let n = nodes[i];
            let mut x = row[n.feature as usize];
            if x.is_nan() {
                x = forest.fill[n.feature as usize];
            }
            i = if x <= n.value { n.left } else { n.right } as usize;
        }
        sum += nodes[i].value;
    }
    let mean = sum / forest.trees.len() as f64;
    2f64.powf(-mean / average_path_length(forest.psi))
}

#[test]
fn fixed_step_walk_matches_plain_walk() {
    let mut rows = gaussian_cloud(500, 3, 14);
    rows[7] = f64::NAN;
    for trees in [1, 15, 16, 17, 100] {
        for sample_size in [2, 3, 100, 256] {
            let forest = IsolationForestParams {
                trees,
                sample_size,
                seed: trees as u64,
            }
            .fit_rows(&rows, 3)
            .unwrap();
            let mut probes = gaussian_cloud(50, 3, 15);
            probes[0] = f64::NAN;
            probes.extend([f64::NAN, 1e9, -1e9]);
            for row in rows.chunks_exact(3).chain(probes.chunks_exact(3)) {
                let (fast, slow) = (forest.score_row(row), oracle_score(&forest, row));
                assert!((fast - slow).abs() < 1e-12, "{fast} vs {slow}");
            }
        }
    }
}

#[test]
fn scores_lie_in_unit_interval() {
    let rows = gaussian_cloud(300, 4, 2);
    let forest = IsolationForestParams {
        trees: 20,
        sample_size: 64,
        seed: 3,
    }
    .fit_rows(&rows, 4)
    .unwrap();
    assert_eq!(forest.psi(), 64);
    assert_eq!(forest.trees(), 20);
    let probes = gaussian_cloud(200, 4, 4)
        .into_iter()
        .map(|x| x * 10.0)
        .collect::<Vec<_>>();
    for s in forest
        .score_rows(&rows)
        .into_iter()
        .chain(forest.score_rows(&probes))
    {
        assert!(s > 0.0 && s <= 1.0, "{s}");
    }
}

#[test]
fn trees_respect_height_limit_and_psi() {
    let rows = gaussian_cloud(1000, 2, 5);
    let forest = IsolationForestParams::default().fit_rows(&rows, 2).unwrap();
    assert_eq!(forest.psi(), 256);
    for nodes in &forest.trees {
        // A binary tree of at most 8 levels below the root.
        assert!(nodes.len() < 1 << 9);
        // Leaves account for exactly ψ rows: path length − depth = c(size) is hard to
        // invert, but depth ≤ 8 bounds the path length by 8 + c(256).
        for (_, n) in nodes.iter().enumerate().filter(|(i, n)| n.is_leaf(*i)) {
            assert!(n.value <= 8.0 + average_path_length(256));
        }
    }
    // Fewer rows than sample_size: ψ = n.
    let small = IsolationForestParams::default()
        .fit_rows(&rows[..2 * 10], 2)
        .unwrap();
    assert_eq!(small.psi(), 10);
}

#[test]
fn same_seed_same_forest_other_seed_other_trees() {
    let rows = gaussian_cloud(400, 3, 6);
    let params = IsolationForestParams {
        seed: 42,
        ..Default::default()
    };
    let a = params.fit_rows(&rows, 3).unwrap();
    let b = params.fit_rows(&rows, 3).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.score_rows(&rows), b.score_rows(&rows));

    let c = IsolationForestParams {
        seed: 43,
        ..Default::default()
    }
    .fit_rows(&rows, 3)
    .unwrap();
    assert_ne!(a.trees, c.trees);
    assert_ne!(a.score_rows(&rows), c.score_rows(&rows));

    // A tree depends on the seed and its index only, not on the number of trees.
    let fewer = IsolationForestParams {
        trees: 10,
        seed: 42,
        ..Default::default()
    }
    .fit_rows(&rows, 3)
    .unwrap();
    assert_eq!(fewer.trees[..], a.trees[..10]);
}

#[test]
fn serde_json_round_trip_keeps_scores() {
    let rows = gaussian_cloud(300, 3, 7);
    let forest = IsolationForestParams {
        trees: 30,
        ..Default::default()
    }
    .fit_rows(&rows, 3)
    .unwrap();
    let json = serde_json::to_string(&forest).unwrap();
    let back: IsolationForest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, forest);
    assert_eq!(back.score_rows(&rows), forest.score_rows(&rows));
}

#[test]
fn corrupt_model_is_an_error_not_a_panic() {
    let rows = gaussian_cloud(100, 2, 8);
    let forest = IsolationForestParams {
        trees: 2,
        ..Default::default()
    }
    .fit_rows(&rows, 2)
    .unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&forest).unwrap();
    // A child pointing back at the root would loop forever.
    json["trees"][0][0]["l"] = 0.into();
    assert!(serde_json::from_value::<IsolationForest>(json.clone()).is_err());
    let mut json: serde_json::Value = serde_json::to_value(&forest).unwrap();
    json["psi"] = 2.into(); // trees deeper than the height limit of ψ = 2
    assert!(serde_json::from_value::<IsolationForest>(json).is_err());
    let mut json: serde_json::Value = serde_json::to_value(&forest).unwrap();
    json["trees"][0][0]["r"] = json["trees"][0][0]["l"].clone(); // a node with two parents
    assert!(serde_json::from_value::<IsolationForest>(json).is_err());
    let mut json: serde_json::Value = serde_json::to_value(&forest).unwrap();
    json["trees"][0][0]["f"] = 5.into(); // no feature 5
    assert!(serde_json::from_value::<IsolationForest>(json).is_err());
    let mut json: serde_json::Value = serde_json::to_value(&forest).unwrap();
    let leaf = forest.trees[0]
        .iter()
        .enumerate()
        .position(|(i, n)| n.is_leaf(i))
        .unwrap();
    json["trees"][0][leaf]["f"] = 5.into(); // a leaf's feature is read too
    assert!(serde_json::from_value::<IsolationForest>(json).is_err());
    let mut json: serde_json::Value = serde_json::to_value(&forest).unwrap();
    json["fill"] = serde_json::json!([0.0]); // one fill value for two features
    assert!(serde_json::from_value::<IsolationForest>(json).is_err());
}

#[test]
fn params_serde_defaults_and_unknown_fields() {
    let p: IsolationForestParams = serde_json::from_str(r#"{"seed": 5}"#).unwrap();
    assert_eq!(
        p,
        IsolationForestParams {
            seed: 5,
            ..Default::default()
        }
    );
    assert!(serde_json::from_str::<IsolationForestParams>(r#"{"tress": 5}"#).is_err());
}

#[test]
fn nan_is_filled_with_training_median() {
    // Feature 0: 1..=5 with one NaN → median of [1, 2, 4, 5] = 3; feature 1: all NaN → 0.
    let rows = [
        1.0,
        f64::NAN,
        2.0,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        4.0,
        f64::NAN,
        5.0,
        f64::NAN,
    ];
    let forest = IsolationForestParams::default().fit_rows(&rows, 2).unwrap();
    assert_eq!(forest.fill_values(), &[3.0, 0.0]);
    let s = forest.score_row(&[f64::NAN, f64::NAN]);
    assert!(s.is_finite());
    assert_eq!(s, forest.score_row(&[3.0, 0.0]));

    // In a real cloud, NaN rows score like the median-filled rows.
    let mut rows = gaussian_cloud(300, 3, 9);
    rows[4] = f64::NAN;
    rows[100] = f64::NAN;
    let forest = IsolationForestParams::default().fit_rows(&rows, 3).unwrap();
    let fill = forest.fill_values().to_vec();
    let probe = [f64::NAN, 0.5, f64::NAN];
    assert_eq!(
        forest.score_row(&probe),
        forest.score_row(&[fill[0], 0.5, fill[2]])
    );
}

#[test]
fn median_of_even_and_odd_counts() {
    assert_eq!(medians(&[3.0, 1.0, 2.0], 1), vec![2.0]);
    assert_eq!(medians(&[4.0, 1.0, 3.0, 2.0], 1), vec![2.5]);
    assert_eq!(medians(&[1.0, 10.0, 3.0, 30.0], 2), vec![2.0, 20.0]);
}

#[test]
fn bad_params_and_shapes_name_the_field() {
    let rows = gaussian_cloud(10, 2, 10);
    let p = IsolationForestParams::default();
    let bad = |params: IsolationForestParams, rows: &[f64], d: usize| {
        field_of(params.fit_rows(rows, d).unwrap_err())
    };
    assert_eq!(
        bad(
            IsolationForestParams {
                trees: 0,
                ..p.clone()
            },
            &rows,
            2
        ),
        "trees"
    );
    assert_eq!(
        bad(
            IsolationForestParams {
                sample_size: 1,
                ..p.clone()
            },
            &rows,
            2
        ),
        "sample_size"
    );
    assert_eq!(bad(p.clone(), &rows, 0), "n_features");
    assert_eq!(bad(p.clone(), &rows, 3), "rows"); // 20 values, not whole rows of 3
    assert_eq!(bad(p.clone(), &rows[..2], 2), "rows"); // one row
    assert_eq!(bad(p.clone(), &[], 2), "rows");
    let mut inf = rows.clone();
    inf[3] = f64::INFINITY;
    assert_eq!(bad(p, &inf, 2), "rows");
}

#[test]
fn extreme_values_give_finite_thresholds() {
    let rows = [-1e308, 0.0, 1e308, 1.0, 5.0, f64::MAX, f64::MIN, 2.0];
    let forest = IsolationForestParams::default().fit_rows(&rows, 2).unwrap();
    for (i, n) in forest.trees.iter().flatten().enumerate() {
        assert!(n.value.is_finite(), "node {i}: {n:?}");
    }
    let json = serde_json::to_string(&forest).unwrap();
    assert_eq!(
        serde_json::from_str::<IsolationForest>(&json).unwrap(),
        forest
    );
}

#[test]
fn constant_data_gives_single_leaf_trees() {
    let rows = vec![1.0; 40];
    let forest = IsolationForestParams {
        trees: 5,
        ..Default::default()
    }
    .fit_rows(&rows, 2)
    .unwrap();
    assert!(forest.trees.iter().all(|t| t.len() == 1));
    // Every row has path length c(ψ): score 0.5.
    assert!((forest.score_row(&[1.0, 1.0]) - 0.5).abs() < 1e-12);
    assert!((forest.score_row(&[9.0, -9.0]) - 0.5).abs() < 1e-12);
}

#[test]
fn linfa_fit_predict_matches_fit_rows() {
    let rows = gaussian_cloud(300, 3, 11);
    let params = IsolationForestParams {
        trees: 25,
        seed: 9,
        ..Default::default()
    };
    let direct = params.fit_rows(&rows, 3).unwrap();
    let x = Array2::from_shape_vec((300, 3), rows.clone()).unwrap();
    let dataset = DatasetBase::from(x.clone());
    let model = params.fit(&dataset).unwrap();
    assert_eq!(model, direct);
    let scores: Array1<f64> = model.predict(&x);
    assert_eq!(scores.to_vec(), direct.score_rows(&rows));

    // Column-major records: same model, same scores.
    let fortran = x.t().as_standard_layout().t().to_owned();
    assert!(fortran.as_slice().is_none());
    let model_f = params.fit(&DatasetBase::from(fortran.view())).unwrap();
    assert_eq!(model_f, direct);
    let scores_f: Array1<f64> = model_f.predict(&fortran);
    assert_eq!(scores_f, scores);

    // Errors come back through linfa as InvalidData.
    let one_row = Array2::<f64>::zeros((1, 3));
    let err = params.fit(&DatasetBase::from(one_row)).unwrap_err();
    assert_eq!(field_of(err), "rows");
}

#[test]
fn centre_of_uniform_data_is_ordinary() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let rows: Vec<f64> = (0..2000).map(|_| rng.gen::<f64>()).collect();
    let forest = IsolationForestParams::default().fit_rows(&rows, 2).unwrap();
    let centre = forest.score_row(&[0.5, 0.5]);
    assert!(centre < 0.5, "{centre}");
    let corner = forest.score_row(&[1.5, -0.5]);
    assert!(corner > centre, "{corner} vs {centre}");
}

#[test]
#[should_panic(expected = "the model has 2 features")]
fn wrong_row_length_panics() {
    let forest = IsolationForestParams::default()
        .fit_rows(&gaussian_cloud(10, 2, 13), 2)
        .unwrap();
    forest.score_row(&[1.0]);
}
