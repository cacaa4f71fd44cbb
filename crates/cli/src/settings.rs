//! The settings file: every flag of `peer` as a TOML key (its long name,
//! `grace-secs = 10` or `grace_secs = 10`), and exec handlers
//! (`[[handler]]`). A flag beats its `JOBMESH_*` variable, which beats the
//! file, which beats the default: the file's values are handed to clap as
//! flags, but only for settings neither the command line nor the
//! environment gave.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, CommandFactory, FromArgMatches};

use crate::args::{Cli, DaemonArgs};

/// Largest settings file read.
const MAX_FILE: u64 = 1024 * 1024;

/// What the settings file held.
#[derive(Default)]
pub(crate) struct Settings {
    /// The file, if one was read.
    pub(crate) path: Option<PathBuf>,
    /// Its `[[handler]]` entries, as TOML text for `exec::parse`.
    pub(crate) handlers: Option<String>,
    /// The arg ids whose value came from it.
    from_file: HashSet<String>,
}

impl Settings {
    /// Whether arg `id`'s value came from the file.
    pub(crate) fn gave(&self, id: &str) -> bool {
        self.from_file.contains(id)
    }
}

/// The `[[handler]]` entries of the settings file at `path`, as TOML text
/// for `exec::parse` (read again on SIGHUP).
pub(crate) fn handlers_in(path: &Path) -> Result<String, String> {
    let mut table = read(path)?;
    let mut only = toml::Table::new();
    if let Some(h) = table.remove("handler") {
        only.insert("handler".into(), h);
    }
    Ok(only.to_string())
}

/// The settings file used when `--config` is not given, if it exists.
fn default_path() -> Option<PathBuf> {
    dirs::config_dir()
        .map(|d| d.join("jobmesh").join("peer.toml"))
        .filter(|p| p.is_file())
}

/// The ids of the daemon's own flags (refused beside a subcommand).
fn daemon_only() -> HashSet<String> {
    DaemonArgs::augment_args(Command::new("daemon"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Parses the command line `argv` with the settings file folded in.
pub(crate) fn parse(argv: Vec<OsString>) -> Result<(Cli, ArgMatches, Settings), clap::Error> {
    let mut command = Cli::command();
    let first = command.try_get_matches_from_mut(argv.clone())?;
    let sub = first.subcommand_name().map(str::to_owned);
    let daemon_only = daemon_only();
    // `peer config` shows what the daemon would run with: its flags count.
    let daemon_flags_allowed = matches!(sub.as_deref(), None | Some("config"));
    let path = first
        .get_one::<PathBuf>("config")
        .cloned()
        .or_else(default_path);
    let mut settings = Settings::default();
    let mut injected: Vec<OsString> = Vec::new();
    if let Some(path) = &path {
        let table = read(path).map_err(|e| command.error(clap::error::ErrorKind::Io, e))?;
        for (key, value) in table {
            if key == "handler" {
                let mut only = toml::Table::new();
                only.insert(key, value);
                settings.handlers = Some(only.to_string());
                continue;
            }
            let long = key.replace('_', "-");
            let Some(arg) = command.get_arguments().find(|a| {
                a.get_long() == Some(&long)
                    && !matches!(long.as_str(), "config" | "help" | "version")
            }) else {
                return Err(command.error(
                    clap::error::ErrorKind::UnknownArgument,
                    format!("{}: unknown setting {key:?}; the keys are the flags of `peer --help` without their dashes (and [[handler]] entries)", path.display()),
                ));
            };
            let id = arg.get_id().to_string();
            if daemon_only.contains(&id) && !daemon_flags_allowed {
                continue;
            }
            if matches!(
                first.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let flags = as_flags(&long, arg.get_action(), &value).map_err(|why| {
                command.error(
                    clap::error::ErrorKind::InvalidValue,
                    format!("{}: {key}: {why}", path.display()),
                )
            })?;
            injected.extend(flags);
            settings.from_file.insert(id);
        }
    }
    settings.path = path;
    let matches = if injected.is_empty() {
        first
    } else {
        let mut all = vec![argv.first().cloned().unwrap_or_else(|| "peer".into())];
        all.extend(injected);
        all.extend(argv.into_iter().skip(1));
        let file = settings.path.as_deref().map(Path::display);
        Cli::command().try_get_matches_from(all).map_err(|e| {
            let file = file.map(|f| f.to_string()).unwrap_or_default();
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let why = first.strip_prefix("error: ").unwrap_or(first);
            command.error(e.kind(), format!("in the settings file {file}: {why}"))
        })?
    };
    if let Some(sub) = sub.as_deref().filter(|_| !daemon_flags_allowed) {
        for id in &daemon_only {
            if matches.value_source(id) == Some(ValueSource::CommandLine) {
                let flag = id.replace('_', "-");
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("--{flag} is a flag of the daemon (`peer --{flag} ...`), not of `peer {sub}`"),
                ));
            }
        }
    }
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    Ok((cli, matches, settings))
}

/// The settings file's table, size-limited.
fn read(path: &Path) -> Result<toml::Table, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the settings file {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "the settings file {} is over 1 MiB",
            path.display()
        ));
    }
    text.parse::<toml::Table>().map_err(|e| {
        format!(
            "the settings file {} is not valid TOML: {e}",
            path.display()
        )
    })
}

