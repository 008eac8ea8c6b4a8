//! Criterion benchmarks of the pane window operator.
//!
//! - `vehicle_windows/*`: the per-vehicle state machine alone (insert one pane of 1 Hz
//!   readings, seal it, evaluate every window at its end), for the 8-sensor and the default
//!   21-channel configurations. Throughput is readings per second.
//!   - `one_pane_1hz`: one vehicle, its state hot in the cache.
//!   - `fleet_1000_pane_1hz`: a pane of 1000 vehicles, their readings interleaved in time
//!     as in `pmi bench`'s input, then every vehicle evaluated with the window operator's
//!     prefetch: the state (about 32 MB) far outgrows the caches, as in a backfill.
//!     Against `one_pane_1hz`, what the cache misses cost.
//! - `pane_windows_operator/*`: the timely operator on one worker over an in-memory fleet,
//!   exchange and capabilities included.
//!
//! Run: `cargo bench --bench windows` (add `-- --quick` for a short run).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pmi_core::{EventTime, RawReading, Sensor, Sequenced, Validator, WindowConfig, SENSOR_COUNT};
use pmi_operators::windows::{PaneWindows, Scratch, VehicleWindows, WindowSpec};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};

fn config(sensors_only_8: bool) -> WindowConfig {
    let mut c = WindowConfig::default();
    if sensors_only_8 {
        c.channels = Sensor::ALL[..8]
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
    }
    c
}

fn reading(vehicle: usize, t: i64) -> pmi_core::Telemetry {
    let mut values = [None; SENSOR_COUNT];
    for s in Sensor::ALL {
        let (lo, hi) = s.range();
        let x = ((t / 1000) as f64 * 0.37 + vehicle as f64 + s.index() as f64).sin();
        values[s.index()] = Some(lo + (hi - lo) * (0.5 + 0.25 * x));
    }
    let raw = RawReading::new(&format!("VEH_{vehicle:06}"), t, values);
    Validator::default()
        .validate(raw, EventTime(i64::MAX / 2))
        .unwrap()
}

fn bench_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("vehicle_windows");
    for (name, only8) in [("8_sensors", true), ("default_21_channels", false)] {
        let spec = WindowSpec::new(&config(only8)).unwrap();
        let readings: Vec<_> = (0..100_000)
            .map(|i| reading(0, 1_700_000_000_000 + i * 1000))
            .collect();
        group.throughput(Throughput::Elements(10));
        group.bench_function(BenchmarkId::new("one_pane_1hz", name), |b| {
            let mut state = VehicleWindows::new(&spec);
            let mut scratch = Scratch::default();
            let (mut out, mut dups) = (Vec::new(), Vec::new());
            let mut i = 0usize;
            b.iter(|| {
                for _ in 0..10 {
                    let r = &readings[i % readings.len()];
                    if i.is_multiple_of(readings.len()) {
                        state = VehicleWindows::new(&spec);
                    }
                    state.insert(&spec, r.ts, r.values).unwrap();
                    i += 1;
                }
                let k = spec.pane_of(readings[(i - 1) % readings.len()].ts);
                state.evaluate(&spec, k - 1, &mut scratch, &mut out, &mut dups);
                out.len()
            });
        });
    }
    // A fleet: readings of one pane for every vehicle, time-interleaved, then an evaluation
    // of every vehicle at that pane's end. Values cycle through 5 minutes of readings.
    let spec = WindowSpec::new(&config(true)).unwrap();
    let vehicles = 1000;
    let cycle = 300;
    let values: Vec<_> = (0..cycle)
        .flat_map(|s| (0..vehicles).map(move |v| reading(v, s as i64 * 1000).values))
        .collect();
    group.throughput(Throughput::Elements(10 * vehicles as u64));
    group.bench_function(BenchmarkId::new("fleet_1000_pane_1hz", "8_sensors"), |b| {
        let mut states: Vec<VehicleWindows> =
            (0..vehicles).map(|_| VehicleWindows::new(&spec)).collect();
        let mut scratch = Scratch::default();
        let (mut out, mut dups) = (Vec::new(), Vec::new());
        let start = 1_700_000_000_000i64; // a pane boundary
        let mut second = 0usize;
        b.iter(|| {
            for _ in 0..10 {
                let vs = &values[(second % cycle) * vehicles..][..vehicles];
                for (v, (state, values)) in states.iter_mut().zip(vs).enumerate() {
                    let ts = EventTime(start + second as i64 * 1000 + v as i64 + 1);
                    state.insert(&spec, ts, *values).unwrap();
                }
                second += 1;
            }
            let k = spec.pane_of(EventTime(start + second as i64 * 1000));
            let mut features = 0;
            for i in 0..vehicles {
                if let Some(next) = states.get(i + 2) {
                    next.prefetch_headers();
                }
                if let Some(next) = states.get(i + 1) {
                    next.prefetch(&spec, k);
                }
                states[i].evaluate(&spec, k, &mut scratch, &mut out, &mut dups);
                features += out.len();
            }
            features
        });
    });
    group.finish();
}

fn bench_operator(c: &mut Criterion) {
    let mut group = c.benchmark_group("pane_windows_operator");
    group.sample_size(10);
    let vehicles = 100;
    let seconds = 600;
    let input: Arc<Vec<Sequenced>> = Arc::new(
        (0..seconds)
            .flat_map(|s| (0..vehicles).map(move |v| (v, 1_700_000_000_000 + s * 1000 + v as i64)))
            .map(|(v, t)| Sequenced {
                group: 0,
                reading: reading(v, t),
            })
            .collect(),
    );
    group.throughput(Throughput::Elements(input.len() as u64));
    group.bench_function("1_worker_100_vehicles_10min", |b| {
        b.iter(|| {
            let input = input.clone();
            let spec = Arc::new(WindowSpec::new(&config(false)).unwrap());
            timely::execute_directly(move |worker| {
                let mut handle = InputHandleVec::new();
                let probe = ProbeHandle::new();
                worker.dataflow(|scope| {
                    handle
                        .to_stream(scope)
                        .pane_windows(spec)
                        .features
                        .probe_with(&probe);
                });
                for chunk in input.chunks(1000) {
                    let t = chunk[0].reading.ts.0 as u64 - 30_000;
                    if t > *handle.time() {
                        handle.advance_to(t);
                    }
                    for r in chunk {
                        handle.send(r.clone());
                    }
                    worker.step();
                }
                handle.close();
                while worker.step() {}
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench_state, bench_operator);
criterion_main!(benches);
