//! Golden test of the stream graph: a small seeded simulator run (2 vehicles, 15 minutes,
//! bad readings on, forced failures) whose features (a readable subset of columns) and
//! predictions are checked in under `tests/golden/`, so that any change in results shows
//! in review. Regenerate deliberately with `PMI_UPDATE_GOLDEN=1 cargo test --test golden`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use pmi_core::{Component, EventTime, SeverityThresholds};
use pmi_dataflows::jobs::{self, FleetSpec, ForcedFailure, LiveJob};
use pmi_dataflows::simulated::Pace;
use pmi_dataflows::GraphConfig;

/// Feature columns kept in the golden file: every statistic of four channels at 60 s and
/// the mean and slope at 300 and 900 s.
fn columns() -> Vec<String> {
    let mut c = Vec::new();
    for ch in [
        "coolant_temp_c",
        "oil_pressure_per_krpm",
        "vibration_rms_g",
        "battery_voltage_v",
    ] {
        for s in ["count", "mean", "std", "min", "max", "last", "slope"] {
            c.push(format!("{ch}_{s}_60s"));
        }
        for w in [300, 900] {
            c.push(format!("{ch}_mean_{w}s"));
            c.push(format!("{ch}_slope_{w}s"));
        }
    }
    c
}

fn batches(dir: &Path) -> Vec<RecordBatch> {
    common::parquet_batches(dir)
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "null".into(), |v| format!("{v:.12e}"))
}

fn render_features(dir: &Path) -> String {
    let cols = columns();
    let mut rows = Vec::new();
    for b in batches(dir) {
        let ids = b.column_by_name("vehicle_id").unwrap().as_string::<i32>();
        let ends = b
            .column_by_name("pane_end")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            let mut row = vec![ids.value(i).to_owned(), ends.value(i).to_string()];
            for c in &cols {
                let a = b.column_by_name(c).unwrap().as_primitive::<Float64Type>();
                row.push(num(a.is_valid(i).then(|| a.value(i))));
            }
            rows.push(row.join(","));
        }
    }
    rows.sort();
    format!(
        "vehicle_id,pane_end,{}\n{}\n",
        cols.join(","),
        rows.join("\n")
    )
}

fn render_predictions(dir: &Path) -> String {
    let mut rows = Vec::new();
    for b in batches(dir) {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ids, sev, comp) = (s("vehicle_id"), s("severity"), s("component"));
        let ends = b
            .column_by_name("pane_end")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let risk = b
            .column_by_name("risk")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let c = if comp.is_valid(i) { comp.value(i) } else { "" };
            rows.push(format!(
                "{},{},{},{},{}",
                ids.value(i),
                ends.value(i),
                num(Some(risk.value(i))),
                sev.value(i),
                c
            ));
        }
    }
    rows.sort();
    format!(
        "vehicle_id,pane_end,risk,severity,component\n{}\n",
        rows.join("\n")
    )
}

/// Cells equal as text, or as numbers within 1e-9 relative.
fn same(got: &str, want: &str) -> Result<(), String> {
    let (g, w): (Vec<_>, Vec<_>) = (got.lines().collect(), want.lines().collect());
    if g.len() != w.len() {
        return Err(format!("{} lines, golden has {}", g.len(), w.len()));
    }
    for (n, (a, b)) in g.iter().zip(&w).enumerate() {
        let (ca, cb): (Vec<_>, Vec<_>) = (a.split(',').collect(), b.split(',').collect());
        let ok = ca.len() == cb.len()
            && ca.iter().zip(&cb).all(|(x, y)| {
                x == y
                    || matches!((x.parse::<f64>(), y.parse::<f64>()), (Ok(p), Ok(q)) if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()))
            });
        if !ok {
            return Err(format!("line {}:\n got  {a}\n want {b}", n + 1));
        }
    }
    Ok(())
}

#[test]
fn stream_graph_matches_golden_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let job = LiveJob {
        fleet: FleetSpec {
            vehicles: 2,
            seed: 11,
            start: EventTime(1_767_225_600_000 + 8 * 3_600_000),
            failures_per_vehicle_month: 30.0,
            bad_readings: true,
            // Vehicle 0 (parked, then driven from about 08:12) with worn-out engine mounts
            // and a battery failed from the start; vehicle 1 (parked) with a battery that
            // wears out over the run: the predictions show failures and one developing.
            forced_failures: vec![
                ForcedFailure {
                    vehicle: 0,
                    component: Component::EngineMounts,
                    onset_after_ms: 0,
                    duration_ms: 1,
                },
                ForcedFailure {
                    vehicle: 0,
                    component: Component::Battery,
                    onset_after_ms: 0,
                    duration_ms: 1,
                },
                ForcedFailure {
                    vehicle: 1,
                    component: Component::Battery,
                    onset_after_ms: 0,
                    duration_ms: 900_000,
                },
            ],
        },
        pace: Pace::Max,
        duration: Some(Duration::from_secs(900)),
        graph: GraphConfig {
            workers: 2,
            ..Default::default()
        },
        out: pmi_sources::store::Store::local(dir.path()).unwrap(),
        write_telemetry: false,
        severity: SeverityThresholds::default(),
        model_registry: None,
        database: None,
    };
    let report = jobs::live(&job).unwrap();
    assert_eq!(report.read, report.windowed + report.rejected + report.late);
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, text) in [
        (
            "stream_features.csv",
            render_features(&dir.path().join("features")),
        ),
        (
            "stream_predictions.csv",
            render_predictions(&dir.path().join("predictions")),
        ),
    ] {
        let path = golden.join(name);
        if std::env::var_os("PMI_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want =
            std::fs::read_to_string(&path).expect("golden file (PMI_UPDATE_GOLDEN=1 writes it)");
        if let Err(e) = same(&text, &want) {
            panic!("{name} differs from the golden output: {e}\n(if the change is intended, regenerate with PMI_UPDATE_GOLDEN=1)");
        }
    }
}
