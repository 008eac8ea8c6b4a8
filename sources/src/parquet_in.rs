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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataSuffixFetch, ParquetRecordBatchStreamBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::statistics::Statistics;

use crate::store::{Store, StoreError};

use pmi_core::{
    CheckedColumns, EventTime, RawReading, Rejected, Sensor, SensorValues, Telemetry, Validator,
    VehicleId, SENSOR_COUNT,
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
    /// The object store failed or its URL is wrong.
    #[error("{0}")]
    Store(String),
}

impl ReadError {
    /// Bad input files are the user's to fix; I/O may be transient.
    pub fn class(&self) -> pmi_core::ErrorClass {
        match self {
            ReadError::Io { .. } | ReadError::Store(_) => pmi_core::ErrorClass::External,
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

/// Where a file is.
#[derive(Clone, Debug)]
enum FileSource {
    Local(PathBuf),
    Object { store: Store, path: ObjectPath },
}

#[derive(Clone, Debug)]
struct FileInfo {
    source: FileSource,
    /// For messages: the path or URL.
    name: String,
    /// The footer, read once.
    metadata: ArrowReaderMetadata,
    /// Root column indices: vehicle_id, ts, then present sensors.
    projection: Vec<usize>,
}

/// A span of event time to read: `from_ms ≤ ts < to_ms` (either end open). Files in Hive
/// `date=YYYY-MM-DD` folders outside it are not opened, row groups whose `ts` statistics
/// lie outside it are not read, and rows outside it are skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// First ms included.
    pub from_ms: Option<i64>,
    /// First ms excluded.
    pub to_ms: Option<i64>,
}

impl TimeRange {
    /// Whether `ts` lies in the range.
    pub fn contains(&self, ts: i64) -> bool {
        self.from_ms.is_none_or(|f| ts >= f) && self.to_ms.is_none_or(|t| ts < t)
    }
    /// Whether `[min, max]` (ms) may hold a time in the range.
    fn overlaps(&self, min: i64, max: i64) -> bool {
        self.from_ms.is_none_or(|f| max >= f) && self.to_ms.is_none_or(|t| min < t)
    }
    fn is_all(&self) -> bool {
        self.from_ms.is_none() && self.to_ms.is_none()
    }
    /// Whether a path with a `date=YYYY-MM-DD` segment may hold rows in the range
    /// (a path without one may).
    fn admits_path(&self, path: &str) -> bool {
        for segment in path.split('/') {
            if let Some(date) = segment.strip_prefix("date=") {
                if let Ok(d) = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
                    let start = d
                        .and_hms_opt(0, 0, 0)
                        .expect("midnight exists")
                        .and_utc()
                        .timestamp_millis();
                    return self.overlaps(start, start + 86_400_000 - 1);
                }
            }
        }
        true
    }
}

/// The files of a telemetry dataset and their row groups.
#[derive(Clone, Debug)]
pub struct TelemetryFiles {
    files: Vec<FileInfo>,
    units: Vec<Unit>,
    range: TimeRange,
}

/// The `*.parquet` files at `path`: the file itself, or every one under the folder
/// (recursively, in path order; names starting with `.` or `_` are skipped).
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    list(path, &mut out)?;
    Ok(out)
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
        } else if name.ends_with(".parquet") && !p.to_string_lossy().contains('#') {
            out.push(p);
        }
    }
    Ok(())
}

fn readable(dt: &DataType) -> bool {
    dt.is_numeric() || matches!(dt, DataType::Boolean)
}

/// Parquet's async reader over one object: ranged GETs (the footer by a suffix request).
/// Written here, as parquet's own example does, since its `ParquetObjectReader` is
/// deprecated in favour of exactly this.
struct ObjectReader {
    store: Arc<dyn object_store::ObjectStore>,
    path: ObjectPath,
}

impl ObjectReader {
    fn new(store: &Store, path: &ObjectPath) -> Self {
        ObjectReader {
            store: store.inner().clone(),
            path: path.clone(),
        }
    }
}

