//! Throughput of the prediction sink: `writers` concurrent [`SqlSink`]s (one per timely
//! worker in a real run) writing generated predictions into a fresh database.
//!
//! On PostgreSQL a database `pmi_bench_…` is created on the server of the URL, migrated,
//! written and dropped. On SQLite the given file is used (created and migrated if needed);
//! the benchmark's vehicles are new ids, so existing rows are left alone.
//!
//! Predictions are generated before the clock starts (the benchmark measures the sink, not
//! the generator) and arrive as the graph produces them: one chunk per pane of up to 1000
//! vehicles, with realistic severities, components and explanations. The clock runs from
//! starting the sinks to the last `close` returning, i.e. until every row is committed.

use std::time::Instant;

use pmi_core::{Component, EventTime, Prediction, SeverityThresholds, VehicleId};

use super::{admin, Backend, Database, PredictionTable, SqlConfig, SqlSink};
use crate::{ChunkSink, SinkError};

/// What a benchmark run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// The database.
    pub backend: Backend,
    /// Concurrent sinks.
    pub writers: usize,
    /// Rows written (all of them verified present afterwards).
    pub rows: u64,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Wall-clock seconds from start to the last commit.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_s: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {} prediction rows with {} writer(s), batches of {}, in {:.2} s: {:.0} rows/s",
            self.backend, self.rows, self.writers, self.batch_rows, self.seconds, self.rows_per_s
        )
    }
}

/// Writes `rows` predictions through `writers` concurrent sinks into a fresh database at
/// `url` (default sink settings) and reports the rate. Runs its own runtime: call it outside
/// any tokio runtime.
pub fn predictions(url: &str, writers: usize, rows: usize) -> Result<BenchReport, SinkError> {
    predictions_with(&SqlConfig::new(url), writers, rows)
}

/// [`predictions`] with the sink settings of `config` (batch size, queue, …).
pub fn predictions_with(
    config: &SqlConfig,
    writers: usize,
    rows: usize,
) -> Result<BenchReport, SinkError> {
    let writers = writers.max(1);
    let runtime = super::runtime()?;
    let backend = Backend::from_url(&config.url).ok_or_else(|| SinkError::Sql {
        context: format!("url `{}`", super::redact(&config.url)),
        message: "must start with sqlite:// or postgres://".into(),
    })?;
    let mut config = config.clone();
    let scratch = match backend {
        Backend::Postgres => {
            let name = admin::unique_name("pmi_bench");
            runtime.block_on(admin::create_database(&config.url, &name))?;
            let url = admin::with_database(&config.url, &name);
            let admin_url = std::mem::replace(&mut config.url, url);
            Some((admin_url, name))
        }
        Backend::Sqlite => None,
    };
    let result = run(&runtime, &config, writers, rows);
    if let Some((admin_url, name)) = scratch {
        runtime.block_on(admin::drop_database(&admin_url, &name))?;
    }
    result
}

fn run(
    runtime: &tokio::runtime::Runtime,
    config: &SqlConfig,
    writers: usize,
    rows: usize,
) -> Result<BenchReport, SinkError> {
    let db = runtime.block_on(Database::connect(config))?;
    runtime.block_on(db.migrate())?;
    let before = runtime.block_on(db.count("failure_predictions"))?;
    let prefix = admin::unique_name("B");
    let per_writer = rows.div_ceil(writers);
    let inputs: Vec<Vec<Vec<Prediction>>> = (0..writers)
        .map(|w| {
            let n = per_writer.min(rows.saturating_sub(w * per_writer));
            generate(&format!("{prefix}_{w}"), n, 1000)
        })
        .collect();
    let started = Instant::now();
    let handles: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(w, chunks)| {
            let mut sink = SqlSink::<PredictionTable>::start(config, &format!("bench{w}"))?;
            Ok(std::thread::spawn(move || {
                for chunk in chunks {
                    sink.send(chunk)?;
                }
                Box::new(sink).close()
            }))
        })
        .collect::<Result<_, SinkError>>()?;
    let mut written = 0;
    for h in handles {
        written += h
            .join()
            .map_err(|_| SinkError::Stopped("bench writer".into()))??
            .rows;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = runtime.block_on(db.count("failure_predictions"))?;
    runtime.block_on(db.close());
    if after - before != rows as u64 || written != rows as u64 {
        return Err(SinkError::Sql {
            context: "table `failure_predictions`".into(),
            message: format!(
                "benchmark wrote {rows} rows but the sinks report {written} and the table gained {}",
                after - before
            ),
        });
    }
    Ok(BenchReport {
        backend: db.backend(),
        writers,
        rows: rows as u64,
        batch_rows: config.batch_rows,
        seconds,
        rows_per_s: rows as f64 / seconds,
    })
}

/// `rows` predictions of a fleet of up to `fleet` vehicles named `{prefix}_{n}`, one chunk
/// per 10 s pane, with severities by the default thresholds.
pub fn generate(prefix: &str, rows: usize, fleet: usize) -> Vec<Vec<Prediction>> {
    let fleet = fleet.clamp(1, rows.max(1));
    let vehicles: Vec<VehicleId> = (0..fleet)
        .map(|i| VehicleId::parse(&format!("{prefix}_{i:06}")).expect("valid id"))
        .collect();
    let thresholds = SeverityThresholds::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // splitmix64: deterministic, no dependency.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let start = EventTime::from_secs(1_700_000_000);
    let mut chunks = Vec::with_capacity(rows.div_ceil(fleet));
    let mut made = 0;
    let mut pane = 0i64;
    while made < rows {
        let n = fleet.min(rows - made);
        let chunk = vehicles[..n]
            .iter()
            .map(|v| {
                // Mostly healthy, a tail of risky vehicles.
                let u = next();
                let risk = (u * u * u).min(1.0);
                let severity = thresholds.classify(risk);
                let component = (risk >= thresholds.low)
                    .then(|| Component::ALL[(next() * Component::ALL.len() as f64) as usize % 11]);
                let explanation = match component {
                    Some(c) => vec![
                        format!("{} anomaly score {:.2}", c.name(), risk),
                        format!("coolant_temp_c_slope_300s {:.3}", next() * 0.1),
                    ],
                    None => Vec::new(),
                };
                Prediction {
                    vehicle_id: v.clone(),
                    pane_end: EventTime(start.0 + pane * 10_000),
                    risk,
                    severity,
                    component,
                    model: "ensemble-v1".into(),
                    explanation,
                }
            })
            .collect();
        chunks.push(chunk);
        made += n;
        pane += 1;
    }
    chunks
}
