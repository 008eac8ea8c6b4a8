//! Settings in layers: built-in defaults → TOML file (`--config`) → `PMI_*` environment →
//! command-line flags. Every flag of the CLI has an environment variable and a key in the
//! file's `[flags.<subcommand>]` table (`crate::flags`); the file's other sections mirror
//! the crates' config structs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use pmi_core::{Severity, SeverityThresholds, WindowConfig};

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Window operator settings (`[window]`).
    pub window: WindowConfig,
    /// Severity thresholds (`[severity]`).
    pub severity: SeverityThresholds,
    /// Run settings (`[run]`).
    pub run: RunSettings,
    /// Simulator settings (`[simulator]`).
    pub simulator: SimulatorSettings,
    /// Model settings (`[model]`).
    pub model: ModelSettings,
    /// Kafka settings (`[kafka]`).
    pub kafka: KafkaSettings,
    /// SQL database settings (`[database]`).
    pub database: DatabaseSettings,
    /// Alert collection settings (`[alerts]`).
    pub alerts: AlertSettings,
    /// The master agent (`[agents]`).
    pub agents: pmi_agents::MasterConfig,
    /// The scheduling agent (`[scheduling]`).
    pub scheduling: pmi_agents::SchedulingConfig,
    /// Any subcommand's flags by long name (`[flags.run]`, `[flags.bench]`, …); see
    /// `crate::flags`.
    pub flags: crate::flags::FileFlags,
}

/// `[alerts]`: which predictions become alerts, and the tables they are checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Lowest severity level that raises an alert (default `medium`).
    pub floor: Severity,
    /// Hysteresis margin: a level is left only when the risk falls this far below its
    /// threshold (default 0.05; 0 disables hysteresis).
    pub margin: f64,
    /// How long the risk must stay below a level before the level falls, s (default 900).
    pub fall_after_s: u64,
    /// Only vehicles in the registry get alerts (default false: an unknown vehicle's
    /// alert has no owner or centre and goes to a person).
    pub require_registry: bool,
    /// How often the registry, open appointments and repairs are read again, ms
    /// (default 1000).
    pub watch_every_ms: u64,
    /// How long a repair keeps a component's alerts back, days (default 30).
    pub recent_repair_days: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            floor: Severity::Medium,
            margin: pmi_core::AlertConfig::DEFAULT_MARGIN,
            fall_after_s: pmi_core::AlertConfig::DEFAULT_FALL_AFTER_MS / 1000,
            require_registry: false,
            watch_every_ms: 1000,
            recent_repair_days: 30,
        }
    }
}

/// `[database]`: where predictions and alerts (and optionally telemetry) are upserted, as
/// well as the Parquet datasets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://user@host:port/db`; unset: the SQLite file
    /// `pmi.sqlite` in the output folder (or `./pmi-data/` when the output is in an object
    /// store).
    pub url: Option<String>,
    /// Write to the database at all (default true: the embedded SQLite file).
    pub enabled: bool,
    /// Also upsert every accepted reading into `vehicle_telemetry` (default false: the
    /// Parquet archive holds them).
    pub telemetry: bool,
    /// Rows per write batch (default 5000).
    pub batch_rows: usize,
    /// How long a failing batch is retried before the run fails, in ms; unset: forever
    /// (the stream waits, nothing is dropped).
    pub retry_deadline_ms: Option<u64>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            enabled: true,
            telemetry: false,
            batch_rows: 5000,
            retry_deadline_ms: None,
        }
    }
}

/// `[kafka]`: the broker, topics and consumer group of `pmi run --source kafka` and
/// `pmi simulate --to kafka://…`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,…]` (default `127.0.0.1:19092`, the port of
    /// `scripts/services.sh`).
    pub brokers: String,
    /// Telemetry topic (default `pmi.telemetry`).
    pub telemetry_topic: String,
    /// Predictions topic; empty: none (default `pmi.predictions`).
    pub predictions_topic: String,
    /// Alerts topic; empty: alerts go to the console (default `pmi.alerts`).
    pub alerts_topic: String,
    /// Dead-letter topic for rejected readings; empty: none (default `pmi.dead-letter`).
    pub dead_letter_topic: String,
    /// Consumer group (default `pmi`).
    pub group: String,
    /// A partition at its end with nothing new for this long stops holding the watermark,
    /// seconds (default 10).
    pub idle_timeout_s: u64,
    /// Sink checkpoint interval, and so offset commit interval, milliseconds (default 5000).
    pub checkpoint_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:19092".into(),
            telemetry_topic: "pmi.telemetry".into(),
            predictions_topic: "pmi.predictions".into(),
            alerts_topic: "pmi.alerts".into(),
            dead_letter_topic: "pmi.dead-letter".into(),
            group: "pmi".into(),
            idle_timeout_s: 10,
            checkpoint_ms: 5000,
        }
    }
}

