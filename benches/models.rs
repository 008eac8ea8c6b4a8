//! Criterion benchmarks of the ensemble: scoring throughput on real feature vectors.
//!
//! Setup (not measured): the training-set graph computes vectors of a simulated fleet (40
//! vehicles × 20 days, 8 snapshots a day, default 441-feature schema) and the ensemble is
//! trained on them with the default settings except that the risk trees run all 300
//! rounds (no early stopping: the largest default model, an upper bound on cost; `pmi
//! train` on the default fleet stops near 200). Then, on one thread:
//! - `ensemble/score_row`: members + stacker (the risk), per vector;
//! - `ensemble/predict_normal`: the full prediction the stream writes for a vector below
//!   the low threshold (the common case: severity, no component, no explanation);
//! - `ensemble/predict_alerting`: the same for vectors above normal, which also get the
//!   component (11 heads) and the explanation (contributions, rules, text);
//! - `members/*`: each member alone (the rules: `RuleScorer::evaluate`, no explanation).
//!
//! Throughput is feature vectors per second per core. Target: ≥ 200,000/s for the full
//! ensemble (`predict_normal`; alerting vectors are rare in a fleet and cost more).
//!
//! Run: `cargo bench --bench models` (add `-- --quick` for a short run).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pmi_core::{EventTime, FeatureVector, VehicleId};
use pmi_dataflows::jobs::FleetSpec;
use pmi_dataflows::training::{simulated_training_set, SimulatedTrainingSet};
use pmi_dataflows::GraphConfig;
use pmi_models::dataset::{split_by_group, SplitShares};
use pmi_models::train::{train, TrainParams};
use pmi_sources::fleet::SnapshotPlan;

fn setup() -> (pmi_models::ensemble::Ensemble, Vec<FeatureVector>) {
    let set = simulated_training_set(
        &SimulatedTrainingSet {
            fleet: FleetSpec {
                vehicles: 40,
                seed: 3,
                start: EventTime(1_767_225_600_000),
                failures_per_vehicle_month: 1.0,
                bad_readings: false,
                forced_failures: Vec::new(),
            },
            plan: SnapshotPlan {
                days: 20,
                per_day: 8,
                ..SnapshotPlan::default()
            },
            horizon_ms: 7 * 86_400_000,
            graph: GraphConfig {
                workers: 2,
                ..Default::default()
            },
        },
        |_, _| {},
    )
    .expect("training set");
    let ds = set.dataset;
    let split = split_by_group(&ds, SplitShares::default(), 1).expect("split");
    let mut params = TrainParams::default();
    params.risk.early_stopping_rounds = 0;
    let model = train(&ds, &split, &params, 7 * 86_400_000, "bench", |_| {}).expect("training");
    let schema = ds.schema.clone().expect("schema");
    let vectors = (0..ds.len())
        .map(|r| FeatureVector {
            vehicle_id: VehicleId::parse("VEH_000001").expect("id"),
            pane_end: EventTime(ds.times[r]),
            schema: schema.fingerprint(),
            values: ds.row(r).into(),
        })
        .collect();
    (model, vectors)
}

fn bench(c: &mut Criterion) {
    let (model, vectors) = setup();
    let (alerting, normal): (Vec<FeatureVector>, Vec<FeatureVector>) = vectors
        .iter()
        .cloned()
        .partition(|v| model.predict(v).expect("predict").severity > pmi_core::Severity::Normal);
    eprintln!(
        "{} vectors, {} above normal; risk trees {} + heads {} trees, forest {} trees",
        vectors.len(),
        alerting.len(),
        model.risk.trees.len(),
        model
            .heads
            .iter()
            .flatten()
            .map(|h| h.trees.len())
            .sum::<usize>(),
        model.iforest.trees()
    );
    let mut g = c.benchmark_group("ensemble");
    g.throughput(Throughput::Elements(vectors.len() as u64));
    g.bench_function("score_row", |b| {
        b.iter(|| {
            for v in &vectors {
                black_box(model.score_row(&v.values));
            }
        })
    });
    g.throughput(Throughput::Elements(normal.len() as u64));
    g.bench_function("predict_normal", |b| {
        b.iter(|| {
            for v in &normal {
                black_box(model.predict(v).expect("predict"));
            }
        })
    });
    g.throughput(Throughput::Elements(alerting.len() as u64));
    g.bench_function("predict_alerting", |b| {
        b.iter(|| {
            for v in &alerting {
                black_box(model.predict(v).expect("predict"));
            }
        })
    });
    g.finish();
    let mut g = c.benchmark_group("members");
    g.throughput(Throughput::Elements(vectors.len() as u64));
    g.bench_function("risk_trees", |b| {
        b.iter(|| {
            for v in &vectors {
                black_box(model.risk.margin(&v.values));
            }
        })
    });
    g.bench_function("isolation_forest", |b| {
        b.iter(|| {
            for v in &vectors {
                black_box(model.iforest.score_row(&v.values));
            }
        })
    });
    let rules = pmi_models::RuleScorer::new(
        pmi_models::RuleSet::default(),
        model.meta.schema.as_ref().expect("schema"),
    )
    .expect("rules");
    g.bench_function("rules", |b| {
        b.iter(|| {
            for v in &vectors {
                black_box(rules.evaluate(v).expect("schema").risk);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
