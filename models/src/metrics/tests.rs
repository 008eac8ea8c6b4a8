//! Tests of the metrics: hand-computed values (checked against scikit-learn), edge cases,
//! and an O(n²) pair-counting oracle for the ROC-AUC on random data with ties.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const F: bool = false;
const T: bool = true;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn points(curve: &[CurvePoint]) -> Vec<(f64, f64, f64)> {
    curve.iter().map(|p| (p.x, p.y, p.threshold)).collect()
}

#[test]
fn hand_computed_example() {
    // sklearn: roc_auc_score = 0.75, average_precision_score = 0.8333…
    let scores = [0.1, 0.4, 0.35, 0.8];
    let labels = [F, F, T, T];
    let s = Scored::new(&scores, &labels).unwrap();
    assert_eq!(s.roc_auc(), Some(0.75));
    assert!(close(s.average_precision().unwrap(), 5.0 / 6.0));
    // roc_curve(drop_intermediate=False): fpr [0, 0, .5, .5, 1], tpr [0, .5, .5, 1, 1].
    assert_eq!(
        points(&s.roc_curve()),
        vec![
            (0.0, 0.0, f64::INFINITY),
            (0.0, 0.5, 0.8),
            (0.5, 0.5, 0.4),
            (0.5, 1.0, 0.35),
            (1.0, 1.0, 0.1),
        ]
    );
    // precision_recall_curve, reversed: precision [1, 1, .5, 2/3, .5], recall [0, .5, .5, 1, 1].
    assert_eq!(
        points(&s.pr_curve()),
        vec![
            (0.0, 1.0, f64::INFINITY),
            (0.5, 1.0, 0.8),
            (0.5, 0.5, 0.4),
            (1.0, 2.0 / 3.0, 0.35),
            (1.0, 0.5, 0.1),
        ]
    );
}

#[test]
fn perfect_reversed_and_tied() {
    let labels = [F, F, T, T];
    let perfect = Scored::new(&[0.1, 0.2, 0.8, 0.9], &labels).unwrap();
    assert_eq!(perfect.roc_auc(), Some(1.0));
    assert_eq!(perfect.average_precision(), Some(1.0));
    let reversed = Scored::new(&[0.9, 0.8, 0.2, 0.1], &labels).unwrap();
    assert_eq!(reversed.roc_auc(), Some(0.0));
    // Positives come last: AP = ½·(1/3) + ½·(2/4).
    assert!(close(
        reversed.average_precision().unwrap(),
        0.5 / 3.0 + 0.5 * 0.5
    ));
    let tied = Scored::new(&[0.3; 4], &labels).unwrap();
    assert_eq!(tied.roc_auc(), Some(0.5));
    // One threshold: precision = prevalence.
    assert_eq!(tied.average_precision(), Some(0.5));
    assert_eq!(
        points(&tied.roc_curve()),
        vec![(0.0, 0.0, f64::INFINITY), (1.0, 1.0, 0.3)]
    );
}

#[test]
fn partial_ties_count_half() {
    // Pairs (pos, neg): (0.5, 0.5) tie → ½, (0.5, 0.2) → 1, (0.9, *) → 2. AUC = 3.5 / 4.
    let s = Scored::new(&[0.5, 0.9, 0.5, 0.2], &[T, T, F, F]).unwrap();
    assert_eq!(s.roc_auc(), Some(0.875));
    // The trapezoidal area under the ROC curve agrees.
    let curve = s.roc_curve();
    let area: f64 = curve
        .windows(2)
        .map(|w| (w[1].x - w[0].x) * (w[1].y + w[0].y) / 2.0)
        .sum();
    assert!(close(area, 0.875));
    // −0.0 and 0.0 are one threshold.
    let z = Scored::new(&[-0.0, 0.0], &[T, F]).unwrap();
    assert_eq!(z.roc_auc(), Some(0.5));
    assert_eq!(z.roc_curve().len(), 2);
}

