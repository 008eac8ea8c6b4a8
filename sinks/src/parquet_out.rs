//! Parquet datasets: `<root>/<dataset>/date=YYYY-MM-DD/part-<writer>-<seq>.parquet`, in a
//! local folder or an S3-compatible object store ([`Store`]: one URL chooses).
//!
//! Columns follow DESIGN.md so that any engine reads them: `vehicle_id` (utf8), `ts` or
//! `pane_end` (timestamp ms, UTC), one float64 column per sensor or feature (null where
//! absent). Rows are partitioned Hive-style by the UTC date of their time, buffered per
//! date and written as a record batch every `batch_rows`; a file is rolled after
//! `max_rows_per_file`. Files appear whole when their upload completes, so readers never
//! see half a file: in an object store, a put or a completed multipart upload through
//! `object_store`; in a local folder, a rename of a hidden temporary file written with
//! direct I/O (`local_file`).
//!
//! Transactional mode (for at-least-once sources that replay, see `dataflows::sink`):
//! completed files wait in `<dataset>/_staging/` and a checkpoint publishes them; a
//! per-writer marker (the manifest) records the checkpoint's token and the files it
//! publishes, written before they move, so a restart rolls an interrupted publication
//! forward and the graph drops its replay of what the marker covers: no duplicate file and
//! no duplicate row.
//! Compression is Snappy (fast, read everywhere); dictionary encoding is on for
//! `vehicle_id` only (it does nothing for floats but cost time).
//!
//! [`BackgroundWriter`] runs a dataset writer on its own thread behind a bounded channel:
//! a full channel blocks the sender, which is backpressure, not a growing buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use pmi_core::{
    FailureEvent, FeatureBatch, FeatureSchema, Prediction, RawReading, Rejected, Rows, Sensor,
    Telemetry,
};

use pmi_sources::store::{Store, StoreError};

use crate::local_file::{AlignedBuf, LocalUpload};
use crate::{ChunkSink, SinkError, SinkStats};

/// How a record type becomes Arrow columns.
pub trait RowLayout<R>: Send + 'static {
    /// The Arrow schema (with any key-value metadata).
    fn schema(&self) -> SchemaRef;
    /// Columns for `rows`, in schema order.
    fn columns(&self, rows: &[R]) -> Vec<ArrayRef>;
    /// The row's time in ms (its `ts` or `pane_end`), which picks its date partition.
    fn time(&self, row: &R) -> Option<i64>;
    /// Columns written without min/max statistics: values no reader prunes a scan by,
    /// whose statistics would only cost the writer time (default: none).
    fn unpruned_columns(&self) -> Vec<String> {
        Vec::new()
    }
}

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

fn ts_array(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter(values).with_timezone("UTC"))
}

fn f64_array(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}

fn str_array<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn sensor_fields(nullable_ok: bool) -> impl Iterator<Item = Field> {
    Sensor::ALL
        .into_iter()
        .map(move |s| Field::new(s.name(), DataType::Float64, nullable_ok))
}

/// Validated readings: `vehicle_id`, `ts`, the 14 sensors.
pub struct TelemetryLayout;

impl RowLayout<Telemetry> for TelemetryLayout {
    fn time(&self, row: &Telemetry) -> Option<i64> {
        Some(row.ts.0)
    }
    fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            ts_field("ts", false),
        ];
        fields.extend(sensor_fields(true));
        Arc::new(Schema::new(fields))
    }
    fn columns(&self, rows: &[Telemetry]) -> Vec<ArrayRef> {
        let mut cols = vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            ts_array(rows.iter().map(|r| Some(r.ts.0))),
        ];
        for s in Sensor::ALL {
            cols.push(f64_array(rows.iter().map(|r| r.values.get(s))));
        }
        cols
    }
}

/// Raw readings as vehicles sent them (the simulator's output): any field may be missing
/// or invalid; `origin` kept.
pub struct RawLayout;

impl RowLayout<RawReading> for RawLayout {
    fn time(&self, row: &RawReading) -> Option<i64> {
        row.ts
    }
    fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, true),
            ts_field("ts", true),
        ];
        fields.extend(sensor_fields(true));
        Arc::new(Schema::new(fields))
    }
    fn columns(&self, rows: &[RawReading]) -> Vec<ArrayRef> {
        let mut cols = vec![
            str_array(rows.iter().map(|r| r.vehicle_id.as_deref())),
            ts_array(rows.iter().map(|r| r.ts)),
        ];
        for s in Sensor::ALL {
            cols.push(f64_array(rows.iter().map(|r| r.values[s.index()])));
        }
        cols
    }
}

/// Feature vectors: `vehicle_id`, `pane_end`, one column per feature name. The schema
/// version, fingerprint and names are in the file's key-value metadata.
pub struct FeatureLayout {
    schema: SchemaRef,
    width: usize,
}

impl FeatureLayout {
    /// Layout for vectors of `features`.
    pub fn new(features: &FeatureSchema) -> Self {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            ts_field("pane_end", false),
        ];
        fields.extend(
            features
                .names()
                .iter()
                .map(|n| Field::new(n, DataType::Float64, true)),
        );
        let metadata: std::collections::HashMap<String, String> = [
            (
                "pmi.feature_schema_version".to_owned(),
                features.version.to_string(),
            ),
            (
                "pmi.feature_schema_fingerprint".to_owned(),
                format!("{:016x}", features.fingerprint()),
            ),
        ]
        .into_iter()
        .collect();
        FeatureLayout {
            schema: Arc::new(Schema::new_with_metadata(fields, metadata)),
            width: features.len(),
        }
    }
}