fn object_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        use futures::FutureExt;
        use object_store::ObjectStoreExt;
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(object_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        use futures::FutureExt;
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(object_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        use futures::FutureExt;
        async move {
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut ObjectReader {
    fn fetch_suffix(
        &mut self,
        suffix: usize,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        use futures::FutureExt;
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Suffix(suffix as u64)),
            ..Default::default()
        };
        async move {
            let got = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(object_err)?;
            got.bytes().await.map_err(object_err)
        }
        .boxed()
    }
}

/// Milliseconds of a `ts` column's statistics value in the column's unit.
fn to_ms(value: i64, unit: Option<TimeUnit>) -> i64 {
    match unit {
        Some(TimeUnit::Second) => value.saturating_mul(1000),
        Some(TimeUnit::Microsecond) => value.div_euclid(1000),
        Some(TimeUnit::Nanosecond) => value.div_euclid(1_000_000),
        Some(TimeUnit::Millisecond) | None => value,
    }
}

impl TelemetryFiles {
    /// Lists the files under `path` (a file or a folder) and checks their columns.
    pub fn open(path: &Path) -> Result<TelemetryFiles, ReadError> {
        Self::open_local(path, TimeRange::default())
    }

    /// Opens telemetry at a path or URL (`s3://bucket/prefix/`, see [`Store`]), only what
    /// lies in `range`.
    pub fn open_url(url: &str, range: TimeRange) -> Result<TelemetryFiles, ReadError> {
        if !Store::is_remote(url) {
            return Self::open_local(Path::new(url.strip_prefix("file://").unwrap_or(url)), range);
        }
        let store_err = |e: StoreError| ReadError::Store(e.to_string());
        let store = Store::open(url).map_err(store_err)?;
        let mut objects = Vec::new();
        for meta in store.list().map_err(store_err)? {
            let rel = meta.location.as_ref();
            let skipped = rel
                .split('/')
                .any(|part| part.starts_with('.') || part.starts_with('_'));
            if !skipped && rel.ends_with(".parquet") && range.admits_path(rel) {
                objects.push(meta);
            }
        }
        if objects.is_empty() {
            // Perhaps the URL names one object rather than a prefix.
            if url.ends_with(".parquet") {
                let root = Store::open(&url[..url.rfind('/').unwrap_or(0)]).map_err(store_err)?;
                let name = &url[url.rfind('/').map_or(0, |i| i + 1)..];
                let meta = root.head(&root.object(name)).map_err(store_err)?;
                return Self::build(
                    vec![(
                        FileSource::Object {
                            store: root.clone(),
                            path: meta.location.clone(),
                        },
                        root.describe(&meta.location),
                    )],
                    range,
                    url,
                );
            }
            return Err(ReadError::Empty(url.to_owned()));
        }
        let sources = objects
            .into_iter()
            .map(|meta| {
                let name = store.describe(&meta.location);
                (
                    FileSource::Object {
                        store: store.clone(),
                        path: meta.location,
                    },
                    name,
                )
            })
            .collect();
        Self::build(sources, range, url)
    }

    fn open_local(path: &Path, range: TimeRange) -> Result<TelemetryFiles, ReadError> {
        let mut paths = Vec::new();
        list(path, &mut paths)?;
        let sources = paths
            .into_iter()
            .filter(|p| range.admits_path(&p.to_string_lossy()))
            .map(|p| {
                let name = p.display().to_string();
                (FileSource::Local(p), name)
            })
            .collect();
        Self::build(sources, range, &path.display().to_string())
    }

    fn footer(source: &FileSource, name: &str) -> Result<ArrowReaderMetadata, ReadError> {
        let perr = |source| ReadError::Parquet {
            path: name.to_owned(),
            source,
        };
        match source {
            FileSource::Local(p) => {
                let f = File::open(p).map_err(|source| ReadError::Io {
                    path: name.to_owned(),
                    source,
                })?;
                ArrowReaderMetadata::load(&f, ArrowReaderOptions::default()).map_err(perr)
            }
            FileSource::Object { store, path } => {
                let mut reader = ObjectReader::new(store, path);
                Store::block_on(ArrowReaderMetadata::load_async(
                    &mut reader,
                    ArrowReaderOptions::default(),
                ))
                .map_err(perr)
            }
        }
    }

    fn build(
        sources: Vec<(FileSource, String)>,
        range: TimeRange,
        what: &str,
    ) -> Result<TelemetryFiles, ReadError> {
        if sources.is_empty() {
            return Err(ReadError::Empty(what.to_owned()));
        }
        let mut files = Vec::new();
        let mut units = Vec::new();
        for (source, name) in sources {
            let metadata = Self::footer(&source, &name)?;
            let schema = metadata.schema().clone();
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
            let ts_unit = match &tt {
                DataType::Timestamp(unit, _) => Some(*unit),
                DataType::Int64 => None,
                _ => {
                    return Err(ReadError::Column {
                        path: name,
                        column: "ts".into(),
                        message: format!("type {tt}: expected a timestamp or int64 milliseconds"),
                    })
                }
            };
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
            // The leaf column of `ts` (a flat schema: its root index, but look it up).
            let ts_leaf = metadata
                .metadata()
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .position(|c| c.path().parts() == ["ts"]);
            let mut first_row = 0;
            for (rg, g) in metadata.metadata().row_groups().iter().enumerate() {
                let rows = g.num_rows() as usize;
                // Row-group pruning on the `ts` statistics, where the writer kept them.
                let keep = range.is_all()
                    || match ts_leaf.and_then(|i| g.column(i).statistics()) {
                        Some(Statistics::Int64(v)) => match (v.min_opt(), v.max_opt()) {
                            (Some(min), Some(max)) => {
                                range.overlaps(to_ms(*min, ts_unit), to_ms(*max, ts_unit))
                            }
                            _ => true,
                        },
                        _ => true,
                    };
                if keep {
                    units.push(Unit {
                        file: files.len(),
                        row_group: rg,
                        rows,
                        first_row,
                    });
                }
                first_row += rows;
            }
            let metadata =
                ids_as_dictionary(metadata, vi).map_err(|source| ReadError::Parquet {
                    path: name.clone(),
                    source,
                })?;
            files.push(FileInfo {
                source,
                name,
                metadata,
                projection,
            });
        }
        Ok(TelemetryFiles {
            files,
            units,
            range,
        })
    }

    /// All row groups, in file and row order.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// Total rows.
    pub fn rows(&self) -> usize {
        self.units.iter().map(|u| u.rows).sum()
    }

    /// Path or URL of file `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.files[i].name
    }

    /// The span of event time read.
    pub fn range(&self) -> TimeRange {
        self.range
    }

    fn read(
        &self,
        unit: &Unit,
        keys_only: bool,
        mut each: impl FnMut(&RecordBatch, usize) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let info = &self.files[unit.file];
        let name = &info.name;
        let perr = |source| ReadError::Parquet {
            path: name.clone(),
            source,
        };
        let cols = if keys_only {
            &info.projection[..2]
        } else {
            &info.projection[..]
        };
        let mask = ProjectionMask::roots(
            info.metadata.metadata().file_metadata().schema_descr(),
            cols.iter().copied(),
        );
        let mut row = unit.first_row;
        match &info.source {
            FileSource::Local(path) => {
                let f = File::open(path).map_err(|source| ReadError::Io {
                    path: name.clone(),
                    source,
                })?;
                let reader =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(f, info.metadata.clone())
                        .with_row_groups(vec![unit.row_group])
                        .with_projection(mask)
                        .with_batch_size(16 * 1024)
                        .build()
                        .map_err(perr)?;
                for batch in reader {
                    let batch = batch.map_err(|e| perr(e.into()))?;
                    each(&batch, row)?;
                    row += batch.num_rows();
                }
            }
            FileSource::Object { store, path } => {
                // The row group's projected column chunks are fetched in ranged GETs,
                // driven on the store's runtime (this is a reader thread, not a worker's
                // timely loop).
                let reader = ObjectReader::new(store, path);
                let batches: Vec<RecordBatch> = Store::block_on(async {
                    ParquetRecordBatchStreamBuilder::new_with_metadata(
                        reader,
                        info.metadata.clone(),
                    )
                    .with_row_groups(vec![unit.row_group])
                    .with_projection(mask)
                    .with_batch_size(16 * 1024)
                    .build()?
                    .try_collect()
                    .await
                })
                .map_err(perr)?;
                for batch in &batches {
                    each(batch, row)?;
                    row += batch.num_rows();
                }
            }
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
        let path = self.files[unit.file].name.clone();
        let range = self.range;
        self.read(unit, true, |batch, _| {
            let (ids, ts) = key_columns(batch, &path)?;
            let ids = IdColumn::new(&ids);
            let ts = ts.as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                if ts.is_valid(i) && !range.contains(ts.value(i)) {
                    continue;
                }
                f(ids.text(i), ts.is_valid(i).then(|| ts.value(i)));
            }
            Ok(())
        })
    }

    /// Decodes and validates `unit`: valid rows to `ok` (a `Vec`, or anything that takes
    /// them as they are decoded, such as a backfill's split by worker), the others to
    /// `rejected` (with `origin = file#row=N`).
    pub fn read_unit(
        &self,
        unit: &Unit,
        validator: &Validator,
        now: EventTime,
        interner: &mut VehicleInterner,
        ok: &mut impl Extend<Telemetry>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), ReadError> {
        let path = self.files[unit.file].name.clone();
        let range = self.range;
        let all = range.is_all();
        self.read(unit, false, |batch, first_row| {
            let (ids, ts) = key_columns(batch, &path)?;
            let ids = IdColumn::new(&ids);
            // A dictionary's distinct ids are checked once per batch, not per row.
            let interned: Vec<Option<VehicleId>> = ids
                .dictionary()
                .map(|t| t.and_then(|t| interner.get(t)))
                .collect();
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
            let mut accept = |t: Telemetry| ok.extend(Some(t));
            let id_of = |i: usize, interner: &mut VehicleInterner| match ids.key(i) {
                Some(k) => interned[k].clone(),
                None => ids.text(i).and_then(|t| interner.get(t)),
            };
            // Each row on its own: its values checked, its faults named if it is rejected.
            let one_row = |i: usize,
                           ok: &mut dyn FnMut(Telemetry),
                           rejected: &mut Vec<Rejected>,
                           interner: &mut VehicleInterner| {
                if !all && ts.is_valid(i) && !range.contains(ts.value(i)) {
                    return;
                }
                let mut values = [None; SENSOR_COUNT];
                for (k, col) in floats.iter().enumerate() {
                    if let Some(col) = col.filter(|c| c.is_valid(i)) {
                        values[k] = Some(col.value(i));
                    }
                }
                let id = id_of(i, interner);
                let t = ts.is_valid(i).then(|| ts.value(i));
                let checked = SensorValues::new(values);
                match (id, t, checked) {
                    (Some(vehicle_id), Some(t), Some(values)) if t >= 0 && t <= max_ts => {
                        ok(Telemetry {
                            vehicle_id,
                            ts: EventTime(t),
                            values,
                        });
                    }
                    _ => {
                        let raw = RawReading {
                            vehicle_id: ids.text(i).map(str::to_owned),
                            ts: t,
                            values,
                            origin: Some(format!("{path}#row={}", first_row + i)),
                        };
                        match validator.validate(raw, now) {
                            Ok(t) => ok(t), // cannot happen: the checks above are the same
                            Err(r) => rejected.push(r),
                        }
                    }
                }
            };
            // The usual batch: no null sensor value or time, every value in range, checked
            // a column at a time; then a row needs only its id and time checked.
            let rows = batch.num_rows();
            let checked = (ts.null_count() == 0
                && floats.iter().flatten().all(|c| c.null_count() == 0))
            .then(|| {
                CheckedColumns::new(
                    rows,
                    Sensor::ALL
                        .into_iter()
                        .zip(&floats)
                        .filter_map(|(s, c)| c.map(|c| (s, c.values().as_ref()))),
                )
            })
            .flatten();
            let Some(checked) = checked else {
                for i in 0..rows {
                    one_row(i, &mut accept, rejected, interner);
                }
                return Ok(());
            };
            let times = ts.values();
            for (i, &t) in times.iter().enumerate() {
                match id_of(i, interner) {
                    Some(vehicle_id) if t >= 0 && t <= max_ts && (all || range.contains(t)) => {
                        accept(Telemetry {
                            vehicle_id,
                            ts: EventTime(t),
                            values: checked.row(i),
                        });
                    }
                    _ => one_row(i, &mut accept, rejected, interner),
                }
            }
            Ok(())
        })
    }
}

