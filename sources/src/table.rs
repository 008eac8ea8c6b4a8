//! Labelled tables from an operator's own systems (CSV or Parquet) as a [`Dataset`].
//!
//! Numeric columns (integers, floats, booleans) are features, except the label and the
//! optional group, time and split columns; other columns are ignored and listed in the
//! result. Empty cells and `na`/`NA`/`NaN`/`null` are missing. The label column's values are
//! negative when empty, `0`, `false`, `no`, `none`, `normal` or `healthy` (any case);
//! every other value is a positive class of its own name (so `1` is a single class, and
//! component names give one class per component).
//!
//! The same reader reads the tables PMI exports (`pmi train --export`), whose `split`
//! column lets another tool train and test on exactly PMI's split.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pmi_models::dataset::{Dataset, Split};

/// Which columns play which part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableColumns {
    /// The label column (required).
    pub label: String,
    /// Rows of one group stay in one split part (e.g. a vehicle id column).
    pub group: Option<String>,
    /// Event time, ms since the epoch or a timestamp column (for lead times).
    pub time: Option<String>,
    /// A column of `train` / `valid` / `test` fixing the split.
    pub split: Option<String>,
    /// Columns that are not features even if numeric.
    pub ignore: Vec<String>,
}

/// A table read.
#[derive(Debug)]
pub struct Table {
    /// The rows.
    pub dataset: Dataset,
    /// The split the table fixes, when it has a split column.
    pub split: Option<Split>,
    /// Columns ignored (not numeric).
    pub ignored: Vec<String>,
}

/// A table that cannot be read as asked; names the file and the column.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TableError {
    /// The file.
    pub path: String,
    /// What is wrong (naming the column).
    pub message: String,
}

const NEGATIVE: [&str; 8] = ["", "0", "false", "no", "none", "normal", "healthy", "0.0"];
const MISSING: [&str; 5] = ["", "na", "nan", "null", "n/a"];

/// Reads `path` (`.csv` or `.parquet`).
pub fn read_table(path: &Path, cols: &TableColumns) -> Result<Table, TableError> {
    let batches = read_batches(path).map_err(|message| TableError {
        path: path.display().to_string(),
        message,
    })?;
    table_of(&path.display().to_string(), batches, cols)
}

/// Reads a table at a path or an object store URL (`s3://bucket/…/table.parquet`, or a
/// prefix of Parquet objects read as one table).
pub fn read_table_at(location: &str, cols: &TableColumns) -> Result<Table, TableError> {
    if !crate::store::Store::is_remote(location) {
        return read_table(Path::new(location), cols);
    }
    let mut batches = Vec::new();
    for (name, bytes) in remote(location)? {
        batches.extend(parquet_bytes(&name, bytes)?);
    }
    table_of(location, batches, cols)
}

fn remote(location: &str) -> Result<Vec<(String, bytes::Bytes)>, TableError> {
    let objects = crate::store::fetch_parquet(location).map_err(|e| TableError {
        path: location.to_owned(),
        message: e.to_string(),
    })?;
    if objects.is_empty() {
        return Err(TableError {
            path: location.to_owned(),
            message: "no .parquet objects".into(),
        });
    }
    Ok(objects)
}

fn parquet_bytes(name: &str, bytes: bytes::Bytes) -> Result<Vec<RecordBatch>, TableError> {
    let err = |e: parquet::errors::ParquetError| TableError {
        path: name.to_owned(),
        message: e.to_string(),
    };
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(err)?
        .map(|b| b.map_err(|e| err(e.into())))
        .collect()
}

