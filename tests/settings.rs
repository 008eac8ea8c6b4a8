//! The settings layers through the `pmi` binary: a flag set in the file's `[flags.run]`
//! table, overridden by its environment variable, overridden by the command line.

use std::process::Command;

/// Runs `pmi --config FILE run` on 2 simulated vehicles at 1 Hz and returns how many
/// readings it read (which says which `--duration` won).
fn readings(file: &str, env: Option<(&str, &str)>, extra: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pmi.toml");
    std::fs::write(&config, file).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pmi"));
    cmd.arg("--config")
        .arg(&config)
        .args([
            "run",
            "--vehicles",
            "2",
            "--speed",
            "max",
            "--no-agents",
            "--out",
        ])
        .arg(dir.path().join("out"))
        .args(extra)
        .env_remove("PMI_DURATION")
        .env_remove("PMI_DATABASE_URL");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("run: read "))
        .unwrap();
    line["run: read ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn file_then_environment_then_command_line() {
    let file = "[flags.run]\nduration = \"10m\"\n";
    assert_eq!(readings(file, None, &[]), 2 * 600);
    assert_eq!(readings(file, Some(("PMI_DURATION", "5m")), &[]), 2 * 300);
    assert_eq!(
        readings(file, Some(("PMI_DURATION", "5m")), &["--duration", "2m"]),
        2 * 120
    );
}

#[test]
fn an_unknown_flag_in_the_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pmi.toml");
    std::fs::write(&config, "[flags.run]\nvehicels = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pmi"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--vehicels"), "{stderr}");
}
