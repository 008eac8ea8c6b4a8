//! Criterion benchmark of the JSON wire decoder (the Kafka source's and the HTTP ingest's
//! per-message cost): simulated readings decoded and validated, encoded as the simulator
//! sends them (every value at full f64 precision, 16–17 digits) and as devices usually do
//! (two decimals).
//!
//! Run: `cargo bench --bench wire` (add `-- --quick` for a short run).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pmi_core::wire::{encode_raw, Decoder};
use pmi_core::{EventTime, Validator};
use pmi_sources::fleet::{Fleet, SimulatorConfig};

fn bench(c: &mut Criterion) {
    let mut fleet = Fleet::new(SimulatorConfig {
        vehicles: 100,
        ..SimulatorConfig::default()
    })
    .expect("fleet");
    let mut readings = Vec::new();
    let mut out = Vec::new();
    for _ in 0..100 {
        out.clear();
        fleet.tick(&mut out);
        readings.append(&mut out);
    }
    let full: Vec<String> = readings.iter().map(encode_raw).collect();
    let two_decimals: Vec<String> = readings
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for v in r.values.iter_mut().flatten() {
                *v = (*v * 100.0).round() / 100.0;
            }
            encode_raw(&r)
        })
        .collect();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(readings.len() as u64));
    for (name, payloads) in [("full_precision", &full), ("two_decimals", &two_decimals)] {
        g.bench_function(format!("decode_validate_10k_readings/{name}"), |b| {
            let mut decoder = Decoder::new(Validator {
                max_future_ms: i64::MAX / 4,
            });
            b.iter(|| {
                payloads
                    .iter()
                    .filter(|p| decoder.decode(p.as_bytes(), EventTime(0)).is_ok())
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