/// The file's metadata with `vehicle_id` (at `index` in its Arrow schema) read as a
/// dictionary of strings where it is plain utf8: a fleet's ids repeat on every row, so the
/// reader then hands over each row group's distinct ids once (decoded from the file's own
/// dictionary when it has one) and keys per row.
fn ids_as_dictionary(
    metadata: ArrowReaderMetadata,
    index: usize,
) -> Result<ArrowReaderMetadata, parquet::errors::ParquetError> {
    let schema = metadata.schema();
    if schema.field(index).data_type() != &DataType::Utf8 {
        return Ok(metadata);
    }
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
    fields[index] = Arc::new(
        fields[index]
            .as_ref()
            .clone()
            .with_data_type(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8),
            )),
    );
    let hinted = arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone());
    ArrowReaderMetadata::try_new(
        metadata.metadata().clone(),
        ArrowReaderOptions::new().with_schema(Arc::new(hinted)),
    )
}

/// The `vehicle_id` column of a batch: a dictionary of utf8 (see [`ids_as_dictionary`]) or
/// plain utf8.
enum IdColumn<'a> {
    Dictionary(
        &'a arrow::array::DictionaryArray<arrow::datatypes::Int32Type>,
        &'a arrow::array::StringArray,
    ),
    Plain(&'a arrow::array::StringArray),
}

