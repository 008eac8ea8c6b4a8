//! The learned half end to end: the training-set graph on a small simulated fleet → the
//! ensemble → the registry → the stream graph scoring with it, and a new version picked up
//! by a running scorer without a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use pmi_core::{EventTime, SeverityThresholds, WindowConfig};
use pmi_dataflows::jobs::{self, FleetSpec, LiveJob};
use pmi_dataflows::scoring::ModelScorer;
use pmi_dataflows::simulated::Pace;
use pmi_dataflows::training::{self, SimulatedTrainingSet, TrainJob, TrainingInput};
use pmi_dataflows::GraphConfig;
use pmi_models::dataset::SplitShares;
use pmi_models::gbdt::GbdtParams;
use pmi_models::registry::Registry;
use pmi_models::train::TrainParams;
use pmi_models::{RuleScorer, RuleSet};
use pmi_sources::fleet::SnapshotPlan;

const START: EventTime = EventTime(1_767_225_600_000);

fn small_set() -> SimulatedTrainingSet {
    SimulatedTrainingSet {
        fleet: FleetSpec {
            vehicles: 24,
            seed: 5,
            start: START,
            failures_per_vehicle_month: 3.0,
            bad_readings: false,
            forced_failures: Vec::new(),
        },
        plan: SnapshotPlan {
            days: 12,
            per_day: 4,
            ..SnapshotPlan::default()
        },
        horizon_ms: 7 * 86_400_000,
        graph: GraphConfig {
            workers: 2,
            ..Default::default()
        },
    }
}

fn small_job(registry: &Path) -> TrainJob {
    TrainJob {
        set: TrainingInput::Simulated(small_set()),
        params: TrainParams {
            seed: 5,
            risk: GbdtParams {
                iterations: 80,
                ..GbdtParams::default()
            },
            heads: GbdtParams {
                iterations: 30,
                max_depth: 3,
                ..GbdtParams::default()
            },
            ..TrainParams::default()
        },
        shares: SplitShares::default(),
        registry: registry.to_owned(),
        make_current: true,
        export: None,
    }
}

fn prediction_models(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for batch in common::parquet_batches(&dir.join("predictions")) {
        let col = batch.column_by_name("model").expect("model column");
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|i| col.value(i).to_owned()));
    }
    out
}

#[test]
fn trains_publishes_and_scores_the_stream_with_the_registry_model() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models");
    let outcome = training::train(&small_job(&registry)).unwrap();

    assert_eq!(outcome.version, "v0001");
    assert_eq!(
        outcome.evaluation.model, "ensemble-v0001",
        "metrics name the version"
    );
    assert!(outcome.positives > 0 && outcome.positives < outcome.rows);
    assert!(outcome.parked > 0, "night snapshots are in the set");
    assert_eq!(outcome.vehicles.iter().sum::<usize>(), 24);
    let auc = outcome.evaluation.overall.roc_auc.unwrap();
    assert!(auc > 0.85, "held-out ROC-AUC {auc} on a small fleet");
    for f in [
        "model.json",
        "metrics.json",
        "report.txt",
        "training.json",
        "roc.svg",
        "pr.svg",
    ] {
        assert!(outcome.path.join(f).is_file(), "{f} in the version folder");
    }
    let report = std::fs::read_to_string(outcome.path.join("report.txt")).unwrap();
    assert!(
        report.contains("ROC-AUC") && report.contains("held out"),
        "{report}"
    );

    // The same training is deterministic: a second run publishes an identical model.
    let again = training::train(&TrainJob {
        make_current: false,
        ..small_job(&registry)
    })
    .unwrap();
    assert_eq!(again.version, "v0002");
    let reg = Registry::new(&registry);
    let (a, b) = (reg.load("v0001").unwrap(), reg.load("v0002").unwrap());
    assert_eq!(a.risk, b.risk);
    assert_eq!(a.iforest, b.iforest);
    assert_eq!(reg.current().unwrap().as_deref(), Some("v0001"));

    // The stream graph scores with the current model and records its version.
    let out = dir.path().join("run");
    let report = jobs::live(&LiveJob {
        fleet: FleetSpec {
            vehicles: 4,
            seed: 9,
            start: EventTime(START.0 + 9 * 3_600_000),
            failures_per_vehicle_month: 1.0,
            bad_readings: false,
            forced_failures: Vec::new(),
        },
        pace: Pace::Max,
        duration: Some(Duration::from_secs(20 * 60)),
        graph: GraphConfig::default(),
        out: pmi_sources::store::Store::local(&out).unwrap(),
        write_telemetry: false,
        severity: SeverityThresholds::default(),
        model_registry: Some(registry.clone()),
        database: None,
    })
    .unwrap();
    assert!(report.predictions > 0);
    let models = prediction_models(&out);
    assert_eq!(models.len() as u64, report.predictions);
    assert!(
        models.iter().all(|m| m == "ensemble-v0001"),
        "{:?}",
        &models[..3]
    );
}

