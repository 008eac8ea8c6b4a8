//! Parquet in an S3-compatible object store (moto's server, started by
//! `scripts/services.sh up`; `scripts/test.sh` does it and exports `PMI_S3_URL` and the
//! `AWS_*` endpoint and credentials): a live run into S3 and a backfill from S3 give the
//! same features value for value, `--from/--to` reads only the dates asked for, and a Kafka
//! replay into S3 writes no file twice; a file of many upload chunks arrives whole.

mod common;

use pmi_sinks::sql::admin::ScratchDatabase;

use common::{check, pmi, read_count};

/// The test bucket's URL with a prefix of this test's own.
fn s3(name: &str) -> String {
    let base = std::env::var("PMI_S3_URL").expect(
        "PMI_S3_URL is not set: start the test services with \
         `eval \"$(bash scripts/services.sh up)\"` (scripts/test.sh does)",
    );
    format!("{}/{}", base.trim_end_matches('/'), common::unique(name))
}

/// 2026-01-01T22:00Z: a six-hour run crosses midnight into 2026-01-02.
const START: &str = "1767304800000";

#[test]
fn a_live_run_into_s3_and_a_backfill_from_s3_give_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let live = s3("live");
    let fleet = ["--vehicles", "4", "--seed", "3", "--start-ms", START];
    check(
        pmi(dir.path())
            .args([
                "run",
                "--speed",
                "max",
                "--duration",
                "6h",
                "--workers",
                "2",
            ])
            .args(fleet)
            .args(["--out", &live]),
    );
    let files = common::s3_files(&live);
    assert!(
        files
            .iter()
            .any(|f| f.contains("/features/date=2026-01-01/"))
            && files
                .iter()
                .any(|f| f.contains("/features/date=2026-01-02/")),
        "features are partitioned by date: {files:?}"
    );
    let live_features = common::feature_rows_of(common::s3_batches(&format!("{live}/features")));
    assert!(live_features.len() > 4 * 6 * 300, "{}", live_features.len());

    // The same graph over the archived telemetry, from S3 to S3.
    let backfill = s3("backfill");
    let report = check(pmi(dir.path()).args([
        "backfill",
        "--input",
        &format!("{live}/telemetry"),
        "--out",
        &backfill,
        "--workers",
        "2",
    ]));
    let telemetry_rows: usize = common::s3_batches(&format!("{live}/telemetry"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(read_count(&report), telemetry_rows as u64, "{report}");
    let from_s3 = common::feature_rows_of(common::s3_batches(&format!("{backfill}/features")));
    assert_eq!(from_s3.len(), live_features.len());
    assert!(
        from_s3 == live_features,
        "features differ between live and backfill"
    );
    // Predictions value for value: (vehicle, pane end, risk bits, severity, component, model).
    let predictions = |url: &str| {
        use arrow::array::{Array, AsArray};
        let mut rows = Vec::new();
        for b in common::s3_batches(&format!("{url}/predictions")) {
            let text = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
            let (ids, severity, component, model) = (
                text("vehicle_id"),
                text("severity"),
                text("component"),
                text("model"),
            );
            let ends = b.column_by_name("pane_end").unwrap();
            let ends = ends.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            let risk = b.column_by_name("risk").unwrap();
            let risk = risk.as_primitive::<arrow::datatypes::Float64Type>();
            for r in 0..b.num_rows() {
                rows.push((
                    ids.value(r).to_owned(),
                    ends.value(r),
                    risk.value(r).to_bits(),
                    severity.value(r).to_owned(),
                    component.is_valid(r).then(|| component.value(r).to_owned()),
                    model.value(r).to_owned(),
                ));
            }
        }
        rows.sort();
        rows
    };
    let live_predictions = predictions(&live);
    assert_eq!(live_predictions.len(), live_features.len());
    assert!(
        predictions(&backfill) == live_predictions,
        "predictions differ"
    );

    // Only the second day: the first day's folders are not read, and every reading read is
    // of that day.
    let day2 = s3("day2");
    let report = check(pmi(dir.path()).args([
        "backfill",
        "--input",
        &format!("{live}/telemetry"),
        "--from",
        "2026-01-02",
        "--to",
        "2026-01-02",
        "--out",
        &day2,
    ]));
    let day2_rows: usize = common::s3_batches(&format!("{live}/telemetry/date=2026-01-02"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert!(day2_rows > 0 && day2_rows < telemetry_rows);
    assert_eq!(read_count(&report), day2_rows as u64, "{report}");
    let day2_features = common::feature_rows_of(common::s3_batches(&format!("{day2}/features")));
    let midnight = 1_767_312_000_000;
    assert!(day2_features.iter().all(|(_, end, _)| *end > midnight));
    // Away from the day's start (past the longest window) the features are the full run's.
    let settled: Vec<_> = live_features
        .iter()
        .filter(|(_, end, _)| *end >= midnight + 900_000)
        .cloned()
        .collect();
    let settled_day2: Vec<_> = day2_features
        .into_iter()
        .filter(|(_, end, _)| *end >= midnight + 900_000)
        .collect();
    assert!(!settled.is_empty());
    assert!(
        settled_day2 == settled,
        "day-2 features differ from the full run's"
    );
}

/// A file much larger than an upload chunk (4 MiB) reaches S3 whole: every value of a
/// features file of about 20 MB (pseudo-random, so Snappy cannot shrink it) reads back.
#[test]
fn a_features_file_of_many_upload_chunks_reads_back_from_s3_exactly() {
    use pmi_core::{EventTime, FeatureBatchBuilder, VehicleId, WindowConfig};
    use pmi_sinks::parquet_out::{DatasetOptions, FeatureLayout, ParquetDataset};
    use pmi_sources::store::Store;

    let url = s3("chunks");
    let store = Store::open(&url).unwrap();
    let schema = WindowConfig::default().schema().unwrap();
    let width = schema.len();
    let mut dataset = ParquetDataset::new(
        &store,
        "features",
        "w0",
        FeatureLayout::new(&schema),
        DatasetOptions::default(),
    )
    .unwrap();
    let (vehicles, panes) = (100, 80);
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut expected = Vec::new();
    for pane in 0..panes {
        let end = 1_767_225_600_000 + 10_000 * pane;
        let mut batch =
            FeatureBatchBuilder::new(EventTime(end), schema.fingerprint(), width, vehicles);
        for v in 0..vehicles {
            let values: Vec<f64> = (0..width)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 11) as f64 / (1u64 << 40) as f64
                })
                .collect();
            let id = format!("V{v:03}");
            expected.push((
                id.clone(),
                end,
                values.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            ));
            batch.push(VehicleId::parse(&id).unwrap(), &values);
        }
        dataset.push(vec![batch.finish().unwrap()]).unwrap();
    }
    let stats = dataset.close().unwrap();
    assert!(
        stats.bytes > 4 * (4 << 20),
        "several upload chunks: {} bytes",
        stats.bytes
    );
    expected.sort();
    let rows = common::feature_rows_of(common::s3_batches(&format!("{url}/features")));
    assert_eq!(rows.len(), expected.len());
    assert!(
        rows == expected,
        "a value differs after the round trip through S3"
    );
}

