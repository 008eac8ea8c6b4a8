//! Two `pmi` processes forming one timely cluster on loopback give exactly the outputs of
//! one process with as many workers.

mod common;

use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};

/// Every feature row under `dir/features`: (vehicle, pane end, value bits), sorted.
fn features(dir: &Path) -> Vec<(String, i64, Vec<u64>)> {
    let mut rows = Vec::new();
    for batch in common::parquet_batches(&dir.join("features")) {
        let ids = batch.column_by_name("vehicle_id").unwrap();
        let ids = ids.as_string::<i32>();
        let ends = batch.column_by_name("pane_end").unwrap();
        let ends = ends.as_primitive::<TimestampMillisecondType>();
        let values: Vec<_> = batch
            .columns()
            .iter()
            .filter(|c| *c.data_type() == DataType::Float64)
            .map(|c| c.as_primitive::<Float64Type>().clone())
            .collect();
        for r in 0..batch.num_rows() {
            let bits = values
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        u64::MAX
                    } else {
                        c.value(r).to_bits()
                    }
                })
                .collect();
            rows.push((ids.value(r).to_owned(), ends.value(r), bits));
        }
    }
    rows.sort();
    rows
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

#[test]
fn a_two_process_cluster_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let hostfile = hosts.to_str().unwrap();
    let spawn = |i: &str| {
        pmi(
            dir.path(),
            &[
                "--workers",
                "1",
                "--processes",
                "2",
                "--process",
                i,
                "--hostfile",
                hostfile,
                "--out",
                &format!("p{i}"),
            ],
        )
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("0"), spawn("1"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let single = pmi(dir.path(), &["--workers", "2", "--out", "single"])
        .output()
        .unwrap();
    assert!(single.status.success(), "{single:?}");

    let (p0, p1) = (
        features(&dir.path().join("p0")),
        features(&dir.path().join("p1")),
    );
    assert!(!p0.is_empty() && !p1.is_empty(), "both processes did work");
    let mut cluster = [p0, p1].concat();
    cluster.sort();
    let one = features(&dir.path().join("single"));
    assert_eq!(cluster.len(), one.len());
    assert!(
        cluster == one,
        "the cluster's features differ from one process's"
    );

    // A bad hostfile is a clear error naming it.
    std::fs::write(&hosts, "127.0.0.1:1\n").unwrap();
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
