//! Two `pmi` processes forming one timely cluster on loopback give exactly the outputs of
//! one process with as many workers.

mod common;

use std::path::Path;
use std::process::Command;

fn pmi(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pmi"));
    c.current_dir(dir).env("PMI_LOG", "warn").args([
        "run",
        "--speed",
        "max",
        "--duration",
        "20m",
        "--vehicles",
        "6",
        "--seed",
        "4",
        "--start-ms",
        "1767254400000",
    ]);
    c.args(args);
    c
}

/// The flags of process `i` of a two-process cluster with one worker each.
fn member<'a>(i: &'a str, hostfile: &'a str) -> [&'a str; 8] {
    [
        "--workers",
        "1",
        "--processes",
        "2",
        "--process",
        i,
        "--hostfile",
        hostfile,
    ]
}

/// Runs `command(i)` for both processes at once and checks both succeed.
fn run_both(command: impl Fn(&str) -> Command) {
    let (a, b) = (command("0").spawn().unwrap(), command("1").spawn().unwrap());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// The features under `p0` and `p1` (both non-empty) together equal those under `single`.
fn assert_same_features(dir: &Path) {
    let (p0, p1) = (
        common::feature_rows(&dir.join("p0")),
        common::feature_rows(&dir.join("p1")),
    );
    assert!(!p0.is_empty() && !p1.is_empty(), "both processes did work");
    let mut cluster = [p0, p1].concat();
    cluster.sort();
    let one = common::feature_rows(&dir.join("single"));
    assert_eq!(cluster.len(), one.len());
    assert!(
        cluster == one,
        "the cluster's features differ from one process's"
    );
}

#[test]
fn a_two_process_cluster_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = &common::two_process_hostfile(dir.path());
    run_both(|i| {
        let mut c = pmi(dir.path(), &member(i, hostfile));
        c.args(["--out", &format!("p{i}")]);
        c
    });
    let single = pmi(dir.path(), &["--workers", "2", "--out", "single"])
        .output()
        .unwrap();
    assert!(single.status.success(), "{single:?}");

    assert_same_features(dir.path());

    // A bad hostfile is a clear error naming it.
    std::fs::write(hostfile, "127.0.0.1:1\n").unwrap();
    let out = pmi(
        dir.path(),
        &["--processes", "2", "--process", "0", "--hostfile", hostfile],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hostfile"), "{err}");
}

/// A backfill split over two processes: each reads the input and keeps its own workers'
/// vehicles, so together they window every reading once, and reject every bad row once,
/// exactly as one process with as many workers does.
#[test]
fn a_two_process_backfill_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    common::check(common::pmi(dir.path()).args([
        "simulate",
        "--vehicles",
        "6",
        "--duration",
        "20m",
        "--seed",
        "9",
        "--bad-readings",
        "--start-ms",
        "1767254400000",
        "--out",
        "sim",
    ]));
    let hostfile = common::two_process_hostfile(dir.path());
    let backfill = |out: &str, extra: &[&str]| {
        let mut c = common::pmi(dir.path());
        c.args([
            "backfill",
            "--input",
            "sim/telemetry",
            "--out",
            out,
            "--no-database",
        ])
        .args(extra);
        c
    };
    run_both(|i| backfill(&format!("p{i}"), &member(i, &hostfile)));
    common::check(&mut backfill("single", &["--workers", "2"]));

    let rows = |out: &str, dataset: &str| -> usize {
        common::parquet_batches(&dir.path().join(out).join(dataset))
            .iter()
            .map(|b| b.num_rows())
            .sum()
    };
    let rejected = rows("single", "dead_letter");
    assert!(rejected > 0, "the input has bad rows");
    assert_eq!(
        rows("p0", "dead_letter") + rows("p1", "dead_letter"),
        rejected
    );
    assert_same_features(dir.path());
}
