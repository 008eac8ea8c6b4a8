//! Telemetry Parquet written by PMI or by other tools (pyarrow, DuckDB, Polars).
//!
//! Accepted: a file or a folder (recursively `*.parquet`, in path order; names starting with
//! `.` or `_` are skipped); `vehicle_id` as any string type (utf8, large, view, dictionary);
//! `ts` as a timestamp of any unit and time zone (taken as UTC) or int64 milliseconds; any
//! subset of the sensor columns, as any numeric type (missing columns are null); other
//! columns are ignored and never read (projection). Work is split by row group.
//!
//! Validation is column-wise: a row that passes every check becomes a [`Telemetry`]
//! directly; any other row goes through [`Validator::validate`], so the rejection and its
//! reason are exactly those of every other source.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use pmi_core::{
    EventTime, RawReading, Rejected, Sensor, SensorValues, Telemetry, Validator, VehicleId,
    SENSOR_COUNT,
};

/// Errors reading telemetry Parquet; each names the file (and column).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not Parquet, or corrupt.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// A column is missing or of a type that cannot be read.
    #[error("{path}: column `{column}`: {message}")]
    Column {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// No Parquet files at the path.
    #[error("{0}: no .parquet files found")]
    Empty(String),
}

impl ReadError {
    /// Bad input files are the user's to fix; I/O may be transient.
    pub fn class(&self) -> pmi_core::ErrorClass {
        match self {
            ReadError::Io { .. } => pmi_core::ErrorClass::External,
            _ => pmi_core::ErrorClass::User,
        }
    }
}

/// One row group of one file: the unit of parallel work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Index of the file in [`TelemetryFiles::files`].
    pub file: usize,
    /// Row group within the file.
    pub row_group: usize,
    /// Rows in it.
    pub rows: usize,
    /// Number of the unit's first row in its file.
    pub first_row: usize,
}

#[derive(Clone, Debug)]
struct FileInfo {
    path: PathBuf,
    /// Root column indices: vehicle_id, ts, then present sensors.
    projection: Vec<usize>,
}

/// The files of a telemetry dataset and their row groups.
#[derive(Clone, Debug)]
pub struct TelemetryFiles {
    files: Vec<FileInfo>,
    units: Vec<Unit>,
}

fn list(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            list(&p, out)?;
        } else if name.ends_with(".parquet") {
            out.push(p);
        }
    }
    Ok(())
}

fn readable(dt: &DataType) -> bool {
    dt.is_numeric() || matches!(dt, DataType::Boolean)
}

impl TelemetryFiles {
    /// Lists the files under `path` and checks their columns.
    pub fn open(path: &Path) -> Result<TelemetryFiles, ReadError> {
        let mut paths = Vec::new();
        list(path, &mut paths)?;
        if paths.is_empty() {
            return Err(ReadError::Empty(path.display().to_string()));
        }
        let mut files = Vec::new();
        let mut units = Vec::new();
        for p in paths {
            let name = p.display().to_string();
            let f = File::open(&p).map_err(|source| ReadError::Io {
                path: name.clone(),
                source,
            })?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|source| {
                ReadError::Parquet {
                    path: name.clone(),
                    source,
                }
            })?;
            let schema = builder.schema().clone();
            let col = |column: &str| -> Result<(usize, DataType), ReadError> {
                schema
                    .index_of(column)
                    .map(|i| (i, schema.field(i).data_type().clone()))
                    .map_err(|_| ReadError::Column {
                        path: name.clone(),
                        column: column.into(),
                        message: "missing".into(),
                    })
            };
            let (vi, vt) = col("vehicle_id")?;
            let string_like = |dt: &DataType| {
                matches!(
                    dt,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            };
            let ok_id =
                string_like(&vt) || matches!(&vt, DataType::Dictionary(_, v) if string_like(v));
            if !ok_id {
                return Err(ReadError::Column {
                    path: name,
                    column: "vehicle_id".into(),
                    message: format!("type {vt} is not a string type"),
                });
            }
            let (ti, tt) = col("ts")?;
            if !matches!(tt, DataType::Timestamp(_, _) | DataType::Int64) {
                return Err(ReadError::Column {
                    path: name,
                    column: "ts".into(),
                    message: format!("type {tt}: expected a timestamp or int64 milliseconds"),
                });
            }
            let mut projection = vec![vi, ti];
            for s in Sensor::ALL {
                if let Ok(i) = schema.index_of(s.name()) {
                    let dt = schema.field(i).data_type();
                    if !readable(dt) {
                        return Err(ReadError::Column {
                            path: name,
                            column: s.name().into(),
                            message: format!("type {dt} is not numeric"),
                        });
                    }
                    projection.push(i);
                }
            }
            let meta = builder.metadata();
            let mut first_row = 0;
            for (rg, g) in meta.row_groups().iter().enumerate() {
                let rows = g.num_rows() as usize;
                units.push(Unit {
                    file: files.len(),
                    row_group: rg,
                    rows,
                    first_row,
                });
                first_row += rows;
            }
            files.push(FileInfo {
                path: p,
                projection,
            });
        }
        Ok(TelemetryFiles { files, units })
    }