impl<'a> IdColumn<'a> {
    /// The column as [`key_columns`] returns it.
    fn new(ids: &'a arrow::array::ArrayRef) -> Self {
        match ids.as_dictionary_opt::<arrow::datatypes::Int32Type>() {
            Some(d) => IdColumn::Dictionary(d, d.values().as_string::<i32>()),
            None => IdColumn::Plain(ids.as_string::<i32>()),
        }
    }

    /// The values a [`Self::key`] names, in key order (none for plain strings).
    fn dictionary(&self) -> impl Iterator<Item = Option<&'a str>> {
        let values = match self {
            IdColumn::Dictionary(_, values) => Some(values.iter()),
            IdColumn::Plain(_) => None,
        };
        values.into_iter().flatten()
    }

    /// Row `i`'s dictionary key (`None`: null, or not a dictionary).
    fn key(&self, i: usize) -> Option<usize> {
        match self {
            IdColumn::Dictionary(d, _) => d.is_valid(i).then(|| d.keys().value(i) as usize),
            IdColumn::Plain(_) => None,
        }
    }

    /// Row `i`'s id text (`None` where null).
    fn text(&self, i: usize) -> Option<&'a str> {
        match self {
            IdColumn::Dictionary(d, values) => d
                .is_valid(i)
                .then(|| values.value(d.keys().value(i) as usize)),
            IdColumn::Plain(ids) => ids.is_valid(i).then(|| ids.value(i)),
        }
    }
}

/// `vehicle_id` as utf8 (or the dictionary of utf8 [`ids_as_dictionary`] asks for) and
/// `ts` as int64 milliseconds.
fn key_columns(
    batch: &RecordBatch,
    path: &str,
) -> Result<(arrow::array::ArrayRef, arrow::array::ArrayRef), ReadError> {
    let err = |column: &str, e: arrow::error::ArrowError| ReadError::Column {
        path: path.into(),
        column: column.into(),
        message: e.to_string(),
    };
    let ids = match batch.column(0).data_type() {
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            batch.column(0).clone()
        }
        _ => cast(batch.column(0), &DataType::Utf8).map_err(|e| err("vehicle_id", e))?,
    };
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

/// Maps id text to checked [`VehicleId`]s, so repeated ids are parsed once.
/// Invalid ids map to `None` (the row then goes through full validation for its reason).
/// Looked up once per row, so hashed with ahash (with SipHash the lookups were a third of
/// the reader threads' instructions in `pmi bench`).
#[derive(Default)]
pub struct VehicleInterner {
    ids: ahash::AHashMap<String, Option<VehicleId>>,
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