#[test]
fn a_running_scorer_picks_up_a_new_version_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models");
    let schema = WindowConfig::default().schema().unwrap();
    let rules = || RuleScorer::new(RuleSet::default(), &schema).unwrap();

    // No model yet: the rules score.
    let scorer = ModelScorer::start(
        registry.clone(),
        &schema,
        rules(),
        Duration::from_millis(50),
    )
    .unwrap();
    assert_eq!(scorer.version(), None);

    let wait_for = |want: Option<&str>| {
        let t0 = Instant::now();
        while scorer.version().as_deref() != want {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "still {:?}",
                scorer.version()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let outcome = training::train(&small_job(&registry)).unwrap();
    wait_for(Some(outcome.version.as_str()));

    // A broken version marked current is refused; the running model stays.
    let broken = registry.join("v0002");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.json"), "{\"format\":\"pmi-ensemble\"}").unwrap();
    Registry::new(&registry).set_current("v0002").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(scorer.version().as_deref(), Some("v0001"));

    // A good new version takes over.
    let good = registry.join("v0003");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::copy(outcome.path.join("model.json"), good.join("model.json")).unwrap();
    Registry::new(&registry).set_current("v0003").unwrap();
    wait_for(Some("v0003"));
    let v = pmi_core::FeatureVector {
        vehicle_id: pmi_core::VehicleId::parse("VEH_000001").unwrap(),
        pane_end: START,
        schema: schema.fingerprint(),
        values: vec![f64::NAN; schema.len()].into(),
    };
    assert_eq!(&*(scorer.score_fn())(v.row()).model, "ensemble-v0003");

    // A model for another schema is refused at start with a clear error.
    let other = WindowConfig {
        windows_s: vec![60, 300],
        ..WindowConfig::default()
    }
    .schema()
    .unwrap();
    let e = ModelScorer::start(
        registry.clone(),
        &other,
        RuleScorer::new(RuleSet::default(), &other).unwrap(),
        Duration::from_secs(1),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("schema"), "{e}");
}

/// An operator's table: rows of units with two failure classes, missing cells, a text
/// column, labels as text.
fn operator_csv(path: &Path, rows: usize, seed: u64) {
    use std::fmt::Write;
    let mut state = seed;
    let mut next = move || {
        // A small LCG: the test needs varied numbers, not statistics.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut text = String::from("unit,site,temp,pressure,vibration,failure\n");
    for i in 0..rows {
        let r = next();
        let label = if r < 0.1 {
            "cooling"
        } else if r < 0.2 {
            "oil"
        } else {
            ""
        };
        let temp = 90.0 + 6.0 * (next() - 0.5) + if label == "cooling" { 7.0 } else { 0.0 };
        let pressure = 300.0 + 40.0 * (next() - 0.5) - if label == "oil" { 50.0 } else { 0.0 };
        let pressure = if next() < 0.05 {
            "na".to_owned()
        } else {
            format!("{pressure:.2}")
        };
        let _ = writeln!(
            text,
            "U{},north,{temp:.2},{pressure},{:.3},{label}",
            i % 40,
            next()
        );
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn trains_and_evaluates_on_an_operators_table_and_exported_tables_read_back() {
    use pmi_sources::table::{read_table, TableColumns};
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("history.csv");
    operator_csv(&csv, 3000, 7);
    let cols = TableColumns {
        label: "failure".into(),
        group: Some("unit".into()),
        ..Default::default()
    };
    let table = read_table(&csv, &cols).unwrap();
    assert_eq!(table.ignored, vec!["site"]);
    assert_eq!(table.dataset.classes.len(), 2);
    let registry = dir.path().join("models");
    let (version, path, ev) = training::train_table(training::TableTrainJob {
        table,
        test: None,
        trained_on: "history.csv".into(),
        params: TrainParams {
            seed: 3,
            ..TrainParams::default()
        },
        shares: SplitShares::default(),
        registry: registry.clone(),
        make_current: true,
    })
    .unwrap();
    assert_eq!(version, "v0001");
    assert!(path.join("metrics.json").is_file());
    assert!(ev.overall.roc_auc.unwrap() > 0.95, "{:?}", ev.overall);
    assert_eq!(ev.per_class.len(), 2);
    assert!(ev.rules.is_none(), "no domain rules on a foreign table");

    // A separate test table.
    let test_csv = dir.path().join("test.csv");
    operator_csv(&test_csv, 800, 99);
    let (_, _, ev) = training::train_table(training::TableTrainJob {
        table: read_table(&csv, &cols).unwrap(),
        test: Some(read_table(&test_csv, &cols).unwrap()),
        trained_on: "history.csv".into(),
        params: TrainParams::default(),
        shares: SplitShares::default(),
        registry: registry.clone(),
        make_current: false,
    })
    .unwrap();
    assert_eq!(ev.overall.rows, 800);

    // PMI's export of a training set reads back with its split and values.
    let set = training::simulated_training_set(&small_set(), |_, _| {}).unwrap();
    let ds = &set.dataset;
    let split = pmi_models::dataset::split_by_group(ds, SplitShares::default(), 1).unwrap();
    let exported = dir.path().join("set.parquet");
    pmi_sinks::table::write_table(&exported, ds, &split, &set.in_service).unwrap();
    let back = read_table(
        &exported,
        &TableColumns {
            label: "label".into(),
            group: Some("vehicle_id".into()),
            time: Some("pane_end".into()),
            split: Some("split".into()),
            ignore: vec!["in_service".into()],
        },
    )
    .unwrap();
    assert_eq!(back.split.as_ref().unwrap().test, split.test);
    assert_eq!(back.dataset.feature_names, ds.feature_names);
    assert_eq!(back.dataset.times, ds.times);
    assert_eq!(back.dataset.positives(), ds.positives());
    for r in [0, ds.len() / 2, ds.len() - 1] {
        let (a, b) = (back.dataset.row(r), ds.row(r));
        assert!(a
            .iter()
            .zip(b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
    }
    assert_eq!(back.ignored, vec!["in_service"]);
}

#[test]
fn recorded_telemetry_becomes_a_labelled_training_set_through_the_backfill_graph() {
    use pmi_dataflows::jobs::{ForcedFailure, SimulateJob};
    use pmi_dataflows::training::ParquetTrainingSet;
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000;
    let start = EventTime(START.0 + 6 * 3_600_000);
    jobs::simulate(&SimulateJob {
        fleet: FleetSpec {
            vehicles: 3,
            seed: 2,
            start,
            failures_per_vehicle_month: 0.0,
            bad_readings: false,
            forced_failures: vec![ForcedFailure {
                vehicle: 1,
                component: pmi_core::Component::Battery,
                onset_after_ms: -9 * day,
                duration_ms: 10 * day,
            }],
        },
        duration: Duration::from_secs(6 * 3600),
        out: pmi_sources::store::Store::local(dir.path()).unwrap(),
    })
    .unwrap();
    let set = training::parquet_training_set(&ParquetTrainingSet {
        telemetry: dir.path().join("telemetry").display().to_string(),
        ground_truth: dir.path().join("ground_truth").display().to_string(),
        every_ms: 30 * 60_000,
        horizon_ms: 7 * day,
        graph: GraphConfig {
            workers: 2,
            ..Default::default()
        },
    })
    .unwrap();
    let ds = &set.dataset;
    assert_eq!(
        set.run.read,
        3 * 6 * 3600,
        "every reading went through the graph"
    );
    // A vector per vehicle every 30 minutes over 6 hours (the last window closes after it).
    assert!((3 * 12..=3 * 13).contains(&ds.len()), "{} rows", ds.len());
    assert!(ds.times.iter().all(|t| t % (30 * 60_000) == 0));
    assert_eq!(
        ds.group_names,
        vec!["VEH_000000", "VEH_000001", "VEH_000002"]
    );
    for r in 0..ds.len() {
        // Vehicle 1's battery fails a day after the start: positive throughout.
        let want = (ds.groups[r] == 1).then_some(pmi_core::Component::Battery.index() as u16);
        assert_eq!(ds.labels[r], want, "row {r}");
    }
    assert_eq!(set.in_service.len(), ds.len());
    let e = training::parquet_training_set(&ParquetTrainingSet {
        telemetry: dir.path().join("telemetry").display().to_string(),
        ground_truth: dir.path().join("ground_truth").display().to_string(),
        every_ms: 7_000,
        horizon_ms: 7 * day,
        graph: GraphConfig::default(),
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("multiple of the pane"), "{e}");
}