impl RowLayout<FeatureBatch> for FeatureLayout {
    fn time(&self, batch: &FeatureBatch) -> Option<i64> {
        Some(batch.pane_end().0)
    }
    /// The feature columns: scans are pruned by `vehicle_id` and `pane_end` (and the date
    /// partition), which keep their statistics; min/max of hundreds of feature columns
    /// took about a twentieth of the writer's time.
    fn unpruned_columns(&self) -> Vec<String> {
        self.schema.fields()[2..]
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    /// The batches' columns, NaN (absent) as null: a batch's own columns (Arrow buffers,
    /// no copy) when there is one batch, else each column's parts one after the other.
    fn columns(&self, batches: &[FeatureBatch]) -> Vec<ArrayRef> {
        let n: usize = batches.iter().map(FeatureBatch::rows).sum();
        let mut cols = vec![
            str_array(
                batches
                    .iter()
                    .flat_map(|b| b.vehicles().iter().map(|v| Some(v.as_str()))),
            ),
            ts_array(
                batches
                    .iter()
                    .flat_map(|b| std::iter::repeat_n(Some(b.pane_end().0), b.rows())),
            ),
        ];
        for f in 0..self.width {
            let column = match batches {
                [b] => b.column_buffer(f),
                _ => {
                    let mut column = Vec::with_capacity(n);
                    for b in batches {
                        column.extend_from_slice(b.column(f));
                    }
                    ScalarBuffer::from(column)
                }
            };
            // Most feature columns have no null: one scan decides.
            let nulls = pmi_core::any_nan(&column)
                .then(|| NullBuffer::new(BooleanBuffer::collect_bool(n, |j| !column[j].is_nan())));
            cols.push(Arc::new(Float64Array::new(column, nulls)));
        }
        cols
    }
}

/// Predictions: `vehicle_id`, `pane_end`, `risk`, `severity`, `component`, `model`,
/// `explanation` (reasons joined with "; ").
pub struct PredictionLayout;

impl RowLayout<Prediction> for PredictionLayout {
    fn time(&self, row: &Prediction) -> Option<i64> {
        Some(row.pane_end.0)
    }
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            ts_field("pane_end", false),
            Field::new("risk", DataType::Float64, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("component", DataType::Utf8, true),
            Field::new("model", DataType::Utf8, false),
            Field::new("explanation", DataType::Utf8, false),
        ]))
    }
    fn columns(&self, rows: &[Prediction]) -> Vec<ArrayRef> {
        let explanations: Vec<String> = rows.iter().map(|r| r.explanation.join("; ")).collect();
        vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            ts_array(rows.iter().map(|r| Some(r.pane_end.0))),
            f64_array(rows.iter().map(|r| Some(r.risk))),
            str_array(rows.iter().map(|r| Some(r.severity.name()))),
            str_array(rows.iter().map(|r| r.component.map(|c| c.name()))),
            str_array(rows.iter().map(|r| Some(&*r.model))),
            str_array(explanations.iter().map(|e| Some(e.as_str()))),
        ]
    }
}

/// Dead letters: the raw reading, the field at fault, the reason code and message, origin.
pub struct RejectedLayout;

impl RowLayout<Rejected> for RejectedLayout {
    fn time(&self, row: &Rejected) -> Option<i64> {
        row.reading.ts
    }
    fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("vehicle_id", DataType::Utf8, true),
            ts_field("ts", true),
        ];
        fields.extend(sensor_fields(true));
        fields.extend([
            Field::new("field", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
            Field::new("origin", DataType::Utf8, true),
        ]);
        Arc::new(Schema::new(fields))
    }
    fn columns(&self, rows: &[Rejected]) -> Vec<ArrayRef> {
        let mut cols =
            RawLayout.columns(&rows.iter().map(|r| r.reading.clone()).collect::<Vec<_>>());
        let messages: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        cols.push(str_array(rows.iter().map(|r| Some(r.field.as_str()))));
        cols.push(str_array(rows.iter().map(|r| Some(r.code()))));
        cols.push(str_array(messages.iter().map(|m| Some(m.as_str()))));
        cols.push(str_array(rows.iter().map(|r| r.reading.origin.as_deref())));
        cols
    }
}

/// Ground truth: `vehicle_id`, `component`, `onset`, `failure`.
pub struct GroundTruthLayout;

impl RowLayout<FailureEvent> for GroundTruthLayout {
    fn time(&self, row: &FailureEvent) -> Option<i64> {
        Some(row.onset.0)
    }
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("vehicle_id", DataType::Utf8, false),
            Field::new("component", DataType::Utf8, false),
            ts_field("onset", false),
            ts_field("failure", false),
        ]))
    }
    fn columns(&self, rows: &[FailureEvent]) -> Vec<ArrayRef> {
        vec![
            str_array(rows.iter().map(|r| Some(r.vehicle_id.as_str()))),
            str_array(rows.iter().map(|r| Some(r.component.name()))),
            ts_array(rows.iter().map(|r| Some(r.onset.0))),
            ts_array(rows.iter().map(|r| Some(r.failure.0))),
        ]
    }
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    /// Rows per record batch: pushed records are buffered until they make this many, then
    /// written together (default 8192; a wide schema's batches hold at most about a
    /// million values, see [`BATCH_VALUES`]). A record that alone makes this many rows is
    /// written on its own, which for a [`FeatureBatch`] hands its columns over without a
    /// copy (see [`FEATURE_BATCH_ROWS`]).
    pub batch_rows: usize,
    /// Rows per file before a new one is started (default 1,000,000).
    pub max_rows_per_file: usize,
    /// Hive-style partitions by the UTC date of each row's time (`date=YYYY-MM-DD/`;
    /// rows without a time in `date=__HIVE_DEFAULT_PARTITION__/`). Default on.
    pub partition_by_date: bool,
    /// Transactional: completed files stay in the dataset's `_staging/` folder until the
    /// next checkpoint publishes them and records the checkpoint's token in this marker
    /// (an object name relative to the root store), so that what is visible is exactly
    /// what was sent before a checkpoint (see `dataflows::sink`). `None`: files appear as
    /// they are completed.
    pub checkpoint_marker: Option<String>,
    /// In a local store, write files with direct I/O, around the page cache (see
    /// `local_file`); where the file system refuses it, files are written as usual. Default
    /// on. No effect on an object store.
    pub direct_io: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            batch_rows: 8192,
            max_rows_per_file: 1_000_000,
            partition_by_date: true,
            checkpoint_marker: None,
            direct_io: true,
        }
    }
}

