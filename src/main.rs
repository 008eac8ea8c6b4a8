//! `pmi`: the command line of PMI. Thin: it parses flags and settings, then calls the graphs
//! in `pmi-dataflows`.
//!
//! Settings come in layers: defaults → `--config FILE` (TOML) → `PMI_*` environment →
//! flags.

mod agents;
mod allocator;
mod cli;
mod flags;
mod ingest;
mod post;
mod serve;
mod settings;
mod simulator_api;

fn main() -> std::process::ExitCode {
    // Before any thread starts (see the module).
    let tuned = allocator::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PMI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(tuned, "allocator thresholds");
    match cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
