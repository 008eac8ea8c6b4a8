//! The graph over a real Kafka-protocol broker (Tansu, started by `scripts/services.sh up`;
//! `scripts/test.sh` does it and exports `PMI_KAFKA_BROKERS`): readings produced to Kafka
//! give the same features as the same readings through backfill, a replay writes nothing
//! twice, a run killed with SIGKILL resumes from its committed offsets with nothing lost
//! and nothing written twice, a broker killed and restarted under a running graph loses
//! nothing, `pmi serve --kafka-brokers` produces what it accepts to the topic, and a
//! 2-process cluster reading the topic gives the features of one process.

mod common;

use common::{check, pmi, read_count, unique};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn brokers() -> String {
    std::env::var("PMI_KAFKA_BROKERS").expect(
        "PMI_KAFKA_BROKERS is not set: start the test broker with \
         `eval \"$(bash scripts/services.sh up)\"` (scripts/test.sh does)",
    )
}

const START: &str = "1767254400000";

/// Simulates the same fleet twice: to the topic and to Parquet under `dir/sim`.
fn produce(dir: &Path, topic: &str, vehicles: &str, duration: &str) {
    simulate_both(dir, &brokers(), topic, vehicles, duration, START, "");
    check(pmi(dir).args(["backfill", "--input", "sim/telemetry", "--out", "backfill"]));
}

/// The fleet (seed 7) over `duration` from `start`: to `topic` on `brokers` (ground truth
/// to `gt{part}`) and to Parquet under `sim/`.
fn simulate_both(
    dir: &Path,
    brokers: &str,
    topic: &str,
    vehicles: &str,
    duration: &str,
    start: &str,
    part: &str,
) {
    let fleet = [
        "--vehicles",
        vehicles,
        "--duration",
        duration,
        "--seed",
        "7",
        "--start-ms",
        start,
    ];
    check(
        pmi(dir)
            .arg("simulate")
            .args(fleet)
            .args(["--to", &format!("kafka://{brokers}/{topic}")])
            .args(["--partitions", "3", "--out", &format!("gt{part}")]),
    );
    check(pmi(dir).arg("simulate").args(fleet).args(["--out", "sim"]));
}

fn kafka_run(dir: &Path, topic: &str, group: &str, out: &str) -> Command {
    kafka_run_on(dir, &brokers(), topic, group, out)
}

fn kafka_run_on(dir: &Path, brokers: &str, topic: &str, group: &str, out: &str) -> Command {
    kafka_run_with(dir, brokers, topic, group, out, "2")
}

fn kafka_run_with(
    dir: &Path,
    brokers: &str,
    topic: &str,
    group: &str,
    out: &str,
    workers: &str,
) -> Command {
    let mut c = pmi(dir);
    c.args([
        "run",
        "--source",
        "kafka",
        "--workers",
        workers,
        "--out",
        out,
    ])
    .args(["--kafka-brokers", brokers, "--kafka-topic", topic])
    .args(["--kafka-group", group, "--kafka-any-time"])
    .args(["--kafka-alerts-topic", "", "--kafka-dead-letter-topic", ""])
    .args(["--kafka-predictions-topic", &format!("{topic}.predictions")]);
    c
}

#[test]
fn kafka_readings_give_the_features_of_backfill_and_a_replay_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pmi-test-equal");
    produce(dir.path(), &topic, "6", "20m");

    let first = check(kafka_run(dir.path(), &topic, "g", "kafka").arg("--kafka-bounded"));
    assert_eq!(read_count(&first), 7200, "{first}");
    let expected = common::feature_rows(&dir.path().join("backfill"));
    assert!(!expected.is_empty());
    assert_eq!(common::feature_rows(&dir.path().join("kafka")), expected);
    let predictions = common::parquet_batches(&dir.path().join("kafka/predictions"));
    let rows: usize = predictions.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, expected.len());

    // Same group again: the committed offsets replay only the longest window, and the
    // sinks drop what the first run wrote.
    let second = check(kafka_run(dir.path(), &topic, "g", "kafka").arg("--kafka-bounded"));
    let replayed = read_count(&second);
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
    let at_kill = first_checkpoint(&mut child, &marker);
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