impl DatasetOptions {
    /// The defaults with the feature datasets' batching ([`FEATURE_BATCH_ROWS`]).
    pub fn features() -> Self {
        DatasetOptions {
            batch_rows: FEATURE_BATCH_ROWS,
            ..DatasetOptions::default()
        }
    }
}

/// [`DatasetOptions::batch_rows`] for features: a pane end's batch of a few hundred
/// vehicles or more is written as it comes, its columns handed to Parquet without a copy;
/// the batches of a small fleet are gathered into record batches of at least this many rows
/// (each write has a cost per column, hundreds of them).
pub const FEATURE_BATCH_ROWS: usize = 256;

/// Values per record batch at most, whatever `batch_rows` says: rows wait unencoded until a
/// batch is full, so a wide schema (hundreds of features) with thousands of rows per batch
/// would leave much of its encoding for the end of the input.
pub const BATCH_VALUES: usize = 1 << 20;

/// Encoded bytes a row group may reach before it is written out (see `ParquetDataset::new`).
const ROW_GROUP_BYTES: usize = 32 << 20;

/// Files open at once per dataset writer (one per date partition being written); the
/// least recently written is completed when another partition needs one.
const MAX_OPEN_FILES: usize = 4;

const DAY_MS: i64 = 86_400_000;
/// Partition of rows without a time (Hive's name for a null partition value).
const NO_DATE: i64 = i64::MIN;

/// `date=YYYY-MM-DD` for a day number since the epoch.
fn partition_name(day: i64) -> String {
    if day == NO_DATE {
        return "date=__HIVE_DEFAULT_PARTITION__".into();
    }
    match chrono::DateTime::from_timestamp_millis(day.saturating_mul(DAY_MS)) {
        Some(t) => format!("date={}", t.date_naive().format("%Y-%m-%d")),
        None => "date=__HIVE_DEFAULT_PARTITION__".into(),
    }
}

/// The records of one day waiting for a full batch.
struct DayBuffer<R> {
    records: Vec<R>,
    /// Rows they make.
    rows: usize,
}

impl<R> Default for DayBuffer<R> {
    fn default() -> Self {
        DayBuffer {
            records: Vec::new(),
            rows: 0,
        }
    }
}

/// Where an open file's bytes go.
enum Upload {
    /// To an object store: each chunk is handed to `object_store`'s writer as it is
    /// (`BufWriter::put`: no copy; as an `AsyncWrite` the chunk would be copied into its
    /// buffer first).
    Object(BufWriter),
    /// To a local file, written by the dataset writer's thread (with direct I/O where it
    /// can be), each chunk's buffer reused once written.
    Local(LocalUpload),
}

impl Upload {
    /// Hands `full` chunks on, in order; a local file's written chunks go back to `chunks`
    /// for reuse.
    fn append(&mut self, full: Vec<AlignedBuf>, chunks: &mut Chunks) -> std::io::Result<()> {
        match self {
            Upload::Object(upload) => Store::block_on(async move {
                for chunk in full {
                    upload.put(Bytes::from_owner(chunk)).await?;
                }
                Ok(())
            }),
            Upload::Local(upload) => {
                for mut chunk in full {
                    upload.append(&mut chunk)?;
                    chunks.recycle(chunk);
                }
                Ok(())
            }
        }
    }

    /// Completes the upload: the file appears, whole.
    fn complete(self) -> std::io::Result<()> {
        match self {
            Upload::Object(mut upload) => {
                Store::block_on(tokio::io::AsyncWriteExt::shutdown(&mut upload))
            }
            Upload::Local(upload) => upload.complete().map(drop),
        }
    }

    /// Removes what an unfinished upload wrote: nothing becomes visible, and no multipart
    /// upload or temporary file is left behind.
    fn abort(self) -> Result<(), String> {
        match self {
            Upload::Object(mut upload) => {
                Store::block_on(upload.abort()).map_err(|e| e.to_string())
            }
            Upload::Local(upload) => upload.abort().map_err(|e| e.to_string()),
        }
    }
}

struct OpenFile {
    /// The encoder, writing into chunks that go to `upload` as they fill.
    writer: ArrowWriter<Chunks>,
    /// The file's upload; `None` once completed.
    upload: Option<Upload>,
    /// Where it is written: the final name, or a staging name in transactional mode.
    written: ObjectPath,
    /// Where it is published.
    path: ObjectPath,
    rows: usize,
    /// Write counter value at the last write (for closing the least recently used).
    used: u64,
}

impl OpenFile {
    /// Writes `batch`, uploading the chunks it filled.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.writer.write(batch)?;
        self.upload(false)
    }

    /// Writes the footer and completes the upload: the object appears, whole, only now (a
    /// single put, or the completion of a multipart upload; a rename from a temporary file
    /// locally).
    fn finish(&mut self) -> Result<(), SinkError> {
        self.writer.finish()?;
        self.upload(true)
    }

    /// Uploads the chunks the encoder has filled; with `last`, the partial one too, and
    /// completes the upload.
    fn upload(&mut self, last: bool) -> Result<(), SinkError> {
        let chunks = self.writer.inner_mut();
        let full = chunks.take(last);
        if full.is_empty() && !last {
            return Ok(());
        }
        let failed = |e: std::io::Error| SinkError::Store(e.to_string());
        let upload = self.upload.as_mut().expect("an open file's upload");
        upload.append(full, chunks).map_err(failed)?;
        if !last {
            return Ok(());
        }
        let upload = self.upload.take().expect("an open file's upload");
        upload.complete().map_err(failed)
    }
}

/// Encoded bytes handed to the upload at a time.
const CHUNK_BYTES: usize = 4 << 20;