/// `[model]`: the registry and what models predict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Registry folder (default `./pmi-data/models`).
    pub registry: PathBuf,
    /// Prediction horizon in days: a label is "fails within this" (default 7).
    pub horizon_days: u32,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            registry: PathBuf::from("pmi-data/models"),
            horizon_days: 7,
        }
    }
}

/// `[run]`: where outputs go and how the graph runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// Where the Parquet datasets go: a folder or `s3://bucket/prefix` (default
    /// `./pmi-data`; S3 endpoint and credentials from the `AWS_*` environment).
    pub out_dir: String,
    /// Timely worker threads (default 1).
    pub workers: usize,
    /// Also archive accepted telemetry as Parquet (default true).
    pub write_telemetry: bool,
    /// Run the maintenance agents beside the graph when it writes to a database (default
    /// true).
    pub agents: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            out_dir: "pmi-data".into(),
            workers: 1,
            agents: true,
            write_telemetry: true,
        }
    }
}

/// `[simulator]`: the built-in fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Vehicles (default 10).
    pub vehicles: u32,
    /// Seed (default 42).
    pub seed: u64,
    /// Expected failures per vehicle per 30 days (default 1.0).
    pub failures_per_vehicle_month: f64,
    /// Emit occasional bad readings (dropouts, spikes, duplicates, late, malformed).
    pub bad_readings: bool,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        SimulatorSettings {
            vehicles: 10,
            seed: 42,
            failures_per_vehicle_month: 1.0,
            bad_readings: false,
        }
    }
}

impl Settings {
    /// Defaults, overlaid with the TOML file at `path` if given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
        let Some(path) = path else {
            return Ok(Settings::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let settings: Settings =
            toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?;
        settings.window.validate()?;
        settings.severity.validate()?;
        pmi_core::AlertConfig {
            floor: settings.alerts.floor,
            margin: settings.alerts.margin,
            thresholds: settings.severity,
            fall_after_ms: settings.alerts.fall_after_s * 1000,
            require_registry: settings.alerts.require_registry,
        }
        .validate()?;
        settings.agents.validate()?;
        settings.scheduling.validate()?;
        Ok(settings)
    }
}

/// Parses a duration such as `250ms`, `90s`, `15m`, `2h`, `7d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let mut total_ms = 0u64;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}`: expected a number before `{c}`"))?;
        number.clear();
        let unit_ms = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(format!("`{text}`: unknown unit `{c}` (use ms, s, m, h, d)")),
        };
        total_ms += n * unit_ms;
    }
    if !number.is_empty() {
        return Err(format!(
            "`{text}`: missing unit after {number} (use ms, s, m, h, d)"
        ));
    }
    if total_ms == 0 {
        return Err(format!("`{text}`: duration must be positive"));
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("1m500ms").unwrap().as_millis(), 60_500);
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn toml_layers_over_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pmi.toml");
        std::fs::write(
            &p,
            "[window]\npane_s = 5\nwindows_s = [30, 60]\n[run]\nworkers = 2\n",
        )
        .unwrap();
        let s = Settings::load(Some(&p)).unwrap();
        assert_eq!(s.window.pane_s, 5);
        assert_eq!(s.run.workers, 2);
        assert_eq!(s.simulator.vehicles, 10);
        std::fs::write(&p, "[window]\npanes = 5\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&p)).unwrap_err());
        assert!(e.contains("panes"), "{e}");
        std::fs::write(&p, "[window]\nwindows_s = [60, 65]\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&p)).unwrap_err());
        assert!(e.contains("window.windows_s"), "{e}");
    }
}
