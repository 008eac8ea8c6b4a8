//! Writes a labelled [`Dataset`] as one Parquet table ([`write_table`]) or as a dataset
//! partitioned by date in a local folder or object store ([`write_partitioned`]), so that
//! other tools (pandas, scikit-learn, XGBoost, DuckDB) train and test on exactly PMI's rows
//! and split.
//!
//! Columns: `vehicle_id` (utf8, the group), `pane_end` (timestamp ms, UTC), `label` (utf8:
//! the failing component, null when healthy), `split` (`train` / `valid` / `test`),
//! `in_service` (bool: the engine ran in the longest window), then one float64 column per
//! feature (null when missing). `pmi train --table` reads it back
//! (`--label label --group vehicle_id --time pane_end --split-column split`).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use pmi_models::dataset::{Dataset, Split};

use crate::SinkError;

/// Writes `ds` (with `split` and the per-row `in_service` flags) to `path`, under a
/// temporary name renamed when complete.
pub fn write_table(
    path: &Path,
    ds: &Dataset,
    split: &Split,
    in_service: &[bool],
) -> Result<u64, SinkError> {
    let io = |e: std::io::Error| SinkError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let tmp = path.with_extension("parquet.partial");
    let file = File::create(&tmp).map_err(io)?;
    let rows: Vec<usize> = (0..ds.len()).collect();
    encode(file, ds, split, in_service, &rows)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(ds.len() as u64)
}

/// Writes `ds` as a dataset in the folder `dataset` of `store` (local or S3),
/// Hive-partitioned by the UTC date of each row's `pane_end`
/// (`date=YYYY-MM-DD/part-<writer>.parquet`, one file per date, each a single put: whole or
/// absent). A rerun with the same `writer` replaces its files rather than adding copies.
/// `pmi train --table <store>/<dataset>` reads it back as one table.
pub fn write_partitioned(
    store: &pmi_sources::store::Store,
    dataset: &str,
    writer: &str,
    ds: &Dataset,
    split: &Split,
    in_service: &[bool],
) -> Result<u64, SinkError> {
    const DAY_MS: i64 = 86_400_000;
    let mut by_day: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for r in 0..ds.len() {
        by_day
            .entry(ds.times[r].div_euclid(DAY_MS))
            .or_default()
            .push(r);
    }
    let folder = store.child(dataset);
    for (day, rows) in by_day {
        let date = chrono::DateTime::from_timestamp_millis(day * DAY_MS)
            .map(|t| t.date_naive().format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "__HIVE_DEFAULT_PARTITION__".into());
        let mut bytes = Vec::new();
        encode(&mut bytes, ds, split, in_service, &rows)?;
        folder
            .put(
                &folder.object(&format!("date={date}/part-{writer}.parquet")),
                bytes.into(),
            )
            .map_err(|e| SinkError::Store(e.to_string()))?;
    }
    Ok(ds.len() as u64)
}

/// Encodes the rows `rows` of `ds` as one Parquet file into `out`.
fn encode<W: std::io::Write + Send>(
    out: W,
    ds: &Dataset,
    split: &Split,
    in_service: &[bool],
    rows: &[usize],
) -> Result<(), SinkError> {
    let mut part = vec!["train"; ds.len()];
    for r in &split.valid {
        part[*r] = "valid";
    }
    for r in &split.test {
        part[*r] = "test";
    }
    let mut fields = vec![
        Field::new("vehicle_id", DataType::Utf8, false),
        Field::new(
            "pane_end",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("label", DataType::Utf8, true),
        Field::new("split", DataType::Utf8, false),
        Field::new("in_service", DataType::Boolean, false),
    ];
    fields.extend(
        ds.feature_names
            .iter()
            .map(|n| Field::new(n, DataType::Float64, true)),
    );
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
    let w = ds.width();
    for chunk in rows.chunks(8192) {
        let rows = chunk.iter().copied();
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.clone().map(|r| {
                ds.group_names
                    .get(ds.groups[r] as usize)
                    .cloned()
                    .unwrap_or_else(|| ds.groups[r].to_string())
            }))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(rows.clone().map(|r| ds.times[r]))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter(
                rows.clone()
                    .map(|r| ds.labels[r].map(|c| ds.classes[c as usize].clone())),
            )),
            Arc::new(StringArray::from_iter_values(rows.clone().map(|r| part[r]))),
            Arc::new(BooleanArray::from_iter(
                rows.clone()
                    .map(|r| Some(in_service.get(r).copied().unwrap_or(true))),
            )),
        ];
        for j in 0..w {
            cols.push(Arc::new(Float64Array::from_iter(rows.clone().map(|r| {
                let v = ds.values[r * w + j];
                (!v.is_nan()).then_some(v)
            }))));
        }
        writer.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
    }
    writer.close()?;
    Ok(())
}
