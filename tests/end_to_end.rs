//! End-to-end tests of the jobs: accounting, worker-count independence, exactness against
//! DuckDB, backfill over other tools' layouts.
//!
//! These call Python (DuckDB, Polars, pyarrow, pinned in scripts/requirements.txt and
//! installed by scripts/test.sh); a missing module fails the test, it is never skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pmi_core::{EventTime, SeverityThresholds, WindowConfig};
use pmi_dataflows::backfill::plan;
use pmi_dataflows::jobs::{self, BackfillJob, FleetSpec, LiveJob};
use pmi_dataflows::layout::Layout;
use pmi_dataflows::simulated::Pace;
use pmi_dataflows::{GraphConfig, RunReport};
use pmi_sources::store::Store;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python3 {args:?} failed:\n{text}");
    text
}

fn live(out: &Path, workers: usize, bad: bool) -> RunReport {
    let job = LiveJob {
        fleet: FleetSpec {
            vehicles: 6,
            seed: 11,
            start: EventTime(1_767_225_600_000 + 8 * 3_600_000), // 08:00 UTC: vehicles drive
            failures_per_vehicle_month: 3.0,
            bad_readings: bad,
            forced_failures: Vec::new(),
        },
        pace: Pace::Max,
        duration: Some(Duration::from_secs(40 * 60)),
        graph: GraphConfig {
            workers,
            window: WindowConfig::default(),
            ..Default::default()
        },
        out: Store::local(out).unwrap(),
        write_telemetry: true,
        severity: SeverityThresholds::default(),
        model_registry: None,
        database: None,
    };
    jobs::live(&job).unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    pmi_sources::parquet_in::parquet_files(dir).unwrap()
}

fn rows(dir: &Path) -> usize {
    files(dir)
        .iter()
        .map(|p| {
            ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows() as usize
        })
        .sum()
}

/// Features as (vehicle, pane_end) → bit patterns of every value (null as a fixed pattern).
fn features(dir: &Path) -> BTreeMap<(String, i64), Vec<u64>> {
    let mut out = BTreeMap::new();
    for p in files(dir) {
        for batch in ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_string::<i32>();
            let ends = batch.column(1).as_primitive::<TimestampMillisecondType>();
            for i in 0..batch.num_rows() {
                let values = (2..batch.num_columns())
                    .map(|c| {
                        let col = batch.column(c).as_primitive::<Float64Type>();
                        if col.is_null(i) {
                            u64::MAX
                        } else {
                            col.value(i).to_bits()
                        }
                    })
                    .collect();
                let prev = out.insert((ids.value(i).to_owned(), ends.value(i)), values);
                assert!(prev.is_none(), "duplicate vector");
            }
        }
    }
    out
}

#[test]
fn live_run_accounts_for_every_reading_and_equals_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let r = live(dir.path(), 2, true);
    assert_eq!(r.read, r.windowed + r.rejected + r.late, "{r:?}");
    assert!(
        r.rejected > 0 && r.late > 0,
        "bad readings exercised: {r:?}"
    );
    assert_eq!(rows(&dir.path().join("dead_letter")), r.rejected as usize);
    assert_eq!(rows(&dir.path().join("late")), r.late as usize);
    assert_eq!(rows(&dir.path().join("features")), r.features as usize);
    assert_eq!(rows(&dir.path().join("predictions")), r.features as usize);
    let tel = dir.path().join("telemetry/**/*.parquet");
    let feat = dir.path().join("features/**/*.parquet");
    let out = python(&[
        "scripts/check_features_duckdb.py",
        tel.to_str().unwrap(),
        feat.to_str().unwrap(),
    ]);
    assert!(out.contains(" 0 failed"), "{out}");
}

#[test]
fn one_and_two_workers_give_identical_outputs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = live(a.path(), 1, true);
    let two = live(b.path(), 2, true);
    assert_eq!(
        (one.read, one.windowed, one.rejected, one.late),
        (two.read, two.windowed, two.rejected, two.late)
    );
    let (fa, fb) = (
        features(&a.path().join("features")),
        features(&b.path().join("features")),
    );
    assert!(!fa.is_empty());
    assert_eq!(fa, fb, "features differ between 1 and 2 workers");
}

