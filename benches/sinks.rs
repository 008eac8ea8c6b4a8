//! Criterion benchmark of the feature Parquet sink: what writing one feature vector costs the
//! backfill's writer thread, on vectors a real window state computed from simulated
//! readings (8 sensors × 60/300/900 s, as in `pmi bench`), in batches of one pane of one
//! worker's vehicles, as the window operator hands them over. Throughput is vectors per
//! second.
//!
//! - `feature_parquet/dataset`: the sink as the graph runs it ([`ParquetDataset`] with the
//!   feature layout and options, into a temporary folder; direct I/O where the file system
//!   allows, so the time includes waiting for the writes).
//! - `feature_parquet/encode/*`: the same columns through a bare `ArrowWriter` whose bytes
//!   are discarded: the Parquet encoding alone, with the dataset's writer settings as they
//!   are (`snappy`) and without compression (`uncompressed`): against `dataset`, what the
//!   file and the sink's own work cost; against each other, what the codec costs.
//!
//! Run: `cargo bench --bench sinks` (add `-- --quick` for a short run).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use arrow::record_batch::RecordBatch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use pmi_core::{EventTime, FeatureBatch, FeatureBatchBuilder, Sensor, Validator, WindowConfig};
use pmi_operators::windows::{Scratch, VehicleWindows, WindowSpec};
use pmi_sinks::parquet_out::{DatasetOptions, FeatureLayout, ParquetDataset, RowLayout};
use pmi_sources::fleet::{Fleet, SimulatorConfig};
use pmi_sources::store::Store;

// The `pmi` binary's allocator settings, so that the writer is measured as it runs there.
#[path = "../src/allocator.rs"]
mod allocator;

/// One worker's share of `pmi bench`'s fleet.
const VEHICLES: u32 = 500;
/// Simulated span: the first 90 panes fill the longest window.
const SECONDS: usize = 1800;

/// The feature batches of `VEHICLES` simulated vehicles over `SECONDS`, one per pane end.
fn feature_batches() -> (WindowSpec, Vec<FeatureBatch>) {
    let config = WindowConfig {
        channels: Sensor::ALL[..8]
            .iter()
            .map(|s| s.name().to_owned())
            .collect(),
        ..WindowConfig::default()
    };
    let spec = WindowSpec::new(&config).expect("window spec");
    let mut fleet = Fleet::new(SimulatorConfig {
        vehicles: VEHICLES,
        ..SimulatorConfig::default()
    })
    .expect("fleet");
    let validator = Validator::default();
    let mut states: Vec<VehicleWindows> =
        (0..VEHICLES).map(|_| VehicleWindows::new(&spec)).collect();
    let mut ids = vec![None; VEHICLES as usize];
    let (mut scratch, mut values, mut dups) = (Scratch::default(), Vec::new(), Vec::new());
    let mut batches = Vec::new();
    let mut raw = Vec::new();
    // The next pane end to evaluate; a pane is evaluated once a whole tick lies after it.
    let mut next: Option<i64> = None;
    for _ in 0..SECONDS {
        raw.clear();
        fleet.tick(&mut raw);
        let mut oldest = i64::MAX;
        for (v, r) in raw.drain(..).enumerate() {
            let t = validator
                .validate(r, EventTime(i64::MAX / 2))
                .expect("simulated readings are valid by default");
            oldest = oldest.min(spec.pane_of(t.ts));
            ids[v] = Some(t.vehicle_id.clone());
            states[v].insert(&spec, t.ts, t.values).expect("in order");
        }
        let first = *next.get_or_insert(oldest);
        for p in first..oldest {
            let mut batch = FeatureBatchBuilder::new(
                spec.pane_end(p),
                spec.fingerprint(),
                spec.schema().len(),
                states.len(),
            );
            for (state, id) in states.iter_mut().zip(&ids) {
                if state.evaluate(&spec, p, &mut scratch, &mut values, &mut dups) {
                    batch.push(id.clone().expect("seen"), &values);
                }
            }
            batches.extend(batch.finish());
            next = Some(p + 1);
        }
    }
    (spec, batches)
}

fn bench(c: &mut Criterion) {
    // The C allocator as `pmi` sets it: without, every pane end's batch and page buffers
    // are faulted in afresh (the encoding measured about 13 % slower).
    allocator::tune();
    let (spec, batches) = feature_batches();
    let vectors: usize = batches.iter().map(FeatureBatch::rows).sum();
    let layout = FeatureLayout::new(spec.schema());
    let mut group = c.benchmark_group("feature_parquet");
    group.sample_size(10);
    group.throughput(Throughput::Elements(vectors as u64));

    group.bench_function("dataset", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::local(dir.path()).expect("store");
            let mut dataset = ParquetDataset::new(
                &store,
                "features",
                "bench",
                FeatureLayout::new(spec.schema()),
                DatasetOptions::features(),
            )
            .expect("dataset");
            for batch in &batches {
                dataset.push(vec![batch.clone()]).expect("push");
            }
            dataset.close().expect("close").rows
        })
    });

    let record_batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            RecordBatch::try_new(layout.schema(), layout.columns(std::slice::from_ref(b)))
                .expect("record batch")
        })
        .collect();
    // The dataset's own writer settings, with the codec varied.
    let dataset_props = {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::local(dir.path()).expect("store");
        ParquetDataset::<FeatureBatch, _>::new(
            &store,
            "features",
            "bench",
            FeatureLayout::new(spec.schema()),
            DatasetOptions::features(),
        )
        .expect("dataset")
        .writer_properties()
        .clone()
    };
    for (name, codec) in [
        ("snappy", Compression::SNAPPY),
        ("uncompressed", Compression::UNCOMPRESSED),
    ] {
        let props = dataset_props
            .clone()
            .into_builder()
            .set_compression(codec)
            .build();
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                let mut writer =
                    ArrowWriter::try_new(std::io::sink(), layout.schema(), Some(props.clone()))
                        .expect("writer");
                for batch in &record_batches {
                    writer.write(batch).expect("write");
                }
                writer.close().expect("close").file_metadata().num_rows()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
