use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, LargeStringArray, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};

use super::*;

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>, rows_per_group: usize) {
    write_with(path, columns, rows_per_group, true);
}

/// [`write`], with or without dictionary-encoded columns.
fn write_with(
    path: &Path,
    columns: Vec<(&str, ArrayRef)>,
    rows_per_group: usize,
    dictionary: bool,
) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .set_dictionary_enabled(dictionary)
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn read_all(files: &TelemetryFiles) -> (Vec<Telemetry>, Vec<Rejected>) {
    read_all_at(files, EventTime(i64::MAX / 4))
}

/// Every unit of `files` read and validated at `now`.
fn read_all_at(files: &TelemetryFiles, now: EventTime) -> (Vec<Telemetry>, Vec<Rejected>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let mut interner = VehicleInterner::default();
    for u in files.units() {
        files
            .read_unit(
                u,
                &Validator::default(),
                now,
                &mut interner,
                &mut ok,
                &mut bad,
            )
            .unwrap();
    }
    (ok, bad)
}

#[test]
fn reads_other_tools_layouts_with_a_subset_of_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let n = 100;
    let ms: Vec<i64> = (0..n).map(|i| 1_700_000_000_000 + i * 1000).collect();
    // File 1: ts as int64 ms, large strings, rpm only, float32.
    write(
        &dir.path().join("a.parquet"),
        vec![
            (
                "vehicle_id",
                Arc::new(LargeStringArray::from_iter_values((0..n).map(|_| "VEH_1"))) as ArrayRef,
            ),
            ("ts", Arc::new(Int64Array::from(ms.clone()))),
            (
                "rpm",
                Arc::new(Float32Array::from_iter_values(
                    (0..n).map(|i| 1000.0 + i as f32),
                )),
            ),
            ("extra", Arc::new(Int64Array::from(vec![7; n as usize]))),
        ],
        30,
    );
    // File 2 (in a subfolder): ts as timestamp(us, UTC), coolant only.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(
        &dir.path().join("sub/b.parquet"),
        vec![
            (
                "vehicle_id",
                Arc::new(StringArray::from_iter_values((0..n).map(|_| "VEH_2"))) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(
                        ms.iter().map(|t| t * 1000).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "coolant_temp_c",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| 80.0 + i as f64 / 10.0),
                )),
            ),
        ],
        1000,
    );
    // File 3: ts as timestamp(ns) without time zone.
    write(
        &dir.path().join("c.parquet"),
        vec![
            (
                "vehicle_id",
                Arc::new(StringArray::from_iter_values((0..n).map(|_| "VEH_3"))) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampNanosecondArray::from(
                    ms.iter().map(|t| t * 1_000_000).collect::<Vec<_>>(),
                )),
            ),
        ],
        1000,
    );
    std::fs::write(dir.path().join(".hidden.parquet"), b"not parquet").unwrap();
    let files = TelemetryFiles::open(dir.path()).unwrap();
    assert_eq!(files.units().len(), 4 + 1 + 1);
    assert_eq!(files.rows(), 300);
    let (ok, bad) = read_all(&files);
    assert!(bad.is_empty());
    assert_eq!(ok.len(), 300);
    let v1: Vec<_> = ok
        .iter()
        .filter(|t| t.vehicle_id.as_str() == "VEH_1")
        .collect();
    assert_eq!(v1[5].ts, EventTime(ms[5]));
    assert_eq!(v1[5].values.get(Sensor::Rpm), Some(1005.0));
    assert_eq!(v1[5].values.get(Sensor::CoolantTempC), None);
    let v2: Vec<_> = ok
        .iter()
        .filter(|t| t.vehicle_id.as_str() == "VEH_2")
        .collect();
    assert_eq!(v2[99].ts, EventTime(ms[99]));
    assert_eq!(v2[99].values.get(Sensor::CoolantTempC), Some(89.9));
    let v3: Vec<_> = ok
        .iter()
        .filter(|t| t.vehicle_id.as_str() == "VEH_3")
        .collect();
    assert_eq!(v3[0].ts, EventTime(ms[0]));
    assert_eq!(v3[0].values.present(), 0);
    let mut keys = Vec::new();
    files
        .scan_keys(&files.units()[0], |v, t| {
            keys.push((v.map(str::to_owned), t))
        })
        .unwrap();
    assert_eq!(keys.len(), 30);
    assert_eq!(keys[1], (Some("VEH_1".into()), Some(ms[1])));
}