/// One setting as the flags clap would have been given.
fn as_flags(long: &str, action: &ArgAction, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expected a string, a number or a boolean".to_owned()),
    };
    match (action, value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![format!("--{long}").into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err("expected true or false".into()),
        (_, toml::Value::Array(items)) => items
            .iter()
            .map(|v| Ok(format!("--{long}={}", scalar(v)?).into()))
            .collect(),
        (_, v) => Ok(vec![format!("--{long}={}", scalar(v)?).into()]),
    }
}

/// `peer config`: every setting of the daemon as TOML, with its source.
pub(crate) fn show(matches: &ArgMatches, settings: &Settings) -> String {
    let command = Cli::command();
    let mut lines = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "config" | "help" | "version") {
            continue;
        }
        let source = if settings.from_file.contains(id) {
            format!(
                "file {}",
                settings
                    .path
                    .as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            )
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".into(),
                Some(ValueSource::EnvVariable) => format!(
                    "env {}",
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                Some(ValueSource::DefaultValue) => "default".into(),
                _ => "not set".into(),
            }
        };
        let value = if matches!(arg.get_action(), ArgAction::SetTrue) {
            Some(matches.get_flag(id).to_string())
        } else {
            matches.get_raw(id).map(|raw| {
                let items: Vec<String> = raw.map(|v| toml_value(&v.to_string_lossy())).collect();
                let many = matches!(arg.get_action(), ArgAction::Append)
                    || arg.get_value_delimiter().is_some();
                match (many, items.as_slice()) {
                    (false, [one]) => one.clone(),
                    _ => format!("[{}]", items.join(", ")),
                }
            })
        };
        lines.push(match (value, daemon_default(long)) {
            (Some(v), _) => (format!("{long} = {v}"), source),
            // Defaults decided at start rather than by clap.
            (None, Some(v)) => (
                format!("{long} = {}", toml::Value::String(v)),
                "default".into(),
            ),
            (None, None) => (format!("# {long} ="), source),
        });
    }
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out: String = lines
        .into_iter()
        .map(|(l, s)| format!("{l:<width$}  # {s}\n"))
        .collect();
    if let Some(h) = &settings.handlers {
        out.push('\n');
        out.push_str(h);
    }
    out
}

/// What the daemon uses for a shared flag nobody set.
fn daemon_default(long: &str) -> Option<String> {
    match long {
        "signal" => Some(crate::DEFAULT_SIGNAL.to_owned()),
        "name" => Some(jobmesh_peer::default_name()),
        _ => None,
    }
}

/// A raw flag value as TOML: a number or boolean as such, else a string.
fn toml_value(raw: &str) -> String {
    let number = raw.parse::<i64>().is_ok_and(|n| n.to_string() == raw);
    if number || raw == "true" || raw == "false" {
        raw.to_owned()
    } else {
        toml::Value::String(raw.to_owned()).to_string()
    }
}