#[test]
fn a_bad_store_url_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = pmi(dir.path())
        .args(["backfill", "--input", "s3:///nobucket", "--out", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3:///nobucket") && err.contains("no bucket"),
        "{err}"
    );
}

#[test]
fn a_training_set_reads_the_same_from_s3_as_from_local_files() {
    use pmi_core::EventTime;
    use pmi_dataflows::jobs::{self, FleetSpec, ForcedFailure, SimulateJob};
    use pmi_dataflows::training::{self, ParquetTrainingSet};
    use pmi_dataflows::GraphConfig;
    use pmi_sources::store::Store;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let remote = s3("training");
    let day = 86_400_000;
    let simulate = |out: Store| {
        jobs::simulate(&SimulateJob {
            fleet: FleetSpec {
                vehicles: 3,
                seed: 2,
                start: EventTime(1_767_254_400_000),
                failures_per_vehicle_month: 0.0,
                bad_readings: false,
                forced_failures: vec![ForcedFailure {
                    vehicle: 1,
                    component: pmi_core::Component::Battery,
                    onset_after_ms: -9 * day,
                    duration_ms: 10 * day,
                }],
            },
            duration: Duration::from_secs(4 * 3600),
            out,
        })
        .unwrap()
    };
    simulate(Store::local(dir.path()).unwrap());
    simulate(Store::open(&remote).unwrap());
    let set = |telemetry: String, ground_truth: String| {
        training::parquet_training_set(&ParquetTrainingSet {
            telemetry,
            ground_truth,
            every_ms: 30 * 60_000,
            horizon_ms: 7 * day,
            graph: GraphConfig {
                workers: 2,
                ..Default::default()
            },
        })
        .unwrap()
    };
    let local = set(
        dir.path().join("telemetry").display().to_string(),
        dir.path().join("ground_truth").display().to_string(),
    );
    let from_s3 = set(
        format!("{remote}/telemetry"),
        format!("{remote}/ground_truth"),
    );
    let (a, b) = (&local.dataset, &from_s3.dataset);
    assert!(a.len() >= 3 * 8, "{} rows", a.len());
    assert!(a.positives() > 0);
    assert_eq!((a.len(), a.positives()), (b.len(), b.positives()));
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.times, b.times);
    for r in 0..a.len() {
        let same = a
            .row(r)
            .iter()
            .zip(b.row(r))
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "row {r} differs");
    }

    // The labelled set exported to the store reads back as a training table.
    // One vehicle per part (three vehicles are too few for the stratified split).
    let part = |g: u32| -> Vec<usize> { (0..a.len()).filter(|r| a.groups[*r] == g).collect() };
    let split = pmi_models::dataset::Split {
        train: part(0),
        valid: part(1),
        test: part(2),
        test_groups: vec![a.group_names[2].clone()],
    };
    let local_table = dir.path().join("set.parquet");
    pmi_sinks::table::write_table(&local_table, a, &split, &local.in_service).unwrap();
    let object = format!("{remote}/training_set/set.parquet");
    let store = Store::open(&format!("{remote}/training_set")).unwrap();
    store
        .put(
            &store.object("set.parquet"),
            std::fs::read(&local_table).unwrap().into(),
        )
        .unwrap();
    let cols = pmi_sources::table::TableColumns {
        label: "label".into(),
        group: Some("vehicle_id".into()),
        time: Some("pane_end".into()),
        split: Some("split".into()),
        ignore: vec!["in_service".into()],
    };
    let back = pmi_sources::table::read_table_at(&object, &cols).unwrap();
    assert_eq!(back.dataset.len(), a.len());
    assert_eq!(back.dataset.positives(), a.positives());
    assert_eq!(back.split.unwrap().test, split.test);

    // As a dataset partitioned by date: the same rows, by date; a rewrite by the same writer
    // replaces its files.
    let root = Store::open(&remote).unwrap();
    for _ in 0..2 {
        pmi_sinks::table::write_partitioned(&root, "labelled", "w0", a, &split, &local.in_service)
            .unwrap();
    }
    let files = common::s3_files(&format!("{remote}/labelled"));
    assert!(
        !files.is_empty()
            && files
                .iter()
                .all(|f| f.contains("/labelled/date=2026-01-01/")),
        "{files:?}"
    );
    assert_eq!(files.len(), 1, "{files:?}");
    let back = pmi_sources::table::read_table_at(&format!("{remote}/labelled"), &cols).unwrap();
    assert_eq!(back.dataset.len(), a.len());
    assert_eq!(back.dataset.positives(), a.positives());
}

