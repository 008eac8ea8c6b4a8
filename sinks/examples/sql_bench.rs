//! Throughput of the SQL prediction sink (`pmi_sinks::sql::bench`).
//!
//! ```text
//! eval "$(bash scripts/services.sh up)"
//! cargo run --release -p pmi-sinks --example sql_bench -- [URL] [WRITERS] [ROWS] [BATCH_ROWS]
//! ```
//!
//! URL defaults to `PMI_DATABASE_URL`; on PostgreSQL a scratch database is created and
//! dropped. WRITERS (default 2) concurrent sinks write ROWS (default 1,000,000) predictions.

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("PMI_DATABASE_URL").ok())
        .expect("give a database URL or set PMI_DATABASE_URL");
    let writers = args.next().map_or(2, |a| a.parse().expect("WRITERS"));
    let rows = args.next().map_or(1_000_000, |a| a.parse().expect("ROWS"));
    let mut config = pmi_sinks::sql::SqlConfig::new(&url);
    if let Some(batch) = args.next() {
        config.batch_rows = batch.parse().expect("BATCH_ROWS");
    }
    match pmi_sinks::sql::bench::predictions_with(&config, writers, rows) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