fn table_of(
    name: &str,
    batches: Vec<RecordBatch>,
    cols: &TableColumns,
) -> Result<Table, TableError> {
    let err = |message: String| TableError {
        path: name.to_owned(),
        message,
    };
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| err("the table has no rows".into()))?;
    let find = |name: &str, what: &str| -> Result<usize, TableError> {
        schema.index_of(name).map_err(|_| {
            err(format!(
                "no {what} column `{name}` (columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    let label_i = find(&cols.label, "label")?;
    let group_i = cols
        .group
        .as_deref()
        .map(|g| find(g, "group"))
        .transpose()?;
    let time_i = cols.time.as_deref().map(|t| find(t, "time")).transpose()?;
    let split_i = cols
        .split
        .as_deref()
        .map(|s| find(s, "split"))
        .transpose()?;
    let special = [Some(label_i), group_i, time_i, split_i];
    let mut features = Vec::new();
    let mut ignored = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if special.contains(&Some(i)) {
            continue;
        }
        if cols.ignore.contains(f.name()) {
            ignored.push(f.name().clone());
        } else if f.data_type().is_numeric() || *f.data_type() == DataType::Boolean {
            features.push(i);
        } else {
            ignored.push(f.name().clone());
        }
    }
    if features.is_empty() {
        return Err(err("no numeric feature columns".into()));
    }
    let mut ds = Dataset {
        feature_names: features
            .iter()
            .map(|i| schema.field(*i).name().clone())
            .collect(),
        ..Default::default()
    };
    let mut classes: BTreeMap<String, u16> = BTreeMap::new();
    let mut parts: Vec<u8> = Vec::new();
    let mut row_base = 0usize;
    for batch in &batches {
        let n = batch.num_rows();
        let numeric: Vec<Arc<dyn Array>> = features
            .iter()
            .map(|i| {
                cast(batch.column(*i), &DataType::Float64).map_err(|e| {
                    err(format!(
                        "column `{}` is not numeric: {e}",
                        schema.field(*i).name()
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        for r in 0..n {
            for a in &numeric {
                let a = a.as_primitive::<Float64Type>();
                ds.values
                    .push(if a.is_null(r) { f64::NAN } else { a.value(r) });
            }
        }
        let labels = text(batch.column(label_i)).map_err(|e| err(format!("label: {e}")))?;
        for v in labels {
            let v = v.unwrap_or_default();
            let t = v.trim();
            ds.labels
                .push(if NEGATIVE.contains(&t.to_ascii_lowercase().as_str()) {
                    None
                } else {
                    let next = classes.len() as u16;
                    Some(*classes.entry(t.to_owned()).or_insert(next))
                });
        }
        match group_i {
            Some(g) => {
                for v in text(batch.column(g)).map_err(|e| err(format!("group: {e}")))? {
                    let g = ds.group(v.as_deref().unwrap_or(""));
                    ds.groups.push(g);
                }
            }
            None => {
                // Each row its own group: the split is by row.
                for r in 0..n {
                    ds.groups.push((row_base + r) as u32);
                }
            }
        }
        match time_i {
            Some(t) => {
                let a = cast(batch.column(t), &DataType::Int64)
                    .map_err(|e| err(format!("time column: {e}")))?;
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                for r in 0..n {
                    ds.times.push(if a.is_null(r) { 0 } else { a.value(r) });
                }
            }
            None => ds.times.extend(std::iter::repeat_n(0, n)),
        }
        if let Some(s) = split_i {
            for v in text(batch.column(s)).map_err(|e| err(format!("split: {e}")))? {
                parts.push(match v.as_deref().map(str::trim) {
                    Some("train") => 0,
                    Some("valid") | Some("validation") => 1,
                    Some("test") => 2,
                    other => {
                        return Err(err(format!(
                            "split column: `{}` at row {} is not train, valid or test",
                            other.unwrap_or(""),
                            ds.labels.len()
                        )))
                    }
                });
            }
        }
        row_base += n;
    }
    // Classes in order of their first index (stable names).
    let mut names = vec![String::new(); classes.len()];
    for (name, i) in classes {
        names[i as usize] = name;
    }
    ds.classes = names;
    if ds.classes.is_empty() {
        return Err(err(format!(
            "label column `{}` has no positive rows",
            cols.label
        )));
    }
    ds.validate().map_err(|e| err(e.to_string()))?;
    let split = split_i.map(|_| {
        let mut s = Split::default();
        for (r, p) in parts.iter().enumerate() {
            match p {
                0 => s.train.push(r),
                1 => s.valid.push(r),
                _ => s.test.push(r),
            }
        }
        s
    });
    Ok(Table {
        dataset: ds,
        split,
        ignored,
    })
}

/// A column's values as text (numbers formatted), `None` for nulls.
fn text(a: &Arc<dyn Array>) -> Result<Vec<Option<String>>, String> {
    let s = cast(a, &DataType::Utf8).map_err(|e| e.to_string())?;
    let s = s.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| (!s.is_null(i)).then(|| s.value(i).to_owned()))
        .collect())
}

fn read_batches(path: &Path) -> Result<Vec<RecordBatch>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file = File::open(path).map_err(|e| e.to_string())?;
    match ext.as_deref() {
        Some("parquet") | Some("pq") => ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| e.to_string())?
            .map(|b| b.map_err(|e| e.to_string()))
            .collect(),
        Some("csv") => {
            let null = regex_of_missing();
            let format = arrow::csv::reader::Format::default()
                .with_header(true)
                .with_null_regex(null);
            let (schema, _) = format
                .infer_schema(File::open(path).map_err(|e| e.to_string())?, Some(10_000))
                .map_err(|e| format!("reading the header: {e}"))?;
            let schema: Arc<Schema> = Arc::new(schema);
            arrow::csv::ReaderBuilder::new(schema)
                .with_format(format)
                .with_batch_size(8192)
                .build(file)
                .map_err(|e| e.to_string())?
                .map(|b| b.map_err(|e| e.to_string()))
                .collect()
        }
        _ => Err("a table is a .csv or a .parquet file".into()),
    }
}

fn regex_of_missing() -> regex::Regex {
    let alternatives: Vec<String> = MISSING.iter().map(|m| m.to_string()).collect();
    regex::Regex::new(&format!("(?i)^({})$", alternatives.join("|"))).expect("a valid regex")
}

/// Reads ground truth written by `pmi simulate` (or by an operator in the same layout:
/// `vehicle_id`, `component` (a PMI component name), `onset`, `failure` as timestamps or ms
/// since the epoch) from a Parquet file or a folder of them, or from an object store URL
/// (`s3://bucket/prefix/ground_truth/`).
pub fn read_ground_truth(location: &str) -> Result<Vec<pmi_core::FailureEvent>, TableError> {
    let err = |p: &str, message: String| TableError {
        path: p.to_owned(),
        message,
    };
    let mut files: Vec<(String, Vec<RecordBatch>)> = Vec::new();
    if crate::store::Store::is_remote(location) {
        for (name, bytes) in remote(location)? {
            let batches = parquet_bytes(&name, bytes)?;
            files.push((name, batches));
        }
    } else {
        let path = Path::new(location);
        let paths =
            crate::parquet_in::parquet_files(path).map_err(|e| err(location, e.to_string()))?;
        if paths.is_empty() {
            return Err(err(location, "no .parquet files".into()));
        }
        for p in paths {
            let name = p.display().to_string();
            let batches = read_batches(&p).map_err(|e| err(&name, e))?;
            files.push((name, batches));
        }
    }
    let mut out = Vec::new();
    for (file, batches) in files {
        let file = file.as_str();
        for batch in batches {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| err(file, format!("no column `{name}`")))
            };
            let ids =
                text(col("vehicle_id")?).map_err(|e| err(file, format!("vehicle_id: {e}")))?;
            let comps =
                text(col("component")?).map_err(|e| err(file, format!("component: {e}")))?;
            let times = |name: &str| -> Result<Vec<i64>, TableError> {
                let a = cast(col(name)?, &DataType::Int64)
                    .map_err(|e| err(file, format!("{name}: {e}")))?;
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                (0..a.len())
                    .map(|i| {
                        (!a.is_null(i))
                            .then(|| a.value(i))
                            .ok_or_else(|| err(file, format!("{name}: null at row {i}")))
                    })
                    .collect()
            };
            let (onsets, failures) = (times("onset")?, times("failure")?);
            for i in 0..batch.num_rows() {
                let id = ids[i].as_deref().unwrap_or("");
                let vehicle_id = pmi_core::VehicleId::parse(id)
                    .map_err(|e| err(file, format!("vehicle_id at row {i}: {e}")))?;
                let name = comps[i].as_deref().unwrap_or("");
                let component = pmi_core::Component::from_name(name).ok_or_else(|| {
                    err(
                        file,
                        format!("component at row {i}: unknown component `{name}`"),
                    )
                })?;
                out.push(pmi_core::FailureEvent {
                    vehicle_id,
                    component,
                    onset: pmi_core::EventTime(onsets[i]),
                    failure: pmi_core::EventTime(failures[i]),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_missing_cells_text_columns_and_class_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(
            &p,
            "unit,temp,pressure,site,failure\nA,90,300,north,\nA,na,280,north,oil\nB,95,,south,cooling\nB,91,NA,south,0\n",
        )
        .unwrap();
        let t = read_table(
            &p,
            &TableColumns {
                label: "failure".into(),
                group: Some("unit".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let ds = &t.dataset;
        assert_eq!(ds.feature_names, vec!["temp", "pressure"]);
        assert_eq!(t.ignored, vec!["site"]);
        assert_eq!(ds.classes, vec!["oil", "cooling"]);
        assert_eq!(ds.labels, vec![None, Some(0), Some(1), None]);
        assert_eq!(ds.groups, vec![0, 0, 1, 1]);
        assert!(ds.row(1)[0].is_nan() && ds.row(2)[1].is_nan() && ds.row(3)[1].is_nan());
        assert_eq!(ds.row(0), &[90.0, 300.0]);

        let e = read_table(
            &p,
            &TableColumns {
                label: "broken".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no label column `broken`"), "{e}");
        let e = read_table(&dir.path().join("t.txt"), &TableColumns::default()).unwrap_err();
        assert!(e.to_string().contains("t.txt"), "{e}");
    }
}
