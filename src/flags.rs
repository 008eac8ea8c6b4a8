//! Every flag of every subcommand settable three ways, as DESIGN.md's interfaces ask: on
//! the command line, by a `PMI_*` environment variable, and in the TOML settings file.
//!
//! - **Environment.** A flag declared with its own variable keeps it (`--kafka-brokers`:
//!   `PMI_KAFKA_BROKERS`, shared by the subcommands that take it); every other flag gets
//!   `PMI_<SUBCOMMAND>_<FLAG>`, upper case with `-` as `_` (`pmi run --kafka-any-time`:
//!   `PMI_RUN_KAFKA_ANY_TIME`). `pmi <subcommand> --help` shows each variable.
//! - **File.** A `[flags.<subcommand>]` table of the settings file sets flags by their long
//!   name (`[flags.run]` `speed = "max"`, `duration = "2h"`, `no-agents = true`; `_` and
//!   `-` are the same in keys). A value counts only when neither the command line nor the
//!   environment set that flag, so the layers stay defaults → file → environment → command
//!   line. An unknown subcommand or flag in the file is an error naming it.
//!
//! The structured sections of the file (`[run]`, `[kafka]`, `[alerts]`, …) hold the same
//! settings the crates' config structs take; a flag given in `[flags.*]` is a flag given,
//! and so wins over them as a command-line flag would.
//!
//! Written by hand rather than with a layered-config crate: clap already knows every flag,
//! its parser and whether the command line or the environment set it, so the file only
//! has to become more arguments for the same parser.

use std::collections::BTreeMap;
use std::ffi::OsString;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The `[flags]` tables of the settings file: subcommand → flag → value.
pub type FileFlags = BTreeMap<String, toml::Table>;

/// `command` with a `PMI_<SUBCOMMAND>_<FLAG>` variable for every subcommand flag that has
/// none of its own.
pub fn with_env(command: Command) -> Command {
    command.mut_subcommands(|sub| {
        let prefix = format!("PMI_{}_", env_part(sub.get_name()));
        sub.mut_args(|arg| {
            if arg.get_env().is_some() || arg.is_positional() || arg.is_global_set() {
                return arg;
            }
            match arg
                .get_long()
                .map(|long| format!("{prefix}{}", env_part(long)))
            {
                Some(var) => arg.env(var),
                None => arg,
            }
        })
    })
}

fn env_part(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The arguments `argv` (as `matches` parsed them) plus those the file's `[flags]` tables
/// set for the chosen subcommand and that the command line and environment left unset.
pub fn from_file(
    command: &Command,
    matches: &ArgMatches,
    mut argv: Vec<OsString>,
    file: &FileFlags,
) -> anyhow::Result<Vec<OsString>> {
    for name in file.keys() {
        if command.find_subcommand(name).is_none() {
            bail!("config file: [flags.{name}]: pmi has no subcommand `{name}`");
        }
    }
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(table) = file.get(name) else {
        return Ok(argv);
    };
    let sub = command
        .find_subcommand(name)
        .expect("the subcommand that was parsed exists");
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .with_context(|| {
                format!("config file: [flags.{name}]: `pmi {name}` has no flag --{long}")
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            sub_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let at = || format!("config file: [flags.{name}] {key}");
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value {
                toml::Value::Boolean(true) => argv.push(format!("--{long}").into()),
                toml::Value::Boolean(false) => {}
                other => bail!("{}: expected true or false, found {other}", at()),
            },
            _ => {
                let values = match value {
                    toml::Value::Array(items) => items.iter().map(scalar).collect(),
                    one => vec![scalar(one)],
                };
                for v in values {
                    argv.push(format!("--{long}={}", v.with_context(at)?).into());
                }
            }
        }
    }
    Ok(argv)
}

fn scalar(value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        other => bail!("expected a string, number or boolean, found {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn command() -> Command {
        Command::new("pmi")
            .arg(Arg::new("config").long("config").global(true))
            .subcommand(
                Command::new("run")
                    .arg(Arg::new("speed").long("speed").default_value("realtime"))
                    .arg(Arg::new("vehicles").long("vehicles"))
                    .arg(
                        Arg::new("brokers")
                            .long("kafka-brokers")
                            .env("PMI_KAFKA_BROKERS"),
                    )
                    .arg(
                        Arg::new("no_agents")
                            .long("no-agents")
                            .action(ArgAction::SetTrue),
                    )
                    .arg(
                        Arg::new("tag")
                            .long("tag")
                            .action(ArgAction::Append)
                            .num_args(1),
                    ),
            )
    }

    fn file(text: &str) -> FileFlags {
        toml::from_str(text).unwrap()
    }

    fn parse(argv: &[&str], flags: &FileFlags) -> anyhow::Result<ArgMatches> {
        let command = with_env(command());
        let argv: Vec<OsString> = argv.iter().map(Into::into).collect();
        let first = command.clone().try_get_matches_from(argv.clone())?;
        let argv = from_file(&command, &first, argv, flags)?;
        Ok(command.try_get_matches_from(argv)?)
    }

    #[test]
    fn every_subcommand_flag_gets_a_variable_unless_it_has_one() {
        let command = with_env(command());
        let run = command.find_subcommand("run").unwrap();
        let env = |id: &str| {
            run.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env("speed").as_deref(), Some("PMI_RUN_SPEED"));
        assert_eq!(env("no_agents").as_deref(), Some("PMI_RUN_NO_AGENTS"));
        assert_eq!(env("brokers").as_deref(), Some("PMI_KAFKA_BROKERS"));
    }

    #[test]
    fn file_flags_fill_what_the_command_line_left_unset() {
        let flags = file(
            r#"
            [run]
            speed = "max"
            vehicles = 50
            no_agents = true
            tag = ["a", "b"]
            "#,
        );
        let m = parse(&["pmi", "run", "--vehicles", "7"], &flags).unwrap();
        let (_, run) = m.subcommand().unwrap();
        assert_eq!(run.get_one::<String>("speed").unwrap(), "max");
        // The command line wins.
        assert_eq!(run.get_one::<String>("vehicles").unwrap(), "7");
        assert!(run.get_flag("no_agents"));
        let tags: Vec<&String> = run.get_many("tag").unwrap().collect();
        assert_eq!(tags, ["a", "b"]);
    }

    #[test]
    fn unknown_names_and_bad_values_are_errors_naming_them() {
        let e = parse(&["pmi", "run"], &file("[run]\nspeeed = \"max\"")).unwrap_err();
        assert!(e.to_string().contains("--speeed"), "{e}");
        let e = parse(&["pmi", "run"], &file("[rnu]\nspeed = \"max\"")).unwrap_err();
        assert!(e.to_string().contains("[flags.rnu]"), "{e}");
        let e = parse(&["pmi", "run"], &file("[run]\nno-agents = 1")).unwrap_err();
        assert!(e.to_string().contains("no-agents"), "{e}");
        let e = parse(&["pmi", "run"], &file("[run]\nspeed = { a = 1 }")).unwrap_err();
        assert!(format!("{e:#}").contains("[flags.run] speed"), "{e:#}");
    }
}