/// The encoder's output, cut into chunks of [`CHUNK_BYTES`], block-aligned for direct I/O
/// (`local_file`). Each chunk's buffer is allocated at its full size once and never grows;
/// a local file's chunks are reused once written, an object store's dropped once uploaded
/// (below the allocator's mmap threshold, `src/allocator.rs` of the binary, so their memory
/// is reused from the heap). (Parquet's own async writer gathers each row group, up to
/// [`ROW_GROUP_BYTES`], in one buffer grown by doubling: the copies of every growth, and
/// fresh pages for every row group.)
#[derive(Default)]
struct Chunks {
    filling: Option<AlignedBuf>,
    full: Vec<AlignedBuf>,
    /// Written chunks' buffers, for reuse.
    spare: Vec<AlignedBuf>,
}

impl Chunks {
    /// The full chunks, and with `all` the partial one too, in the order written.
    fn take(&mut self, all: bool) -> Vec<AlignedBuf> {
        if all {
            if let Some(partial) = self.filling.take().filter(|c| !c.is_empty()) {
                self.full.push(partial);
            }
        }
        std::mem::take(&mut self.full)
    }

    /// Keeps a written chunk's buffer for the next chunks.
    fn recycle(&mut self, mut chunk: AlignedBuf) {
        chunk.clear();
        self.spare.push(chunk);
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            let spare = &mut self.spare;
            let filling = self.filling.get_or_insert_with(|| {
                spare
                    .pop()
                    .unwrap_or_else(|| AlignedBuf::with_capacity(CHUNK_BYTES))
            });
            let n = filling.remaining().min(data.len());
            filling.extend_from_slice(&data[..n]);
            data = &data[n..];
            if filling.remaining() == 0 {
                self.full.extend(self.filling.take());
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A dataset writer (synchronous; see [`BackgroundWriter`] for use from a worker). Writes
/// through `object_store` to a local folder or an S3-compatible store ([`Store`]); its
/// calls block the calling thread, which is the writer's own.
pub struct ParquetDataset<R, L: RowLayout<R>> {
    root: Store,
    dir: Store,
    writer_id: String,
    layout: L,
    schema: SchemaRef,
    props: WriterProperties,
    options: DatasetOptions,
    /// Records waiting for a full batch, per day.
    buffers: BTreeMap<i64, DayBuffer<R>>,
    /// Open files, per day.
    files: BTreeMap<i64, OpenFile>,
    /// Completed files awaiting a checkpoint (transactional mode): staged and final names.
    pending: Vec<(ObjectPath, ObjectPath)>,
    seq: u32,
    writes: u64,
    stats: SinkStats,
}

fn store_err(e: StoreError) -> SinkError {
    SinkError::Store(e.to_string())
}

impl<R: Rows, L: RowLayout<R>> ParquetDataset<R, L> {
    /// A dataset in the folder `dataset` of `root`; file names carry `writer_id`.
    pub fn new(
        root: &Store,
        dataset: &str,
        writer_id: &str,
        layout: L,
        options: DatasetOptions,
    ) -> Result<Self, SinkError> {
        if let Some(marker) = &options.checkpoint_marker {
            recover(root, marker)?;
        }
        let schema = layout.schema();
        let mut options = options;
        options.batch_rows = options
            .batch_rows
            .min((BATCH_VALUES / schema.fields().len().max(1)).max(1024));
        let mut props = WriterProperties::builder();
        for column in layout.unpruned_columns() {
            props = props.set_column_statistics_enabled(column.into(), EnabledStatistics::None);
        }
        let props = props
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled("vehicle_id".into(), true)
            .set_max_row_group_row_count(Some(options.batch_rows.max(65_536)))
            // A row group is held in memory, encoded, until it is complete: bounded in
            // bytes, a wide schema's output streams out as it is written instead of
            // piling up for the end of the file.
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            // Schema metadata also as plain Parquet key-value metadata, for any engine.
            .set_key_value_metadata(Some(
                schema
                    .metadata()
                    .iter()
                    .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        Ok(ParquetDataset {
            root: root.clone(),
            dir: root.child(dataset),
            writer_id: writer_id.to_owned(),
            schema,
            props,
            layout,
            options,
            buffers: BTreeMap::new(),
            files: BTreeMap::new(),
            pending: Vec::new(),
            seq: 0,
            writes: 0,
            stats: SinkStats::default(),
        })
    }

    fn day(&self, row: &R) -> i64 {
        if !self.options.partition_by_date {
            return 0;
        }
        self.layout
            .time(row)
            .map_or(NO_DATE, |t| t.div_euclid(DAY_MS))
    }

    /// The Parquet writer settings of the dataset's files (codec, statistics, encodings,
    /// row group bounds).
    pub fn writer_properties(&self) -> &WriterProperties {
        &self.props
    }

    /// Buffers records, writing a batch whenever a day's records reach `batch_rows` rows.
    pub fn push(&mut self, records: Vec<R>) -> Result<(), SinkError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let d0 = self.day(first);
        if records.iter().all(|r| self.day(r) == d0) {
            // The common case: one day per chunk.
            let rows: usize = records.iter().map(Rows::rows).sum();
            let buffer = self.buffers.entry(d0).or_default();
            buffer.rows += rows;
            if buffer.records.is_empty() {
                buffer.records = records;
            } else {
                buffer.records.extend(records);
            }
        } else {
            for r in records {
                let (day, rows) = (self.day(&r), r.rows());
                let buffer = self.buffers.entry(day).or_default();
                buffer.rows += rows;
                buffer.records.push(r);
            }
        }
        let batch_rows = self.options.batch_rows;
        let full: Vec<i64> = self
            .buffers
            .iter()
            .filter(|(_, b)| b.rows >= batch_rows)
            .map(|(d, _)| *d)
            .collect();
        for day in full {
            let mut buffer = self.buffers.remove(&day).unwrap_or_default();
            // Full batches are written from slices, and the written prefix removed once
            // (splitting the vector per batch would copy the rest each time).
            let (mut start, mut rows, mut written) = (0, 0, 0);
            for end in 0..buffer.records.len() {
                rows += buffer.records[end].rows();
                if rows >= batch_rows {
                    self.write(day, &buffer.records[start..=end], rows)?;
                    (start, written, rows) = (end + 1, written + rows, 0);
                }
            }
            buffer.rows -= written;
            buffer.records.drain(..start);
            if !buffer.records.is_empty() {
                self.buffers.insert(day, buffer);
            }
        }
        Ok(())
    }

    fn open(&mut self, day: i64) -> Result<(), SinkError> {
        if self.files.len() >= MAX_OPEN_FILES {
            if let Some(lru) = self
                .files
                .iter()
                .min_by_key(|(_, f)| f.used)
                .map(|(d, _)| *d)
            {
                self.finish_file(lru)?;
            }
        }
        let name = format!("part-{}-{:05}.parquet", self.writer_id, self.seq);
        self.seq += 1;
        let path = if self.options.partition_by_date {
            self.dir.object(&format!("{}/{name}", partition_name(day)))
        } else {
            self.dir.object(&name)
        };
        let written = if self.options.checkpoint_marker.is_some() {
            // Not `*.parquet`, under `_`: no reader or glob picks up a staged file.
            self.dir.object(&format!("_staging/{name}.staged"))
        } else {
            path.clone()
        };
        let upload = match self.dir.local_file(&written) {
            Some(file) => {
                let upload = LocalUpload::create(&file, self.options.direct_io)
                    .map_err(|e| SinkError::Store(format!("{}: {e}", file.display())))?;
                if self.options.direct_io && !upload.is_direct() {
                    tracing::debug!(file = %file.display(), "no direct I/O on this file system; writing through the page cache");
                }
                Upload::Local(upload)
            }
            None => Upload::Object(BufWriter::new(self.dir.inner().clone(), written.clone())),
        };
        let writer = ArrowWriter::try_new(
            Chunks::default(),
            self.schema.clone(),
            Some(self.props.clone()),
        )?;
        self.files.insert(
            day,
            OpenFile {
                writer,
                upload: Some(upload),
                written,
                path,
                rows: 0,
                used: 0,
            },
        );
        Ok(())
    }

    /// Writes `records`, which make `rows` rows, as one record batch of `day`'s file.
    fn write(&mut self, day: i64, records: &[R], rows: usize) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        if !self.files.contains_key(&day) {
            self.open(day)?;
        }
        let batch = RecordBatch::try_new(self.schema.clone(), self.layout.columns(records))?;
        self.writes += 1;
        let file = self.files.get_mut(&day).expect("opened above");
        file.used = self.writes;
        file.write(&batch)?;
        file.rows += rows;
        self.stats.rows += rows as u64;
        if file.rows >= self.options.max_rows_per_file {
            self.finish_file(day)?;
        }
        Ok(())
    }

    fn finish_file(&mut self, day: i64) -> Result<(), SinkError> {
        if let Some(mut f) = self.files.remove(&day) {
            f.finish()?;
            self.stats.files += 1;
            self.stats.bytes += f.writer.bytes_written() as u64;
            if self.options.checkpoint_marker.is_some() {
                self.pending.push((f.written, f.path));
            }
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), SinkError> {
        for (day, buffer) in std::mem::take(&mut self.buffers) {
            self.write(day, &buffer.records, buffer.rows)?;
        }
        let days: Vec<i64> = self.files.keys().copied().collect();
        for day in days {
            self.finish_file(day)?;
        }
        Ok(())
    }

    /// Writes everything pushed so far into completed, visible files and records `token`
    /// in the checkpoint marker (transactional mode; otherwise only completes the files).
    pub fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        self.flush_all()?;
        let pending = std::mem::take(&mut self.pending);
        if let Some(marker) = &self.options.checkpoint_marker {
            // Intent first: the marker names the files this checkpoint publishes, so a crash
            // between the marker and the renames is rolled forward at the next start
            // (`recover`), and one before the marker leaves only staged files.
            write_marker(&self.root, marker, token, &pending)?;
        }
        for (staged, path) in pending {
            publish(&self.dir, &staged, &path)?;
        }
        Ok(())
    }

    /// Writes what is buffered, completes the files and reports. In transactional mode what
    /// came after the last checkpoint is discarded (a replay writes it again; the graph
    /// takes a last checkpoint at the end of its input, so normally there is none).
    pub fn close(mut self) -> Result<SinkStats, SinkError> {
        if self.options.checkpoint_marker.is_none() {
            self.checkpoint(u64::MAX)?;
            return Ok(self.stats);
        }
        let unsaved = self.buffers.values().map(|b| b.rows).sum::<usize>()
            + self.files.values().map(|f| f.rows).sum::<usize>();
        if unsaved > 0 || !self.pending.is_empty() {
            tracing::warn!(
                dataset = %self.dir.url(),
                rows = unsaved,
                "closing without a checkpoint: discarding rows a replay writes again"
            );
        }
        for (_, f) in std::mem::take(&mut self.files) {
            // An unfinished upload is aborted: nothing becomes visible, and no multipart
            // upload or temporary file is left behind.
            let Some(upload) = f.upload else { continue };
            if let Err(e) = upload.abort() {
                tracing::warn!(file = %self.dir.describe(&f.written), error = %e, "could not abort an unfinished upload");
            }
        }
        for (staged, _) in self.pending.drain(..) {
            self.dir.delete(&staged).map_err(store_err)?;
        }
        Ok(self.stats)
    }
}

/// Makes a completed staged file visible under its final name.
fn publish(store: &Store, staged: &ObjectPath, path: &ObjectPath) -> Result<(), SinkError> {
    store.rename(staged, path).map_err(store_err)
}

/// Completes the publication of the last checkpoint recorded in the marker, if a crash
/// interrupted it: staged files it names that still exist are moved to their names.
fn recover(root: &Store, marker: &str) -> Result<(), SinkError> {
    let text = match root.get(&root.object(marker)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(store_err(e)),
    };
    for line in text.lines().skip(1) {
        let Some((staged, path)) = line.split_once('\t') else {
            continue;
        };
        let (staged, path) = (ObjectPath::from(staged), ObjectPath::from(path));
        match root.head(&staged) {
            Ok(_) => {
                tracing::info!(file = %root.describe(&path), "publishing a file of an interrupted checkpoint");
                publish(root, &staged, &path)?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(store_err(e)),
        }
    }
    Ok(())
}

/// Records a checkpoint token and the files it publishes (`staged\tfinal` object names per
/// line) in the object `marker` of `root`, atomically (one put).
pub fn write_marker(
    root: &Store,
    marker: &str,
    token: u64,
    files: &[(ObjectPath, ObjectPath)],
) -> Result<(), SinkError> {
    let mut text = format!("{token}\n");
    for (s, p) in files {
        text.push_str(&format!("{s}\t{p}\n"));
    }
    root.put(&root.object(marker), text.into())
        .map_err(store_err)
}

/// The token a checkpoint marker holds; `None` when there is no marker yet.
pub fn read_marker(root: &Store, marker: &str) -> Result<Option<u64>, SinkError> {
    match root.get(&root.object(marker)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| SinkError::Store(format!("checkpoint marker {marker}: {e}"))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(store_err(e)),
    }
}

/// A [`ParquetDataset`] on its own thread, fed through a bounded channel.
pub struct BackgroundWriter<R: Send + 'static> {
    name: String,
    tx: Option<SyncSender<Message<R>>>,
    thread: Option<JoinHandle<Result<SinkStats, SinkError>>>,
    /// Last checkpoint token made durable by the thread (0: none yet).
    durable: Arc<AtomicU64>,
    checkpoints: bool,
}

enum Message<R> {
    Rows(Vec<R>),
    Checkpoint(u64),
}

impl<R: Send + 'static> BackgroundWriter<R> {
    /// Starts the writer thread for `dataset` (a folder name under `root`).
    pub fn start<L: RowLayout<R>>(
        root: &Store,
        dataset: &str,
        writer_id: &str,
        layout: L,
        options: DatasetOptions,
    ) -> Result<Self, SinkError>
    where
        R: Rows,
    {
        let checkpoints = options.checkpoint_marker.is_some();
        let mut ds = ParquetDataset::new(root, dataset, writer_id, layout, options)?;
        let (tx, rx) = sync_channel::<Message<R>>(4);
        let durable = Arc::new(AtomicU64::new(0));
        let done = durable.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pmi-parquet-{dataset}-{writer_id}"))
            .spawn(move || {
                for message in rx {
                    match message {
                        Message::Rows(chunk) => ds.push(chunk)?,
                        Message::Checkpoint(token) => {
                            ds.checkpoint(token)?;
                            done.store(token, Ordering::Release);
                        }
                    }
                }
                ds.close()
            })
            .map_err(|source| SinkError::Io {
                path: dataset.to_owned(),
                source,
            })?;
        Ok(BackgroundWriter {
            name: dataset.to_owned(),
            tx: Some(tx),
            thread: Some(thread),
            durable,
            checkpoints,
        })
    }

    /// The thread ended early: its error.
    fn failure(&mut self) -> SinkError {
        self.join()
            .err()
            .unwrap_or_else(|| SinkError::Stopped(self.name.clone()))
    }

    fn join(&mut self) -> Result<SinkStats, SinkError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| SinkError::Stopped(self.name.clone()))?,
            None => Err(SinkError::Stopped(self.name.clone())),
        }
    }
}