/// Predictions and alerts of a run's report line.
fn predictions_and_alerts(report: &str) -> (u64, u64) {
    let n = |what: &str| -> u64 {
        let before = report.split(what).next().expect(report);
        before
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .expect(report)
    };
    (n(" predictions,"), n(" alerts;"))
}

/// A fresh PostgreSQL database on the test server, dropped when the guard goes.
struct FreshDatabase {
    db: ScratchDatabase,
    url: String,
}

impl FreshDatabase {
    fn new(prefix: &str) -> FreshDatabase {
        let server = std::env::var("PMI_DATABASE_URL").expect(
            "PMI_DATABASE_URL is not set: start the test services with \
             `eval \"$(bash scripts/services.sh up)\"` (scripts/test.sh does)",
        );
        let db = ScratchDatabase::create(&server, prefix).unwrap();
        FreshDatabase {
            url: db.url().to_owned(),
            db,
        }
    }
    fn count(&self, table: &str) -> u64 {
        count(self.db.url(), table)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn count(url: &str, table: &str) -> u64 {
    block_on(async {
        let db = pmi_sinks::sql::Database::connect(&pmi_sinks::sql::SqlConfig::new(url))
            .await
            .unwrap();
        let n = db.count(table).await.unwrap();
        db.close().await;
        n
    })
}

#[test]
fn a_run_writes_predictions_and_alerts_to_the_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let report = check(
        pmi(dir.path())
            .env_remove("PMI_DATABASE_URL")
            .args([
                "run",
                "--speed",
                "max",
                "--duration",
                "1h",
                "--vehicles",
                "3",
            ])
            .args(["--seed", "4", "--bad-readings", "--out", "out"]),
    );
    let (predictions, alerts) = predictions_and_alerts(&report);
    assert!(predictions > 3 * 300, "{report}");
    let url = format!("sqlite://{}", dir.path().join("out/pmi.sqlite").display());
    assert_eq!(count(&url, "failure_predictions"), predictions);
    // One row per alert; a change writes one or two rows, a retraction updates one.
    let rows = count(&url, "alerts");
    assert!(
        rows <= 2 * alerts && (rows == 0) == (alerts == 0),
        "{rows} rows, {alerts} changes"
    );
    assert_eq!(count(&url, "vehicle_telemetry"), 0, "telemetry is opt-in");
}

#[test]
fn a_replayed_run_into_postgres_writes_no_row_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = FreshDatabase::new("pmi_e2e");
    let run = |out: &str| {
        check(
            pmi(dir.path())
                .args([
                    "run",
                    "--speed",
                    "max",
                    "--duration",
                    "1h",
                    "--vehicles",
                    "3",
                ])
                .args(["--seed", "5", "--start-ms", START, "--workers", "2"])
                .args([
                    "--database-url",
                    &db.url,
                    "--database-telemetry",
                    "--out",
                    out,
                ]),
        )
    };
    let first = run("a");
    let (predictions, alerts) = predictions_and_alerts(&first);
    assert!(predictions > 3 * 300, "{first}");
    assert_eq!(db.count("failure_predictions"), predictions);
    let alert_rows = db.count("alerts");
    assert!(
        alert_rows <= 2 * alerts,
        "{alert_rows} rows for {alerts} alert changes"
    );
    let workflows = db.count("agent_workflows");
    let appointments = db.count("appointments");
    assert_eq!(db.count("vehicle_telemetry"), 3 * 3600);
    // The same input again: every row is upserted onto itself, and the agents find
    // nothing new to do.
    let second = run("b");
    assert_eq!(predictions_and_alerts(&second), (predictions, alerts));
    assert_eq!(db.count("failure_predictions"), predictions);
    assert_eq!(db.count("alerts"), alert_rows);
    assert_eq!(db.count("agent_workflows"), workflows);
    assert_eq!(db.count("appointments"), appointments);
    assert_eq!(db.count("vehicle_telemetry"), 3 * 3600);
}

