//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses only some of the helpers

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Every record batch of every Parquet file under `dir` (recursively), files in name order;
/// none when `dir` does not exist (no file published yet).
pub fn parquet_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack: Vec<PathBuf> = dir
        .exists()
        .then(|| dir.to_path_buf())
        .into_iter()
        .collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                .unwrap()
                .build()
                .unwrap()
        })
        .map(|b| b.unwrap())
        .collect()
}

/// Every record batch of every `*.parquet` object under an `s3://bucket/prefix` URL (the
/// endpoint from the `AWS_*` environment), objects in name order; staged files and
/// markers (names under `_`) are not read.
pub fn s3_batches(url: &str) -> Vec<RecordBatch> {
    let store = pmi_sources::store::Store::open(url).unwrap();
    let mut out = Vec::new();
    for meta in store.list().unwrap() {
        let name = meta.location.as_ref();
        if !name.ends_with(".parquet") || name.split('/').any(|p| p.starts_with('_')) {
            continue;
        }
        let bytes = store.get(&meta.location).unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            out.push(b.unwrap());
        }
    }
    out
}

/// Names of the `*.parquet` objects under an `s3://` URL (relative to the bucket).
pub fn s3_files(url: &str) -> Vec<String> {
    pmi_sources::store::Store::open(url)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|n| n.ends_with(".parquet"))
        .collect()
}

/// Every feature row under `dir/features`: (vehicle, pane end, value bits), sorted.
pub fn feature_rows(dir: &Path) -> Vec<(String, i64, Vec<u64>)> {
    feature_rows_of(parquet_batches(&dir.join("features")))
}

/// Feature rows of `batches`: (vehicle, pane end, value bits), sorted.
pub fn feature_rows_of(batches: Vec<RecordBatch>) -> Vec<(String, i64, Vec<u64>)> {
    let mut rows = Vec::new();
    for batch in batches {
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

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hostfile for a cluster of two processes on free loopback ports, written in `dir`;
/// returns its path as the `--hostfile` argument.
pub fn two_process_hostfile(dir: &Path) -> String {
    let hosts = dir.join("hosts");
    let ports = (free_port(), free_port());
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports.0, ports.1),
    )
    .unwrap();
    hosts.to_str().unwrap().to_owned()
}

/// A name no other test (or run of the tests) uses: `name-<pid>-<nanoseconds>`.
pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The `pmi` binary, to run in `dir` with warnings-only logs.
pub fn pmi(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pmi"));
    c.current_dir(dir).env("PMI_LOG", "warn");
    c
}

/// Runs `c`; fails the test with its output if it fails, else returns its stdout.
pub fn check(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Readings read, from a run's report line (`…: read N readings: …`).
pub fn read_count(report: &str) -> u64 {
    let after = report.split("read ").nth(1).expect(report);
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The level of a line `tracing`'s formatter wrote (`ERROR`, `WARN`…: the word after the
/// timestamp, colour codes removed), or `None` for any other line.
pub fn log_level(line: &str) -> Option<&'static str> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI escape: `ESC [ … m`.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let level = plain.split_whitespace().nth(1)?;
    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
        .into_iter()
        .find(|l| *l == level)
}