#[test]
fn a_run_stopped_with_sigterm_drains_then_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pmi-test-stop");
    produce(dir.path(), &topic, "20", "3h");
    let expected = common::feature_rows(&dir.path().join("backfill"));

    let mut child = kafka_run(dir.path(), &topic, "stop", "kafka")
        .args(["--checkpoint-ms", "50", "--kafka-idle-timeout", "600s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let marker = dir.path().join("kafka/_checkpoints/stop/w0of2/features");
    first_checkpoint(&mut child, &marker);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 150 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status:?}: {stdout}");
    assert!(stdout.contains("stopped on request"), "{stdout}");
    let before = common::feature_rows(&dir.path().join("kafka"));
    assert!(
        before.len() < expected.len(),
        "stopped after everything was written"
    );

    // Restart (bounded, to finish): the rest, nothing twice, features as uninterrupted.
    let report = check(kafka_run(dir.path(), &topic, "stop", "kafka").arg("--kafka-bounded"));
    let after = common::feature_rows(&dir.path().join("kafka"));
    assert_eq!(after, expected, "{report}");
    let archived: usize = common::parquet_batches(&dir.path().join("kafka/telemetry"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(archived, 20 * 3 * 3600, "{report}");
}

/// Waits (up to 2 minutes) until the running `child` has made a checkpoint durable (its
/// `marker` names a token); returns the token.
fn first_checkpoint(child: &mut std::process::Child, marker: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let token: u64 = std::fs::read_to_string(marker)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        if token > 0 {
            return token;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Rows of every Parquet file under `dir` (0 when it does not exist).
fn rows(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    common::parquet_batches(dir)
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

/// The number before `word` in a report line (`read 3600 readings` → 3600 for `readings`).
fn count(report: &str, word: &str) -> u64 {
    let words: Vec<&str> = report.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.trim_end_matches([',', ';', ':', ')']) == word)
        .unwrap_or_else(|| panic!("no `{word}` in {report}"));
    words[i - 1]
        .trim_start_matches('(')
        .parse()
        .unwrap_or_else(|_| panic!("no count before `{word}` in {report}"))
}

fn wait_port(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private Tansu broker whose storage outlives it: Tansu's S3 storage in a fresh bucket of
/// the test S3 server (moto, from `scripts/services.sh`). (Tansu's memory storage loses
/// topics on restart, and the shipped build has no PostgreSQL or SQLite storage.)
struct PrivateBroker {
    port: u16,
    storage: String,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateBroker {
    fn start(dir: &Path) -> PrivateBroker {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
            "AWS_ENDPOINT_URL is not set: start the test services with \
             `eval \"$(bash scripts/services.sh up)\"`",
        );
        let bucket = unique("tansu").to_lowercase();
        // Create the bucket with a plain HTTP PUT (moto takes it without a signature).
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(host).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "creating bucket: {reply}"
        );
        let mut broker = PrivateBroker {
            port: common::free_port(),
            storage: format!("s3://{bucket}/"),
            log: dir.join("tansu.log"),
            child: None,
        };
        broker.restart();
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let bin = std::env::var("PMI_TANSU_BIN").expect("PMI_TANSU_BIN (scripts/services.sh)");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .env("AWS_ENDPOINT", &endpoint)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_port(self.port, "tansu");
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("broker running");
        child.kill().unwrap(); // SIGKILL: no goodbye to the clients
        child.wait().unwrap();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// Largest pane end in a features dataset (0 when there is none yet).
fn last_pane(dir: &Path) -> i64 {
    if !dir.join("features").exists() {
        return 0;
    }
    common::feature_rows(dir)
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_broker_killed_and_restarted_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = PrivateBroker::start(d);
    let topic = unique("pmi-test-outage");
    let start: i64 = START.parse().unwrap();
    let second = (start + 90 * 60_000).to_string();
    // The first 90 minutes of the fleet, before the run starts.
    simulate_both(d, &broker.brokers(), &topic, "20", "90m", START, "1");

    // A live (unbounded) run that checkpoints often and writes predictions to Kafka too.
    let log = std::fs::File::create(d.join("run.out")).unwrap();
    let mut run = kafka_run_on(d, &broker.brokers(), &topic, "outage", "kafka")
        .args(["--checkpoint-ms", "50", "--kafka-idle-timeout", "600s"])
        .env("PMI_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let alive = |run: &mut std::process::Child, what: &str| {
        if let Some(status) = run.try_wait().unwrap() {
            panic!(
                "the run ended {what} ({status}): {}",
                std::fs::read_to_string(d.join("run.out")).unwrap_or_default()
            );
        }
    };
    let marker = d.join("kafka/_checkpoints/outage/w0of2/features");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        alive(&mut run, "before the outage");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The broker goes away mid-run for 5 s: the run waits (consumer, commits, the
    // predictions producer), it does not fail.
    broker.kill();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        alive(&mut run, "while the broker was away");
    }
    broker.restart();

    // The next 90 minutes, produced to the restarted broker: the run reads them.
    simulate_both(d, &broker.brokers(), &topic, "20", "90m", &second, "2");
    let target = start + 170 * 60_000;
    let deadline = Instant::now() + Duration::from_secs(300);
    while last_pane(&d.join("kafka")) < target {
        assert!(
            Instant::now() < deadline,
            "the run did not get to the readings produced after the restart (last pane {})",
            last_pane(&d.join("kafka"))
        );
        alive(&mut run, "after the broker came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A live run never ends by itself: stop it hard and finish from its committed offsets,
    // with a run started while the broker is away for longer than one connection attempt
    // lasts (30 s): it waits for the broker instead of failing.
    run.kill().unwrap();
    run.wait().unwrap();
    broker.kill();
    let finisher = kafka_run_on(d, &broker.brokers(), &topic, "outage", "kafka")
        .arg("--kafka-bounded")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(35));
    broker.restart();
    let out = finisher.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    check(pmi(d).args(["backfill", "--input", "sim/telemetry", "--out", "backfill"]));
    let expected = common::feature_rows(&d.join("backfill"));
    let got = common::feature_rows(&d.join("kafka"));
    assert_eq!(got.len(), expected.len(), "{report}");
    assert!(
        got == expected,
        "features differ from the backfill: {report}"
    );
    // Every reading produced is in the exactly-once archive once; none late or rejected.
    let produced = 20 * 180 * 60;
    assert_eq!(rows(&d.join("sim/telemetry")), produced);
    assert_eq!(rows(&d.join("kafka/telemetry")), produced, "{report}");
    assert_eq!(rows(&d.join("kafka/late")), 0, "{report}");
    assert_eq!(rows(&d.join("kafka/dead_letter")), 0, "{report}");
    assert_eq!(count(&report, "late"), 0, "{report}");
    assert_eq!(count(&report, "rejected"), 0, "{report}");
    // No line logged at ERROR: the outage is waited out and the producer's lost sequence
    // recovered, each said at WARN (whose messages may well contain "ERROR", as in
    // librdkafka's "last partition error NO_ERROR").
    let log = std::fs::read_to_string(d.join("run.out")).unwrap();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| common::log_level(l) == Some("ERROR"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A GET or POST on loopback: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply.split(' ').nth(1).unwrap().parse().unwrap();
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn serve_with_kafka_produces_accepted_readings_to_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique("pmi-test-serve");
    let dead = format!("{topic}.dead");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = pmi(d)
        .args(["serve", "--listen", &listen, "--registry", "models"])
        .args(["--kafka-brokers", &brokers(), "--kafka-topic", &topic])
        .args(["--kafka-dead-letter-topic", &dead])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || http(port, "GET", "/health", "").0 != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve not healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bad readings: 422 naming the field, and not in the telemetry topic.
    let (status, body) = http(
        port,
        "POST",
        "/ingest",
        &format!(r#"{{"vehicle_id": "VEH_000001", "ts": {START}, "coolant_temp_c": 900}}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(r#""field":"coolant_temp_c""#), "{body}");
    let (status, body) = http(port, "POST", "/ingest", "{not json");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(r#""field":"payload""#), "{body}");

    // A fleet posted in batches: every reading acknowledged by the broker.
    let fleet = [
        "--vehicles",
        "4",
        "--seed",
        "5",
        "--duration",
        "20m",
        "--start-ms",
        START,
    ];
    let url = format!("http://127.0.0.1:{port}");
    let sent = check(
        pmi(d)
            .args(["simulate", "--to", &url, "--speed", "max", "--batch", "500"])
            .args(fleet),
    );
    assert_eq!(count(&sent, "accepted"), 4800, "{sent}");
    let (status, stats) = http(port, "GET", "/stats", "");
    assert_eq!(status, 200, "{stats}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["http"]["accepted"], 4800, "{stats}");
    assert_eq!(stats["http"]["rejected"], 2, "{stats}");
    assert_eq!(stats["queue"]["kafka"]["delivered"], 4802, "{stats}");
    assert_eq!(stats["queue"]["kafka"]["failed"], 0, "{stats}");
    assert_eq!(stats["queue"]["queued"], 0, "{stats}");

    let pid = serve.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = serve.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&summary, "delivered"), 4802, "{summary}");

    // The graph over the topic: exactly the fleet, nothing rejected, the features of a
    // backfill of the same readings.
    let report = check(kafka_run(d, &topic, "serve", "kafka").arg("--kafka-bounded"));
    assert_eq!(read_count(&report), 4800, "{report}");
    assert_eq!(count(&report, "rejected"), 0, "{report}");
    check(pmi(d).args(["simulate", "--out", "sim"]).args(fleet));
    check(pmi(d).args(["backfill", "--input", "sim/telemetry", "--out", "backfill"]));
    let expected = common::feature_rows(&d.join("backfill"));
    assert!(!expected.is_empty());
    assert!(common::feature_rows(&d.join("kafka")) == expected);

    // The two rejected readings are in the dead-letter topic (not readings: all rejected).
    let report = check(kafka_run(d, &dead, "serve", "dead").arg("--kafka-bounded"));
    assert_eq!(read_count(&report), 2, "{report}");
    assert_eq!(count(&report, "rejected"), 2, "{report}");
}

#[test]
fn a_two_process_cluster_reading_kafka_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique("pmi-test-cluster");
    produce(d, &topic, "6", "20m");
    let hostfile = &common::two_process_hostfile(d);
    let spawn = |i: &str| {
        let mut c = kafka_run_with(d, &brokers(), &topic, "cluster", &format!("p{i}"), "1");
        c.args(["--processes", "2", "--process", i])
            .args(["--hostfile", hostfile, "--kafka-bounded"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn("0"), spawn("1"));
    let mut read = 0;
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        read += read_count(&text);
    }
    assert_eq!(read, 7200, "every reading read once over the two processes");
    let single = check(kafka_run(d, &topic, "single", "single").arg("--kafka-bounded"));
    assert_eq!(read_count(&single), 7200, "{single}");

    let (p0, p1) = (
        common::feature_rows(&d.join("p0")),
        common::feature_rows(&d.join("p1")),
    );
    assert!(!p0.is_empty() && !p1.is_empty(), "both processes did work");
    let mut cluster = [p0, p1].concat();
    cluster.sort();
    let one = common::feature_rows(&d.join("single"));
    assert_eq!(cluster.len(), one.len());
    assert!(
        cluster == one,
        "the cluster's features differ from one process"
    );
    assert!(one == common::feature_rows(&d.join("backfill")));
}

/// The outage test's log check reads levels, not words: a WARN line mentioning
/// `NO_ERROR` is not an error line.
#[test]
fn log_levels_are_read_with_and_without_colour() {
    let coloured = "\u{1b}[2m2026-11-29T01:38:37.092687Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mpmi_sinks::kafka\u{1b}[0m: last partition error NO_ERROR";
    assert_eq!(common::log_level(coloured), Some("WARN"));
    assert_eq!(
        common::log_level("2026-11-29T01:38:37.092687Z ERROR pmi_sinks::kafka: failed"),
        Some("ERROR")
    );
    assert_eq!(common::log_level("run: read 10 readings, 0 ERROR"), None);
}