#[test]
fn a_kafka_run_into_postgres_and_s3_then_its_replay_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = std::env::var("PMI_KAFKA_BROKERS").expect(
        "PMI_KAFKA_BROKERS is not set: start the test services with \
         `eval \"$(bash scripts/services.sh up)\"` (scripts/test.sh does)",
    );
    let topic = format!("pmi-test-storage-{}", std::process::id());
    let db = FreshDatabase::new("pmi_kafka");
    let out = s3("kafka");
    check(
        pmi(dir.path())
            .args([
                "simulate",
                "--vehicles",
                "4",
                "--duration",
                "30m",
                "--seed",
                "6",
            ])
            .args(["--start-ms", START, "--speed", "max", "--partitions", "2"])
            .args(["--to", &format!("kafka://{brokers}/{topic}"), "--out", "gt"]),
    );
    let run = || {
        check(
            pmi(dir.path())
                .args(["run", "--source", "kafka", "--workers", "2", "--out", &out])
                .args(["--kafka-brokers", &brokers, "--kafka-topic", &topic])
                .args([
                    "--kafka-group",
                    "storage",
                    "--kafka-any-time",
                    "--kafka-bounded",
                ])
                .args(["--kafka-alerts-topic", "", "--kafka-dead-letter-topic", ""])
                .args(["--kafka-predictions-topic", ""])
                .args(["--database-url", &db.url]),
        )
    };
    let first = run();
    let (predictions, _) = predictions_and_alerts(&first);
    assert!(predictions > 0, "{first}");
    let files = common::s3_files(&out);
    let features = common::feature_rows_of(common::s3_batches(&format!("{out}/features")));
    assert_eq!(db.count("failure_predictions"), predictions);
    assert_eq!(features.len() as u64, predictions);

    // The same group again replays the longest window from its committed offsets.
    let second = run();
    assert!(second.contains("already durable"), "{second}");
    assert_eq!(common::s3_files(&out), files, "no file written twice");
    assert!(common::feature_rows_of(common::s3_batches(&format!("{out}/features"))) == features);
    assert_eq!(db.count("failure_predictions"), predictions);
}
