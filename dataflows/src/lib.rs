//! `pmi-dataflows`: assembles sources → operators → sinks into the named graphs.
//!
//! - [`graph`]: the PMI graph, generic over its source and its sinks, on `workers` threads.
//! - [`sink`]: the timely operator that feeds the sinks.
//! - [`stats`]: optional live counters of a running graph (for `pmi serve`'s `/stats`).
//! - [`simulated`], [`backfill`]: the simulator and Parquet as graph sources; [`layout`]:
//!   how a backfill's input is ordered.
//! - [`cpu`]: CPU time by thread role over a span (`pmi bench`'s CPU line).
//! - [`jobs`]: `live`, `simulate`, `backfill`, `bench`, as the CLI runs them; [`kafka`]:
//!   the graph over a Kafka topic, at least once; [`kafka_bench`]: `pmi bench --source
//!   kafka`, the graph beside plain consumers on the same topic.
#![forbid(unsafe_code)]

pub mod backfill;
pub mod cpu;
pub mod graph;
pub mod jobs;
pub mod kafka;
pub mod kafka_bench;
pub mod layout;
pub mod registry;
pub mod scoring;
pub mod simulated;
pub mod sink;
pub mod stats;
pub mod training;

pub use graph::{
    Cluster, DatabaseSinks, GraphConfig, RunReport, ScoreFn, WorkerProgress, WorkerSinks,
};
pub use stats::{GraphStats, StatsSnapshot};

/// Errors of building or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] pmi_core::ConfigError),
    /// A source failed.
    #[error(transparent)]
    Source(#[from] pmi_core::SourceFailure),
    /// A sink failed.
    #[error("{0}")]
    Sink(String),
    /// Input could not be planned or read.
    #[error("{0}")]
    Input(String),
    /// Timely could not start or a worker panicked.
    #[error("dataflow runtime: {0}")]
    Timely(String),
}

impl DataflowError {
    /// Whose fault the error is.
    pub fn class(&self) -> pmi_core::ErrorClass {
        use pmi_core::ErrorClass;
        match self {
            DataflowError::Config(_) | DataflowError::Input(_) => ErrorClass::User,
            DataflowError::Source(f) => f.class,
            DataflowError::Sink(_) => ErrorClass::External,
            DataflowError::Timely(_) => ErrorClass::Internal,
        }
    }
}
