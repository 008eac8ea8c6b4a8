//! Criterion benchmark of the fleet simulator: readings generated per second on one thread
//! (the simulator feeds `pmi run --speed max`, `pmi simulate` and the training set).
//!
//! Run: `cargo bench --bench simulator` (add `-- --quick` for a short run).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pmi_sources::fleet::{Fleet, SimulatorConfig};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulator");
    let vehicles = 1000;
    g.throughput(Throughput::Elements(vehicles as u64 * 60));
    g.bench_function("tick_1000_vehicles_60s", |b| {
        let mut fleet = Fleet::new(SimulatorConfig {
            vehicles,
            ..SimulatorConfig::default()
        })
        .expect("fleet");
        let mut out = Vec::with_capacity(vehicles as usize);
        b.iter(|| {
            for _ in 0..60 {
                out.clear();
                fleet.tick(&mut out);
            }
            std::hint::black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