#[test]
fn backfill_equals_the_live_run_in_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let live_out = dir.path().join("live");
    live(&live_out, 1, true);
    let reference = features(&live_out.join("features"));

    let backfill = |input: &Path, out: &Path, workers: usize| {
        let job = BackfillJob {
            input: input.display().to_string(),
            range: Default::default(),
            out: Store::local(out).unwrap(),
            graph: GraphConfig {
                workers,
                ..Default::default()
            },
            severity: SeverityThresholds::default(),
            model_registry: None,
            database: None,
        };
        let r = jobs::backfill(&job).unwrap();
        assert_eq!(r.late, 0, "nothing is late in a backfill");
        assert_eq!(r.read, r.windowed + r.rejected);
        r
    };
    // The live run's own telemetry archive, time-ordered: equal to the live features.
    let b0 = dir.path().join("b0");
    backfill(&live_out.join("telemetry"), &b0, 2);
    assert_eq!(features(&b0.join("features")), reference);

    // Other tools' layouts.
    let variants = dir.path().join("variants");
    python(&[
        "scripts/make_layout_variants.py",
        live_out.join("telemetry/**/*.parquet").to_str().unwrap(),
        variants.to_str().unwrap(),
    ]);
    let expect = [
        ("shuffled_polars", Layout::Unordered),
        ("grouped_duckdb", Layout::GroupedByVehicle),
        ("ordered_pyarrow", Layout::TimeOrdered),
    ];
    for (name, layout) in expect {
        let input = variants.join(name);
        assert_eq!(
            plan(
                &input.display().to_string(),
                Default::default(),
                30_000,
                0..1
            )
            .unwrap()
            .layout,
            layout,
            "{name}"
        );
        let out = dir.path().join(format!("out-{name}"));
        backfill(&input, &out, 2);
        if name == "grouped_duckdb" {
            assert_eq!(features(&out.join("features")), reference, "{name}");
        }
        // Every variant, against DuckDB on that variant's own file.
        let report = python(&[
            "scripts/check_features_duckdb.py",
            input.join("part.parquet").to_str().unwrap(),
            out.join("features/**/*.parquet").to_str().unwrap(),
        ]);
        assert!(report.contains(" 0 failed"), "{name}: {report}");
    }
}

/// A bench of 3 vehicles × 2 min (360 readings) on one worker, kept in `dir`.
fn small_bench(dir: &std::path::Path, runs: usize) -> jobs::BenchJob {
    jobs::BenchJob {
        vehicles: 3,
        duration: Duration::from_secs(120),
        workers: 1,
        window: WindowConfig::default(),
        dir: Some(dir.to_path_buf()),
        s3: None,
        runs,
    }
}

/// `pmi bench --dir D` run twice: the second run generates and reads one fleet, not the
/// first run's files as well (which would all be duplicates, and halve the rate).
#[test]
fn bench_rerun_in_the_same_folder_reads_only_its_own_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_bench(dir.path(), 1);
    let first = jobs::bench(&job).unwrap();
    let input_files = files(&dir.path().join("input/telemetry")).len();
    let second = jobs::bench(&job).unwrap();
    assert_eq!(first.readings, 360);
    // On Linux the backfill's CPU time comes split by role, the roles adding up to it.
    #[cfg(target_os = "linux")]
    {
        let cpu = first.cpu.as_ref().expect("a CPU split on Linux");
        let roles: Vec<_> = cpu.roles.iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, pmi_dataflows::cpu::ROLES);
        let sum: Duration = cpu.roles.iter().map(|(_, d)| *d).sum();
        assert!(sum >= cpu.total, "{cpu:?}");
        assert!(first.render().contains("CPU: "));
    }
    for r in [&first, &second] {
        assert_eq!(
            r.report.read, r.readings,
            "the backfill read its own fleet only"
        );
        assert_eq!(r.report.rejected, 0);
    }
    assert_eq!(second.report.features, first.report.features);
    assert_eq!(
        files(&dir.path().join("input/telemetry")).len(),
        input_files
    );
    assert_eq!(
        rows(&dir.path().join("output/features")),
        first.report.features as usize
    );
}

/// `pmi bench --runs 3`: three backfills of one input, the figures the median run's, and
/// the outputs of one run only left behind.
#[test]
fn bench_runs_report_the_median_run() {
    let dir = tempfile::tempdir().unwrap();
    let result = jobs::bench(&small_bench(dir.path(), 3)).unwrap();
    assert_eq!(result.runs_s.len(), 3);
    let mut sorted = result.runs_s.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        result.backfill_s, sorted[1],
        "the median of {:?}",
        result.runs_s
    );
    assert_eq!(result.report.read, 360);
    assert!(
        result.render().contains("median of 3 runs"),
        "{}",
        result.render()
    );
    assert_eq!(
        rows(&dir.path().join("output/features")),
        result.report.features as usize,
        "each run's outputs are cleared before the next"
    );
}