impl<R: Send + 'static> ChunkSink<R> for BackgroundWriter<R> {
    fn send(&mut self, chunk: Vec<R>) -> Result<(), SinkError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| SinkError::Stopped(self.name.clone()))?;
        if tx.send(Message::Rows(chunk)).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }
    fn close(mut self: Box<Self>) -> Result<SinkStats, SinkError> {
        self.join()
    }
    fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        if !self.checkpoints {
            return Ok(());
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| SinkError::Stopped(self.name.clone()))?;
        if tx.send(Message::Checkpoint(token)).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }
    fn durable(&self) -> Result<Option<u64>, SinkError> {
        if !self.checkpoints {
            return Ok(None);
        }
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            // The thread ended early (an error): the next send reports it.
            return Err(SinkError::Stopped(self.name.clone()));
        }
        Ok(Some(self.durable.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use pmi_core::{Channel, EventTime, RawReading, Validator, SENSOR_COUNT};
    use std::fs::File;
    use std::path::{Path, PathBuf};

    /// Writes of every size, across chunk boundaries, come out as the same bytes in order,
    /// in chunks of at most `CHUNK_BYTES`, whenever they are taken, also when the buffers
    /// of taken chunks are reused.
    #[test]
    fn chunks_keep_every_byte_in_order() {
        use std::io::Write;
        let mut chunks = Chunks::default();
        let mut expected = Vec::new();
        let mut joined = Vec::new();
        let mut next = 0u8;
        let take = |chunks: &mut Chunks, all: bool, joined: &mut Vec<u8>| {
            for c in chunks.take(all) {
                assert!(!c.is_empty() && c.len() <= CHUNK_BYTES);
                joined.extend_from_slice(c.as_ref());
                chunks.recycle(c);
            }
        };
        for (i, len) in [1, 7, CHUNK_BYTES - 8, 0, 1, 3 * CHUNK_BYTES + 5, 100]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_mul(31).wrapping_add(7);
                    next
                })
                .collect();
            assert_eq!(chunks.write(&data).unwrap(), len);
            expected.extend_from_slice(&data);
            take(&mut chunks, i % 2 == 0 && i < 4, &mut joined);
        }
        take(&mut chunks, true, &mut joined);
        assert!(chunks.take(true).is_empty());
        assert!(
            !chunks.spare.is_empty(),
            "written chunks are kept for reuse"
        );
        assert_eq!(joined, expected);
    }

    /// Every file under `dir` (recursively, hidden and staged ones included), sorted.
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Every `*.parquet` file under `dir`, recursively, in path order.
    fn parquet_files(dir: &Path) -> Vec<PathBuf> {
        walk(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect()
    }

    /// Every file under `dir`, recursively, relative to it.
    fn all_files(dir: &Path) -> Vec<String> {
        walk(dir)
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    fn reading(i: i64) -> Telemetry {
        let mut values = [None; SENSOR_COUNT];
        values[Sensor::Rpm.index()] = Some(1000.0 + (i % 1000) as f64);
        Validator::default()
            .validate(
                RawReading::new("VEH_000001", i * 1000, values),
                EventTime(i64::MAX / 4),
            )
            .unwrap()
    }

    fn read_all(dir: &Path) -> Vec<RecordBatch> {
        parquet_files(dir)
            .iter()
            .flat_map(|p| {
                ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                    .unwrap()
                    .build()
                    .unwrap()
            })
            .map(|b| b.unwrap())
            .collect()
    }

    fn visible(dir: &Path) -> usize {
        read_all(dir).iter().map(|b| b.num_rows()).sum()
    }

    #[test]
    fn transactional_files_appear_only_at_checkpoints() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::local(root.path()).unwrap();
        let marker = "_checkpoints/telemetry";
        let options = DatasetOptions {
            batch_rows: 100,
            max_rows_per_file: 250,
            checkpoint_marker: Some(marker.into()),
            ..DatasetOptions::default()
        };
        let dir = root.path().join("telemetry");
        let mut w = Box::new(
            BackgroundWriter::start(&store, "telemetry", "0", TelemetryLayout, options).unwrap(),
        );
        assert_eq!(w.durable().unwrap(), Some(0));
        // Files are completed at 250 rows, but nothing is visible before a checkpoint.
        w.send((0..600).map(reading).collect()).unwrap();
        w.checkpoint(7).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while w.durable().unwrap() != Some(7) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(visible(&dir), 600);
        assert_eq!(read_marker(&store, marker).unwrap(), Some(7));
        // Rows after the last checkpoint are not published by a close (a replay rewrites
        // them), and no staged file is left behind.
        w.send((600..700).map(reading).collect()).unwrap();
        w.close().unwrap();
        assert_eq!(visible(&dir), 600);
        assert_eq!(read_marker(&store, marker).unwrap(), Some(7));
        let files = all_files(&dir);
        assert!(
            files
                .iter()
                .all(|f| f.starts_with("date=1970-01-01/part-0-") && f.ends_with(".parquet")),
            "{files:?}"
        );

        // A crash after the marker named a checkpoint's files but before they were moved:
        // the next start publishes them.
        let ds = store.child("telemetry");
        let staged = ds.object("_staging/part-x-00000.parquet.staged");
        let fin = ds.object("date=1970-01-01/part-x-00000.parquet");
        let copied = &parquet_files(&dir)[0];
        let copied_rows: usize =
            ParquetRecordBatchReaderBuilder::try_new(File::open(copied).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows() as usize;
        ds.put(&staged, std::fs::read(copied).unwrap().into())
            .unwrap();
        write_marker(&store, marker, 9, &[(staged.clone(), fin.clone())]).unwrap();
        let options = DatasetOptions {
            checkpoint_marker: Some(marker.into()),
            ..DatasetOptions::default()
        };
        ParquetDataset::new(&store, "telemetry", "1", TelemetryLayout, options).unwrap();
        assert!(dir.join("date=1970-01-01/part-x-00000.parquet").exists());
        assert!(ds.head(&staged).unwrap_err().is_not_found());
        assert_eq!(read_marker(&store, marker).unwrap(), Some(9));
        assert_eq!(visible(&dir), 600 + copied_rows);
    }

    #[test]
    fn telemetry_round_trips_with_nulls_in_bounded_files_atomically() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::local(root.path()).unwrap();
        let options = DatasetOptions {
            batch_rows: 100,
            max_rows_per_file: 250,
            ..DatasetOptions::default()
        };
        let mut w = Box::new(
            BackgroundWriter::start(&store, "telemetry", "0", TelemetryLayout, options).unwrap(),
        );
        w.send((0..1000).map(reading).collect()).unwrap();
        let stats = w.close().unwrap();
        assert_eq!((stats.rows, stats.files), (1000, 4));
        let names = all_files(&root.path().join("telemetry"));
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("date=1970-01-01/part-0-") && n.ends_with(".parquet")),
            "{names:?}"
        );
        let batches = read_all(&root.path().join("telemetry"));
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 1000);
        let b = &batches[0];
        let rpm = b
            .column_by_name("rpm")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(rpm.value(3), 1003.0);
        let oil = b.column_by_name("oil_temp_c").unwrap();
        assert_eq!(oil.null_count(), b.num_rows());
        assert!(
            matches!(b.schema().field_with_name("ts").unwrap().data_type(), DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if &**tz == "UTC")
        );
    }

    /// A file of many chunks, written around the page cache and through it: the same
    /// bytes, and no temporary file left.
    #[test]
    fn direct_and_buffered_files_are_the_same_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let readings: Vec<Telemetry> = (0..400_000)
            .map(|i| {
                let mut values = [None; SENSOR_COUNT];
                for v in values.iter_mut().take(6) {
                    // Incompressible values, so that the file spans several chunks.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *v = Some((x >> 11) as f64 / (1u64 << 53) as f64 * 100.0);
                }
                let raw = RawReading::new("VEH_000001", i * 1000, values);
                Validator::default()
                    .validate(raw, EventTime(i64::MAX / 4))
                    .unwrap()
            })
            .collect();
        let mut files = Vec::new();
        for direct_io in [true, false] {
            let root = tempfile::tempdir().unwrap();
            let store = Store::local(root.path()).unwrap();
            let options = DatasetOptions {
                partition_by_date: false,
                direct_io,
                ..DatasetOptions::default()
            };
            let mut ds =
                ParquetDataset::new(&store, "telemetry", "0", TelemetryLayout, options).unwrap();
            ds.push(readings.clone()).unwrap();
            let stats = ds.close().unwrap();
            assert_eq!(stats.files, 1);
            let all = walk(root.path());
            assert_eq!(all.len(), 1, "{all:?}");
            files.push(std::fs::read(&all[0]).unwrap());
        }
        assert!(files[0].len() > 3 * CHUNK_BYTES, "{} bytes", files[0].len());
        assert!(files[0] == files[1], "direct and buffered files differ");
        assert_eq!(read_all_bytes(&files[0]), 400_000);
    }

    fn read_all_bytes(file: &[u8]) -> usize {
        ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(file))
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum()
    }

    #[test]
    fn rows_go_to_the_partition_of_their_utc_date() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::local(root.path()).unwrap();
        let mut ds = ParquetDataset::new(
            &store,
            "telemetry",
            "w",
            TelemetryLayout,
            DatasetOptions::default(),
        )
        .unwrap();
        // Rows either side of midnight, interleaved in one chunk.
        let day = 86_400;
        let rows: Vec<Telemetry> = [day - 2, day + 1, day - 1, day + 2, 3 * day]
            .into_iter()
            .map(reading)
            .collect();
        ds.push(rows).unwrap();
        assert_eq!(ds.close().unwrap().rows, 5);
        let dir = root.path().join("telemetry");
        let files = all_files(&dir);
        assert_eq!(files.len(), 3, "{files:?}");
        let rows_in = |date: &str| -> usize {
            read_all(&dir.join(format!("date={date}")))
                .iter()
                .map(|b| b.num_rows())
                .sum()
        };
        assert_eq!(rows_in("1970-01-01"), 2);
        assert_eq!(rows_in("1970-01-02"), 2);
        assert_eq!(rows_in("1970-01-04"), 1);
    }

    /// Whether a pane end's batch is written on its own (its columns handed over) or
    /// gathered with others into one record batch, the rows come out as pushed.
    #[test]
    fn features_carry_schema_metadata_and_nulls() {
        for batch_rows in [DatasetOptions::default().batch_rows, 2] {
            features_written_with(DatasetOptions {
                batch_rows,
                ..DatasetOptions::default()
            });
        }
    }

    fn features_written_with(options: DatasetOptions) {
        let root = tempfile::tempdir().unwrap();
        let store = Store::local(root.path()).unwrap();
        let schema = FeatureSchema::new(vec![Channel::Sensor(Sensor::Rpm)], vec![60]);
        let mut ds = ParquetDataset::new(
            &store,
            "features",
            "1",
            FeatureLayout::new(&schema),
            options,
        )
        .unwrap();
        // Two pane ends' batches (rows of 7 features: count, mean, std, min, max, last,
        // slope); the first row of each has an empty window (count 0, the rest null).
        let batch = |pane_end: i64, ids: &[&str]| {
            let mut b =
                pmi_core::FeatureBatchBuilder::new(EventTime(pane_end), schema.fingerprint(), 7, 1);
            for (i, id) in ids.iter().enumerate() {
                let mut row = [f64::NAN; 7];
                row[0] = i as f64;
                if i > 0 {
                    row[1..].copy_from_slice(&[1.5 * i as f64, 0.0, 1.0, 2.0, 3.0, -0.25]);
                }
                b.push(pmi_core::VehicleId::parse(id).unwrap(), &row);
            }
            b.finish().unwrap()
        };
        ds.push(vec![batch(10_000, &["V1", "V2"])]).unwrap();
        ds.push(vec![batch(20_000, &["V1", "V2", "V3"])]).unwrap();
        let stats = ds.close().unwrap();
        assert_eq!(stats.rows, 5, "rows, not batches");
        let batches = read_all(&root.path().join("features"));
        let file = parquet_files(&root.path().join("features")).remove(0);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap()).unwrap();
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        let fp = kv
            .iter()
            .find(|k| k.key == "pmi.feature_schema_fingerprint")
            .unwrap();
        assert_eq!(
            fp.value.as_deref(),
            Some(format!("{:016x}", schema.fingerprint()).as_str())
        );
        // Scans are pruned by vehicle and time: those columns keep min/max statistics; the
        // feature columns are written without.
        let row_group = reader.metadata().row_group(0);
        for column in row_group.columns() {
            let name = column.column_path().string();
            let pruned = name == "vehicle_id" || name == "pane_end";
            assert_eq!(column.statistics().is_some(), pruned, "{name}");
        }
        // Row by row as pushed: the batches' columns one after the other.
        let column = |name: &str| -> Vec<Option<f64>> {
            batches
                .iter()
                .flat_map(|b| {
                    let c = b.column_by_name(name).unwrap();
                    let c = c.as_any().downcast_ref::<Float64Array>().unwrap();
                    c.iter().collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(column("rpm_count_60s"), [0.0, 1.0, 0.0, 1.0, 2.0].map(Some));
        assert_eq!(
            column("rpm_mean_60s"),
            [None, Some(1.5), None, Some(1.5), Some(3.0)]
        );
        assert_eq!(
            column("rpm_slope_60s"),
            [None, Some(-0.25), None, Some(-0.25), Some(-0.25)]
        );
        let ids: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("vehicle_id").unwrap();
                let c = c.as_any().downcast_ref::<StringArray>().unwrap();
                c.iter().map(|v| v.unwrap().to_owned()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids, ["V1", "V2", "V1", "V2", "V3"]);
        let ends: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("pane_end").unwrap();
                let c = c
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .unwrap();
                c.values().to_vec()
            })
            .collect();
        assert_eq!(ends, [10_000, 10_000, 20_000, 20_000, 20_000]);
    }

    #[test]
    fn empty_dataset_writes_no_file() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::local(root.path()).unwrap();
        let w = Box::new(
            BackgroundWriter::<Telemetry>::start(
                &store,
                "late",
                "0",
                TelemetryLayout,
                DatasetOptions::default(),
            )
            .unwrap(),
        );
        assert_eq!(w.close().unwrap().files, 0);
        assert!(
            !root.path().join("late").exists() || all_files(&root.path().join("late")).is_empty()
        );
    }
}
