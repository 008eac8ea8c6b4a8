//! `pmi serve` as a process fed by `pmi simulate --to`: the features it writes equal those of
//! `pmi backfill` over the same readings written by `pmi simulate` to Parquet, and with bad
//! readings every reading sent is accounted for (accepted + rejected + late).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// 2026-01-01T08:00Z: vehicles drive.
const START_MS: &str = "1767254400000";

fn rows(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    common::parquet_batches(dir)
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum()
}

fn pmi(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pmi"));
    c.current_dir(dir).env("PMI_LOG", "warn").args(args);
    c
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = pmi(dir, args).output().unwrap();
    text_of(&out, args)
}

fn text_of(out: &Output, what: &[&str]) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pmi {what:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A GET on loopback: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let status = reply.split(' ').nth(1)?.parse().ok()?;
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

/// `pmi serve` on a free port, healthy.
fn serve(dir: &Path, out: &str, extra: &[&str]) -> (Child, u16) {
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--out",
        out,
        "--registry",
        "models",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    let child = pmi(dir, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while get(port, "/health").map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pmi serve not healthy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// SIGTERM, then the report line it prints once drained and flushed.
fn stop(child: Child) -> String {
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    text_of(&out, &["serve"])
}

/// The number before `word` in a report line (`read 3600 readings` → 3600 for `readings`).
fn count(report: &str, word: &str) -> u64 {
    let words: Vec<&str> = report.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.trim_end_matches([',', ';', ':']) == word)
        .unwrap_or_else(|| panic!("no `{word}` in {report}"));
    words[i - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no count before `{word}` in {report}"))
}

#[test]
fn served_features_equal_the_backfill_of_the_same_readings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fleet = [
        "--vehicles",
        "4",
        "--seed",
        "5",
        "--duration",
        "20m",
        "--start-ms",
        START_MS,
    ];

    let (child, port) = serve(d, "served", &[]);
    let url = format!("http://127.0.0.1:{port}");
    let mut args = vec!["simulate", "--to", &url, "--speed", "max", "--batch", "500"];
    args.extend_from_slice(&fleet);
    let sent = run(d, &args);
    let report = stop(child);
    assert_eq!(count(&sent, "readings"), 4 * 20 * 60, "{sent}");
    assert_eq!(count(&sent, "accepted"), 4 * 20 * 60, "{sent}");

    let mut args = vec!["simulate", "--out", "recorded"];
    args.extend_from_slice(&fleet);
    run(d, &args);
    let backfill = run(
        d,
        &[
            "backfill",
            "--input",
            "recorded/telemetry",
            "--out",
            "backfilled",
            "--registry",
            "models",
        ],
    );
    // Sent in time order at full speed: nothing is late, so the live graph sees exactly
    // what the backfill sees.
    assert_eq!(count(&report, "late"), 0, "{report}");
    assert_eq!(count(&report, "readings"), 4 * 20 * 60, "{report}");
    let (served, backfilled) = (
        common::feature_rows(&d.join("served")),
        common::feature_rows(&d.join("backfilled")),
    );
    assert!(!served.is_empty());
    assert_eq!(
        served.len() as u64,
        count(&backfill, "feature"),
        "{backfill}"
    );
    assert!(served == backfilled, "served features differ from backfill");
}

#[test]
fn every_reading_sent_is_accounted_for_with_bad_readings_and_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A small queue, so that the simulator meets 429s and has to retry.
    let (child, port) = serve(
        d,
        "served",
        &["--queue-capacity", "300", "--max-batch", "300"],
    );
    let url = format!("http://127.0.0.1:{port}");
    let sent = run(
        d,
        &[
            "simulate",
            "--to",
            &url,
            "--speed",
            "max",
            "--batch",
            "300",
            "--vehicles",
            "6",
            "--seed",
            "11",
            "--duration",
            "30m",
            "--start-ms",
            START_MS,
            "--bad-readings",
        ],
    );
    let (status, stats) = get(port, "/stats").unwrap();
    assert_eq!(status, 200);
    assert!(stats.contains("\"rejected_by_reason\""), "{stats}");
    let (status, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("pmi_ingest_readings_total{outcome=\"accepted\"}"));
    let report = stop(child);

    let n = count(&sent, "readings");
    assert!(
        n > 6 * 30 * 60,
        "bad readings add duplicates and late ones: {sent}"
    );
    assert_eq!(
        count(&sent, "accepted") + count(&sent, "rejected"),
        n,
        "{sent}"
    );
    assert!(count(&sent, "rejected") > 0, "{sent}");
    // The graph read every reading sent, rejected ones included, and lost none.
    let (read, windowed, rejected, late) = (
        count(&report, "readings"),
        count(&report, "into"),
        count(&report, "rejected"),
        count(&report, "late"),
    );
    assert_eq!(read, n, "{report}");
    assert_eq!(windowed + rejected + late, read, "{report}");
    assert!(late > 0, "held-back readings arrive late: {report}");
    assert!(
        rejected >= count(&sent, "rejected"),
        "validation rejections plus duplicates: {report}"
    );
    assert_eq!(rows(&d.join("served/dead_letter")), rejected);
    assert_eq!(rows(&d.join("served/late")), late);
}

#[test]
fn simulate_to_posts_at_real_time_pace_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (child, port) = serve(d, "served", &[]);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let sent = run(
        d,
        &[
            "simulate",
            "--to",
            &url,
            "--vehicles",
            "2",
            "--duration",
            "3s",
        ],
    );
    let elapsed = started.elapsed();
    let report = stop(child);
    // Three ticks of two vehicles, one tick per second from now.
    assert_eq!(count(&sent, "readings"), 6, "{sent}");
    assert_eq!(count(&sent, "requests"), 3, "one request per tick: {sent}");
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(count(&report, "readings"), 6, "{report}");
    assert_eq!(count(&report, "into"), 6, "{report}");
}
