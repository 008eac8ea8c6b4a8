//! The graph over a real Kafka-protocol broker (Tansu, started by `scripts/services.sh up`;
//! `scripts/test.sh` does it and exports `PMI_KAFKA_BROKERS`): readings produced to Kafka
//! give the same features as the same readings through backfill, a replay writes nothing
//! twice, and a run killed with SIGKILL resumes from its committed offsets with nothing lost
//! and nothing written twice.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn brokers() -> String {
    std::env::var("PMI_KAFKA_BROKERS").expect(
        "PMI_KAFKA_BROKERS is not set: start the test broker with \
         `eval \"$(bash scripts/services.sh up)\"` (scripts/test.sh does)",
    )
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn pmi(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pmi"));
    c.current_dir(dir).env("PMI_LOG", "warn");
    c
}

const START: &str = "1767254400000";

fn check(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Simulates the same fleet twice: to the topic and to Parquet under `dir/sim`.
fn produce(dir: &Path, topic: &str, vehicles: &str, duration: &str) {
    let fleet = [
        "--vehicles",
        vehicles,
        "--duration",
        duration,
        "--seed",
        "7",
        "--start-ms",
        START,
    ];
    check(
        pmi(dir)
            .arg("simulate")
            .args(fleet)
            .args(["--to", &format!("kafka://{}/{topic}", brokers())])
            .args(["--partitions", "3", "--out", "gt"]),
    );
    check(pmi(dir).arg("simulate").args(fleet).args(["--out", "sim"]));
    check(pmi(dir).args(["backfill", "--input", "sim/telemetry", "--out", "backfill"]));
}

fn kafka_run(dir: &Path, topic: &str, group: &str, out: &str) -> Command {
    let mut c = pmi(dir);
    c.args(["run", "--source", "kafka", "--workers", "2", "--out", out])
        .args(["--kafka-brokers", &brokers(), "--kafka-topic", topic])
        .args(["--kafka-group", group, "--kafka-any-time"])
        .args(["--kafka-alerts-topic", "", "--kafka-dead-letter-topic", ""])
        .args(["--kafka-predictions-topic", &format!("{topic}.predictions")]);
    c
}

/// Readings read, from a run's report line.
fn numbers(report: &str) -> u64 {
    let after = report.split("read ").nth(1).expect(report);
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn kafka_readings_give_the_features_of_backfill_and_a_replay_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pmi-test-equal");
    produce(dir.path(), &topic, "6", "20m");

    let first = check(kafka_run(dir.path(), &topic, "g", "kafka").arg("--kafka-bounded"));
    assert_eq!(numbers(&first), 7200, "{first}");
    let expected = common::feature_rows(&dir.path().join("backfill"));
    assert!(!expected.is_empty());
    assert_eq!(common::feature_rows(&dir.path().join("kafka")), expected);
    let predictions = common::parquet_batches(&dir.path().join("kafka/predictions"));
    let rows: usize = predictions.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, expected.len());

    // Same group again: the committed offsets replay only the longest window, and the
    // sinks drop what the first run wrote.
    let second = check(kafka_run(dir.path(), &topic, "g", "kafka").arg("--kafka-bounded"));
    let replayed = numbers(&second);
    assert!(replayed > 0 && replayed < 7200, "{second}");
    assert!(second.contains("already durable"), "{second}");
    assert_eq!(common::feature_rows(&dir.path().join("kafka")), expected);
}

#[test]
fn a_run_killed_mid_stream_resumes_from_its_offsets_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pmi-test-crash");
    produce(dir.path(), &topic, "20", "3h");
    let expected = common::feature_rows(&dir.path().join("backfill"));

    // An unbounded run that checkpoints often; killed once some checkpoint is durable.
    let mut child = kafka_run(dir.path(), &topic, "crash", "kafka")
        .args(["--checkpoint-ms", "50", "--kafka-idle-timeout", "600s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = dir.path().join("kafka/_checkpoints/crash/w0of2/features");
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let token: u64 = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        if token > 0 {
            break token;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = common::feature_rows(&dir.path().join("kafka"));
    assert!(
        before.len() < expected.len(),
        "killed after everything was written ({} rows; checkpoint {at_kill})",
        before.len()
    );

    // Restart (bounded, to finish): resumes from the committed offsets.
    let report = check(kafka_run(dir.path(), &topic, "crash", "kafka").arg("--kafka-bounded"));
    let after = common::feature_rows(&dir.path().join("kafka"));
    assert_eq!(after.len(), expected.len(), "{report}");
    assert_eq!(after, expected, "{report}");

    // The raw archive holds every reading exactly once.
    let archived: usize = common::parquet_batches(&dir.path().join("kafka/telemetry"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(archived, 20 * 3 * 3600, "{report}");
}