#[test]
fn missing_class_gives_none_and_empty_curves() {
    let only_neg = Scored::new(&[0.1, 0.2], &[F, F]).unwrap();
    assert_eq!(only_neg.roc_auc(), None);
    assert_eq!(only_neg.average_precision(), None);
    assert!(only_neg.roc_curve().is_empty());
    assert!(only_neg.pr_curve().is_empty());
    let only_pos = Scored::new(&[0.1, 0.2], &[T, T]).unwrap();
    assert_eq!(only_pos.roc_auc(), None);
    assert_eq!(only_pos.average_precision(), Some(1.0));
    assert!(only_pos.roc_curve().is_empty());
    assert_eq!(only_pos.pr_curve().len(), 3);
    let empty = Scored::new(&[], &[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.roc_auc(), None);
    assert_eq!(empty.average_precision(), None);
    assert_eq!(empty.confusion_at(0.5), Confusion::default());
}

#[test]
fn bad_input_names_the_field() {
    let field = |e: ModelError| match e {
        ModelError::InvalidData { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(Scored::new(&[0.1, 0.2], &[T]).unwrap_err()), "labels");
    assert_eq!(
        field(Scored::new(&[0.1, f64::NAN], &[T, F]).unwrap_err()),
        "scores"
    );
    assert_eq!(
        field(Scored::new(&[f64::INFINITY, 0.0], &[T, F]).unwrap_err()),
        "scores"
    );
}

#[test]
fn confusion_at_threshold() {
    let scores = [0.1, 0.4, 0.35, 0.8, 0.5];
    let labels = [F, F, T, T, F];
    let s = Scored::new(&scores, &labels).unwrap();
    let c = s.confusion_at(0.4); // >= 0.4: 0.4 (F), 0.8 (T), 0.5 (F)
    assert_eq!(
        c,
        Confusion {
            tp: 1,
            fp: 2,
            tn: 1,
            fn_: 1
        }
    );
    assert!(close(c.precision().unwrap(), 1.0 / 3.0));
    assert_eq!(c.recall(), Some(0.5));
    // F1 = 2PR/(P+R) = (1/3)/(5/6) = 0.4.
    assert!(close(c.f1().unwrap(), 0.4));
    let none = s.confusion_at(2.0);
    assert_eq!(none.precision(), None);
    assert_eq!(none.recall(), Some(0.0));
    assert_eq!(none.f1(), Some(0.0));
    assert_eq!(Confusion::default().f1(), None);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(json, r#"{"tp":1,"fp":2,"tn":1,"fn":1}"#);
    assert_eq!(serde_json::from_str::<Confusion>(&json).unwrap(), c);
}

#[test]
fn curve_points_are_consistent_with_confusion() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let scores: Vec<f64> = (0..200)
        .map(|_| (rng.gen::<f64>() * 20.0).round())
        .collect();
    let labels: Vec<bool> = scores.iter().map(|s| rng.gen::<f64>() < s / 25.0).collect();
    let s = Scored::new(&scores, &labels).unwrap();
    let (p, n) = (s.positives() as f64, s.negatives() as f64);
    let roc = s.roc_curve();
    let pr = s.pr_curve();
    assert_eq!(roc.len(), pr.len());
    assert!(roc.windows(2).all(|w| w[0].threshold > w[1].threshold));
    for (r, q) in roc.iter().zip(&pr).skip(1) {
        let c = s.confusion_at(r.threshold);
        assert!(close(r.x, c.fp as f64 / n) && close(r.y, c.tp as f64 / p));
        assert!(close(q.x, c.recall().unwrap()) && close(q.y, c.precision().unwrap()));
    }
    assert_eq!((roc.last().unwrap().x, roc.last().unwrap().y), (1.0, 1.0));
}

/// ROC-AUC by counting every (positive, negative) pair.
fn auc_oracle(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &si) in scores.iter().enumerate() {
        for (j, &sj) in scores.iter().enumerate() {
            if labels[i] && !labels[j] {
                pairs += 1.0;
                wins += if si > sj {
                    1.0
                } else if si == sj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    (pairs > 0.0).then(|| wins / pairs)
}

/// Average precision by its definition: for each distinct threshold, the confusion matrix.
fn ap_oracle(s: &Scored<'_>) -> Option<f64> {
    if !s.labels().contains(&true) {
        return None;
    }
    let mut thresholds = s.scores().to_vec();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let mut ap = 0.0;
    let mut recall_before = 0.0;
    for t in thresholds {
        let c = s.confusion_at(t);
        let recall = c.recall().unwrap();
        ap += (recall - recall_before) * c.precision().unwrap();
        recall_before = recall;
    }
    Some(ap)
}

#[test]
fn roc_auc_and_ap_match_oracles_on_random_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for case in 0..300 {
        let n = rng.gen_range(0..60);
        let levels = [2.0, 5.0, 1000.0][case % 3]; // few distinct scores ⇒ many ties
        let scores: Vec<f64> = (0..n)
            .map(|_| (rng.gen::<f64>() * levels).floor() / levels)
            .collect();
        let bias = rng.gen::<f64>();
        let labels: Vec<bool> = scores
            .iter()
            .map(|s| rng.gen::<f64>() < bias * s + (1.0 - bias) * 0.3)
            .collect();
        let s = Scored::new(&scores, &labels).unwrap();
        match (s.roc_auc(), auc_oracle(&scores, &labels)) {
            (Some(a), Some(b)) => assert!(close(a, b), "case {case}: {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "case {case}"),
        }
        match (s.average_precision(), ap_oracle(&s)) {
            (Some(a), Some(b)) => assert!(close(a, b), "case {case}: {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "case {case}"),
        }
    }
}

#[test]
fn curve_point_json_writes_infinity_as_null() {
    let s = Scored::new(&[0.2, 0.7], &[F, T]).unwrap();
    let curve = s.roc_curve();
    let json = serde_json::to_string(&curve).unwrap();
    assert!(
        json.starts_with(r#"[{"x":0.0,"y":0.0,"threshold":null}"#),
        "{json}"
    );
    let back: Vec<CurvePoint> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, curve);
}

#[test]
fn downsample_keeps_ends_and_bounds_size() {
    let curve: Vec<CurvePoint> = (0..1000)
        .map(|i| CurvePoint {
            x: i as f64 / 999.0,
            y: (i as f64 / 999.0).sqrt(),
            threshold: 1.0 - i as f64 / 1000.0,
        })
        .collect();
    for m in [0, 1, 2, 3, 10, 999, 1000, 5000] {
        let d = downsample_curve(&curve, m);
        assert_eq!(d.len(), m.clamp(2, 1000), "m = {m}");
        assert_eq!(d[0], curve[0]);
        assert_eq!(d.last(), curve.last());
        assert!(d.windows(2).all(|w| w[0].threshold > w[1].threshold));
    }
    let d = downsample_curve(&curve, 4); // indices 0, 333, 666, 999
    assert_eq!(d[1], curve[333]);
    assert_eq!(d[2], curve[666]);
    assert!(downsample_curve(&[], 10).is_empty());
    assert_eq!(downsample_curve(&curve[..1], 0), curve[..1].to_vec());
}