    /// All row groups, in file and row order.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// Total rows.
    pub fn rows(&self) -> usize {
        self.units.iter().map(|u| u.rows).sum()
    }

    /// Path of file `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].path
    }

    fn read(
        &self,
        unit: &Unit,
        keys_only: bool,
        mut each: impl FnMut(&RecordBatch, usize) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let info = &self.files[unit.file];
        let name = info.path.display().to_string();
        let f = File::open(&info.path).map_err(|source| ReadError::Io {
            path: name.clone(),
            source,
        })?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(f).map_err(|source| ReadError::Parquet {
                path: name.clone(),
                source,
            })?;
        let cols = if keys_only {
            &info.projection[..2]
        } else {
            &info.projection[..]
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), cols.iter().copied());
        let reader = builder
            .with_row_groups(vec![unit.row_group])
            .with_projection(mask)
            .with_batch_size(16 * 1024)
            .build()
            .map_err(|source| ReadError::Parquet {
                path: name.clone(),
                source,
            })?;
        let mut row = unit.first_row;
        for batch in reader {
            let batch = batch.map_err(|e| ReadError::Parquet {
                path: name.clone(),
                source: e.into(),
            })?;
            each(&batch, row)?;
            row += batch.num_rows();
        }
        Ok(())
    }

    /// Calls `f(vehicle_id, ts_ms)` for every row of `unit` (`None` where null), reading only
    /// the two key columns. Used to find the input's layout.
    pub fn scan_keys(
        &self,
        unit: &Unit,
        mut f: impl FnMut(Option<&str>, Option<i64>),
    ) -> Result<(), ReadError> {
        let path = self.files[unit.file].path.display().to_string();
        self.read(unit, true, |batch, _| {
            let (ids, ts) = key_columns(batch, &path)?;
            let ids = ids.as_string::<i32>();
            let ts = ts.as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                f(
                    ids.is_valid(i).then(|| ids.value(i)),
                    ts.is_valid(i).then(|| ts.value(i)),
                );
            }
            Ok(())
        })
    }

    /// Decodes and validates `unit`: valid rows to `ok`, the others to `rejected` (with
    /// `origin = file#row=N`).
    pub fn read_unit(
        &self,
        unit: &Unit,
        validator: &Validator,
        now: EventTime,
        interner: &mut VehicleInterner,
        ok: &mut Vec<Telemetry>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), ReadError> {
        let path = self.files[unit.file].path.display().to_string();
        self.read(unit, false, |batch, first_row| {
            let (ids, ts) = key_columns(batch, &path)?;
            let ids = ids.as_string::<i32>();
            let ts = ts.as_primitive::<Int64Type>();
            let mut sensors: Vec<Option<arrow::array::ArrayRef>> = vec![None; SENSOR_COUNT];
            for s in Sensor::ALL {
                if let Some(c) = batch.column_by_name(s.name()) {
                    let c = cast(c, &DataType::Float64).map_err(|e| ReadError::Column {
                        path: path.clone(),
                        column: s.name().into(),
                        message: e.to_string(),
                    })?;
                    sensors[s.index()] = Some(c);
                }
            }
            let floats: Vec<Option<&arrow::array::PrimitiveArray<Float64Type>>> = sensors
                .iter()
                .map(|c| c.as_ref().map(|a| a.as_primitive::<Float64Type>()))
                .collect();
            let max_ts = now.0.saturating_add(validator.max_future_ms);
            for i in 0..batch.num_rows() {
                let mut values = [None; SENSOR_COUNT];
                for (k, col) in floats.iter().enumerate() {
                    if let Some(col) = col.filter(|c| c.is_valid(i)) {
                        values[k] = Some(col.value(i));
                    }
                }
                let id = if ids.is_valid(i) {
                    interner.get(ids.value(i))
                } else {
                    None
                };
                let t = ts.is_valid(i).then(|| ts.value(i));
                let checked = SensorValues::new(values);
                match (id, t, checked) {
                    (Some(vehicle_id), Some(t), Some(values)) if t >= 0 && t <= max_ts => {
                        ok.push(Telemetry {
                            vehicle_id,
                            ts: EventTime(t),
                            values,
                        });
                    }
                    _ => {
                        let raw = RawReading {
                            vehicle_id: ids.is_valid(i).then(|| ids.value(i).to_owned()),
                            ts: t,
                            values,
                            origin: Some(format!("{path}#row={}", first_row + i)),
                        };
                        match validator.validate(raw, now) {
                            Ok(t) => ok.push(t), // cannot happen: the checks above are the same
                            Err(r) => rejected.push(r),
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

/// `vehicle_id` as utf8 and `ts` as int64 milliseconds.
fn key_columns(
    batch: &RecordBatch,
    path: &str,
) -> Result<(arrow::array::ArrayRef, arrow::array::ArrayRef), ReadError> {
    let err = |column: &str, e: arrow::error::ArrowError| ReadError::Column {
        path: path.into(),
        column: column.into(),
        message: e.to_string(),
    };
    let ids = cast(batch.column(0), &DataType::Utf8).map_err(|e| err("vehicle_id", e))?;
    let ts = batch.column(1);
    let ts = match ts.data_type() {
        DataType::Int64 => ts.clone(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Arc::new(
            ts.as_primitive::<TimestampMillisecondType>()
                .reinterpret_cast::<Int64Type>(),
        ) as arrow::array::ArrayRef,
        DataType::Timestamp(_, _) => {
            let ms = cast(ts, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(|e| err("ts", e))?;
            Arc::new(
                ms.as_primitive::<TimestampMillisecondType>()
                    .reinterpret_cast::<Int64Type>(),
            )
        }
        other => {
            return Err(ReadError::Column {
                path: path.into(),
                column: "ts".into(),
                message: format!("type {other}"),
            })
        }
    };
    Ok((ids, ts))
}

/// Maps id text to shared [`VehicleId`]s, so repeated ids are parsed and allocated once.
/// Invalid ids map to `None` (the row then goes through full validation for its reason).
#[derive(Default)]
pub struct VehicleInterner {
    ids: HashMap<String, Option<VehicleId>>,
}

impl VehicleInterner {
    /// The id for `text`, if valid.
    pub fn get(&mut self, text: &str) -> Option<VehicleId> {
        if let Some(id) = self.ids.get(text) {
            return id.clone();
        }
        let id = VehicleId::parse(text).ok();
        if self.ids.len() < 10_000_000 {
            self.ids.insert(text.to_owned(), id.clone());
        }
        id
    }
}

#[cfg(test)]
mod tests;