#[test]
fn bad_files_are_clear_errors_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no_ts.parquet");
    write(
        &p,
        vec![(
            "vehicle_id",
            Arc::new(StringArray::from(vec!["V"])) as ArrayRef,
        )],
        10,
    );
    let e = TelemetryFiles::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("no_ts.parquet") && e.contains("`ts`") && e.contains("missing"),
        "{e}"
    );
    let p = dir.path().join("str_rpm.parquet");
    write(
        &p,
        vec![
            (
                "vehicle_id",
                Arc::new(StringArray::from(vec!["V"])) as ArrayRef,
            ),
            ("ts", Arc::new(Int64Array::from(vec![0]))),
            ("rpm", Arc::new(StringArray::from(vec!["fast"]))),
        ],
        10,
    );
    let e = TelemetryFiles::open(&p).unwrap_err().to_string();
    assert!(e.contains("`rpm`") && e.contains("not numeric"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(TelemetryFiles::open(empty.path())
        .unwrap_err()
        .to_string()
        .contains("no .parquet files"));
}

#[test]
fn columnar_validation_equals_row_validation() {
    columnar_validation_equals_row_validation_with(true);
}

/// Sensor columns without a null or a value out of range, and times without a null, are
/// checked a column at a time (`CheckedColumns`); rows with a bad id or time among them are
/// still rejected as a row by row check rejects them.
#[test]
fn columnar_validation_equals_row_validation_where_every_value_is_in_range() {
    columnar_validation_equals_row_validation_with(false);
}

/// With `sensor_faults`, also null and out-of-range sensor values and null times.
fn columnar_validation_equals_row_validation_with(sensor_faults: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let n = 3000;
    let ids: Vec<Option<String>> = (0..n)
        .map(|i| match rng.gen_range(0..100) {
            0 => None,
            1 => Some(String::new()),
            2 => Some("bad id".into()),
            _ => Some(format!("VEH_{}", i % 7)),
        })
        .collect();
    let ts: Vec<Option<i64>> = (0..n)
        .map(|i| match rng.gen_range(0..100) {
            0 if sensor_faults => None,
            1 => Some(-5),
            2 => Some(4_000_000_000_000),
            _ => Some(1_700_000_000_000 + i as i64),
        })
        .collect();
    let mut columns: Vec<(&str, ArrayRef)> = vec![("ts", Arc::new(Int64Array::from(ts.clone())))];
    let mut sensor_values = Vec::new();
    for s in Sensor::ALL {
        let (lo, hi) = s.range();
        let vals: Vec<Option<f64>> = (0..n)
            .map(
                |_| match rng.gen_range(0..300) + if sensor_faults { 0 } else { 5 } {
                    0 => None,
                    1 => Some(f64::NAN),
                    2 => Some(hi + 1.0),
                    3 => Some(lo - 1.0),
                    4 => Some(hi),
                    _ => Some(rng.gen_range(lo..hi)),
                },
            )
            .collect();
        sensor_values.push(vals.clone());
        columns.push((s.name(), Arc::new(Float64Array::from(vals))));
    }
    // The ids as plain utf8 (read as a dictionary) with and without dictionary pages in
    // the file, and as large utf8 (read as strings): the same readings and rejections.
    let now = EventTime(1_800_000_000_000);
    let variants: [(&str, ArrayRef, bool); 3] = [
        ("dict_pages", Arc::new(StringArray::from(ids.clone())), true),
        (
            "plain_pages",
            Arc::new(StringArray::from(ids.clone())),
            false,
        ),
        (
            "large_utf8",
            Arc::new(arrow::array::LargeStringArray::from(ids.clone())),
            true,
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, id_column, dictionary) in variants {
        let mut cols = vec![("vehicle_id", id_column)];
        cols.extend(columns.iter().cloned());
        let p = dir.path().join(format!("{name}.parquet"));
        write_with(&p, cols, 1000, dictionary);
        let (ok, bad) = read_all_at(&TelemetryFiles::open(&p).unwrap(), now);
        outcomes.push((name, ok, bad));
    }
    let (mut want_ok, mut want_bad) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut values = [None; SENSOR_COUNT];
        for (k, col) in sensor_values.iter().enumerate() {
            values[k] = col[i];
        }
        let raw = RawReading {
            vehicle_id: ids[i].clone(),
            ts: ts[i],
            values,
            origin: None,
        };
        match Validator::default().validate(raw, now) {
            Ok(t) => want_ok.push(t),
            Err(r) => want_bad.push(r),
        }
    }
    assert!(want_bad.len() > 100);
    for (name, ok, bad) in outcomes {
        assert_eq!(ok, want_ok, "{name}");
        assert_eq!(bad.len(), want_bad.len(), "{name}");
        for (g, w) in bad.iter().zip(&want_bad) {
            assert_eq!((&g.field, &g.reason), (&w.field, &w.reason), "{name}");
            assert_eq!(g.reading.vehicle_id, w.reading.vehicle_id, "{name}");
            assert!(g
                .reading
                .origin
                .as_deref()
                .unwrap()
                .contains(&format!("{name}.parquet#row=")));
        }
    }
}
