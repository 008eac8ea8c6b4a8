//! The learned half end to end: the training-set graph on a small simulated fleet → the
//! ensemble → the registry → the stream graph scoring with it, and a new version picked up
//! by a running scorer without a restart.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pmi_core::{EventTime, SeverityThresholds, WindowConfig};
use pmi_dataflows::jobs::{self, FleetSpec, LiveJob};
use pmi_dataflows::scoring::ModelScorer;
use pmi_dataflows::simulated::Pace;
use pmi_dataflows::training::{self, SimulatedTrainingSet, TrainJob};
use pmi_dataflows::GraphConfig;
use pmi_models::dataset::SplitShares;
use pmi_models::gbdt::GbdtParams;
use pmi_models::registry::Registry;
use pmi_models::train::TrainParams;
use pmi_models::{RuleScorer, RuleSet};
use pmi_sources::fleet::SnapshotPlan;

const START: EventTime = EventTime(1_767_225_600_000);

fn small_job(registry: &Path) -> TrainJob {
    TrainJob {
        set: SimulatedTrainingSet {
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
        },
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
    }
}

fn prediction_models(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("predictions")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
                for batch in reader {
                    let batch = batch.unwrap();
                    let col = batch.column_by_name("model").expect("model column");
                    let col = col.as_string::<i32>();
                    out.extend((0..col.len()).map(|i| col.value(i).to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn trains_publishes_and_scores_the_stream_with_the_registry_model() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models");
    let outcome = training::train(&small_job(&registry)).unwrap();

    assert_eq!(outcome.version, "v0001");
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
        out_dir: out.clone(),
        write_telemetry: false,
        severity: SeverityThresholds::default(),
        model_registry: Some(registry.clone()),
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
        values: vec![f64::NAN; schema.len()],
    };
    assert_eq!((scorer.score_fn())(&v).model, "ensemble-v0003");

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
