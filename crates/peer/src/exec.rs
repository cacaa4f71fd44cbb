//! `exec` handlers: any command as a capability, declared in a TOML file
//! (`peer --config PATH`):
//!
//! ```toml
//! [[handler]]
//! name = "wordcount"                  # the capability
//! argv = ["python3", "wc.py", "--json"]   # no shell
//! stdin = "json"                      # "json" (the job input, default), "blob" (input blob 0) or "none"
//! stdout = "json"                     # "json" (parsed, default), "text" ({"stdout": ...}) or "blob"
//! timeout_secs = 60                   # at most this long, whatever the job asks
//! env = ["PATH", "HOME"]              # variables passed through; nothing else is
//! workdir = "/srv/jobs"               # default: the daemon's working directory
//! ```
//!
//! Blobs: the job's input blobs are files, named to the command by
//! `JOBMESH_INPUT_COUNT`, `JOBMESH_INPUT_<i>` (path) and
//! `JOBMESH_INPUT_NAME_<i>`, and in argv by `{input}` (blob 0), `{input.<i>}`,
//! `{output_dir}` and `{work_dir}`. Every regular file the command leaves in
//! `JOBMESH_OUTPUT_DIR` becomes an output blob (in name order), and with
//! `stdout = "blob"` its stdout is one too (first, named `stdout`). All of it
//! lives in the job's private work dir (`JOBMESH_WORK_DIR`), removed when the
//! job ends.
//!
//! The command runs in its own process group; cancel and timeout stop the
//! whole group (SIGTERM, then SIGKILL after [`KILL_GRACE`]). Lines on stderr
//! of the form `PROGRESS <percent> [stage [text...]]` become progress events;
//! the last [`STDERR_TAIL_LINES`] other lines are kept for the error of a
//! failed run. Exit code 75 (`EX_TEMPFAIL`) marks the failure retryable.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jobmesh_wire::dc::MAX_DC_MESSAGE;
use jobmesh_wire::Capability;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::task::AbortOnDropHandle;

use crate::blobs::{Blob, InputBlob};
use crate::handler::{Handler, HandlerError, JobContext};

/// After SIGTERM, how long a cancelled command's group has before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Lines of stderr kept for the error message of a failed run.
pub const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept.
const STDERR_LINE_MAX: usize = 500;
/// Longest `timeout_secs` a handler may declare: 7 days.
const MAX_TIMEOUT_SECS: f64 = 604_800.0;
/// How long the command's pipes may stay open after it exited.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Bytes of one stderr line read at most; the rest of a longer line is read
/// and dropped, so a child writing without newlines costs no memory.
const STDERR_READ_MAX: usize = 4096;
/// The exit code that marks a failure as worth retrying (sysexits' EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: i32 = 75;

/// How the job's input reaches the command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    /// The input JSON on stdin.
    #[default]
    Json,
    /// Nothing on stdin.
    None,
    /// The first input blob's bytes on stdin.
    Blob,
}

/// How the command's stdout becomes the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdoutMode {
    /// Parsed as JSON (empty stdout is `null`).
    #[default]
    Json,
    /// Returned as `{"stdout": "..."}`.
    Text,
    /// Streamed into an output blob named `stdout`, of any size; the
    /// result is `{"stdout_bytes": N}`.
    Blob,
}

/// One `[[handler]]` of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// The capability it provides.
    pub name: String,
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// How the input reaches it.
    #[serde(default)]
    pub stdin: StdinMode,
    /// How its stdout becomes the result.
    #[serde(default)]
    pub stdout: StdoutMode,
    /// Upper bound on its run time.
    pub timeout_secs: Option<f64>,
    /// Environment variables passed through from the daemon.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default, rename = "handler")]
    handlers: Vec<ExecSpec>,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        message: String,
    },
    /// A handler is not usable.
    #[error("exec handler \"{name}\": {problem}")]
    Handler {
        /// The handler.
        name: String,
        /// What to fix.
        problem: String,
    },
}

/// A command as a [`Handler`].
#[derive(Debug, Clone)]
pub struct ExecHandler {
    spec: ExecSpec,
    program: PathBuf,
}

/// Reads and checks a config file: every handler has a valid, unique name and
/// a program that exists (so a peer refuses to start rather than fail jobs).
pub fn load(path: &Path) -> Result<Vec<(Capability, ExecHandler)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Checks a config file's text as [`load`] does; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<(Capability, ExecHandler)>, ConfigError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut seen = HashSet::new();
    file.handlers
        .into_iter()
        .map(|spec| {
            let bad = |problem: String| ConfigError::Handler {
                name: spec.name.clone(),
                problem,
            };
            let cap = Capability::new(&spec.name).map_err(|e| bad(e.to_string()))?;
            if !seen.insert(cap.clone()) {
                return Err(bad("declared twice".into()));
            }
            let program = spec
                .argv
                .first()
                .ok_or_else(|| bad("argv is empty; give at least the program".into()))?;
            let program = resolve(program).ok_or_else(|| {
                bad(format!(
                    "program {program:?} not found (looked in PATH); install it or give its absolute path"
                ))
            })?;
            if let Some(t) = spec.timeout_secs {
                if !(t > 0.0 && t <= MAX_TIMEOUT_SECS) {
                    return Err(bad(format!(
                        "timeout_secs must be more than 0 and at most {MAX_TIMEOUT_SECS} (7 days), got {t}"
                    )));
                }
            }
            if let Some(dir) = &spec.workdir {
                if !dir.is_dir() {
                    return Err(bad(format!("workdir {} is not a directory", dir.display())));
                }
            }
            Ok((cap, ExecHandler { spec, program }))
        })
        .collect()
}

/// The program's path: as given when it contains a `/`, else found in the
/// daemon's own `PATH` (not the handler's `env`) by `which`: the first
/// regular file there this user may execute.
fn resolve(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let p = PathBuf::from(program);
        let executable = p
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        return executable.then_some(p);
    }
    // `_global`: a name is never looked up in the working directory.
    which::which_global(program).ok()
}

/// A `PROGRESS <percent> [stage [text...]]` line.
fn parse_progress(line: &str) -> Option<(u8, Option<&str>, Option<&str>)> {
    let rest = line.strip_prefix("PROGRESS ")?;
    let mut parts = rest.trim().splitn(3, ' ');
    let percent: f64 = parts.next()?.parse().ok()?;
    let percent = percent.clamp(0.0, 100.0) as u8;
    let stage = parts.next().filter(|s| !s.is_empty());
    let text = parts.next().filter(|s| !s.is_empty());
    Some((percent, stage, text))
}

/// Signals a command's process group. Never group 0 or 1: `killpg(0, ..)`
/// would signal the daemon's own group.
fn signal_group(pgid: Option<Pid>, signal: Signal) -> nix::Result<()> {
    match pgid {
        Some(p) if p.as_raw() > 1 => killpg(p, signal),
        _ => Err(nix::errno::Errno::ESRCH),
    }
}

/// Stops a process group: SIGTERM, then SIGKILL after the grace period.
async fn stop_group(pgid: Option<Pid>, child: &mut tokio::process::Child) {
    let term = signal_group(pgid, Signal::SIGTERM);
    tracing::debug!(?pgid, ?term, "sent SIGTERM to the command's process group");
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?pgid,
            "the command ignored SIGTERM for {KILL_GRACE:?}; sending SIGKILL"
        );
        let _ = signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the leader left behind in its group goes too.
    let _ = signal_group(pgid, Signal::SIGKILL);
}

#[async_trait::async_trait]
impl Handler for ExecHandler {
    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        let spool_err = |e: std::io::Error| {
            HandlerError::transient(format!("cannot prepare the job's work dir: {e}"))
        };
        let work = ctx.work_dir().map_err(spool_err)?.to_owned();
        let out_dir = work.join("out");
        tokio::fs::create_dir(&out_dir).await.map_err(spool_err)?;
        let inputs = ctx.blobs().to_vec();
        let stdin_blob = match (self.spec.stdin, inputs.first()) {
            (StdinMode::Blob, None) => {
                return Err(HandlerError::permanent(format!(
                    "{} reads input blob 0 on stdin, but the job has no blob",
                    self.spec.name
                )))
            }
            (StdinMode::Blob, Some(b)) => Some(b.path.clone()),
            _ => None,
        };
        let args = self.spec.argv[1..]
            .iter()
            .map(|a| expand(a, &inputs, &out_dir, &work))
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::permanent)?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(args)
            .env_clear()
            .env("JOBMESH_JOB_ID", ctx.job_id().to_string())
            .env("JOBMESH_WORK_DIR", &work)
            .env("JOBMESH_OUTPUT_DIR", &out_dir)
            .env("JOBMESH_INPUT_COUNT", inputs.len().to_string())
            .process_group(0)
            .stdin(match self.spec.stdin {
                StdinMode::Json | StdinMode::Blob => Stdio::piped(),
                StdinMode::None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (i, b) in inputs.iter().enumerate() {
            cmd.env(format!("JOBMESH_INPUT_{i}"), &b.path);
            if let Some(name) = &b.name {
                cmd.env(format!("JOBMESH_INPUT_NAME_{i}"), name);
            }
        }
        for name in &self.spec.env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(dir) = &self.spec.workdir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            HandlerError::permanent(format!("cannot start {}: {e}", self.program.display()))
        })?;
        // The child leads its own group (`process_group(0)`): its pid is the group id.
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(HandlerError::permanent("command pipes missing"));
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input must not block the job.
            match stdin_blob {
                Some(path) => {
                    tokio::spawn(async move {
                        if let Ok(mut f) = tokio::fs::File::open(&path).await {
                            let _ = tokio::io::copy(&mut f, &mut stdin).await;
                        }
                    });
                }
                None => {
                    let bytes = serde_json::to_vec(&input).unwrap_or_default();
                    tokio::spawn(async move {
                        let _ = stdin.write_all(&bytes).await;
                    });
                }
            }
        }
        let progress_ctx = ctx.clone();
        // Aborted on every way out: a reader must not outlive its job.
        let stderr_task = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL_LINES);
            let mut stderr = BufReader::new(stderr);
            let mut raw = Vec::new();
            while let Ok(true) = read_line_bounded(&mut stderr, &mut raw).await {
                let line = String::from_utf8_lossy(&raw);
                if let Some((percent, stage, text)) = parse_progress(&line) {
                    progress_ctx.progress(Some(percent), stage, text);
                } else {
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(jobmesh_wire::truncate(&line, STDERR_LINE_MAX));
                }
            }
            tail
        }));
        let stdout_file = work.join("stdout");
        let to_file = (self.spec.stdout == StdoutMode::Blob).then(|| stdout_file.clone());
        let stdout_task = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut out = Vec::new();
            match to_file {
                // Streamed to disk: memory stays flat whatever the size.
                Some(path) => {
                    let copied = match tokio::fs::File::create(&path).await {
                        Ok(mut f) => tokio::io::copy(&mut { stdout }, &mut f).await,
                        Err(e) => Err(e),
                    };
                    return Err(copied);
                }
                None => {
                    let mut limited = stdout.take(MAX_DC_MESSAGE as u64 + 1);
                    let _ = limited.read_to_end(&mut out).await;
                }
            }
            Ok(out)
        }));
        let limit = self.timeout().unwrap_or(Duration::MAX);
        let status = tokio::select! {
            s = child.wait() => s,
            () = ctx.cancelled().cancelled() => {
                stop_group(pgid, &mut child).await;
                return Err(HandlerError::permanent("cancelled"));
            }
            () = tokio::time::sleep(limit) => {
                stop_group(pgid, &mut child).await;
                return Err(HandlerError::transient(format!(
                    "{} ran longer than its timeout_secs ({limit:?})", self.spec.name
                )));
            }
        };
        // The leader exited; stray members of its group are stopped too.
        let _ = signal_group(pgid, Signal::SIGKILL);
        let status =
            status.map_err(|e| HandlerError::permanent(format!("waiting for the command: {e}")))?;
        // What is left in the pipes comes at once; a process the command
        // started in a session of its own (setsid) may hold them open for
        // ever, and neither the job nor its slot waits for that.
        let outputs = async { tokio::join!(stdout_task, stderr_task) };
        let (out, tail) = tokio::select! {
            (out, tail) = outputs => (
                out.unwrap_or_else(|_| Ok(Vec::new())),
                tail.unwrap_or_default(),
            ),
            () = ctx.cancelled().cancelled() => return Err(HandlerError::permanent("cancelled")),
            () = tokio::time::sleep(PIPE_GRACE) => {
                return Err(HandlerError::permanent(format!(
                    "{} exited, but a process it started still holds its stdout or stderr open \
                     {PIPE_GRACE:?} later (one in its own session, which stopping the command's \
                     group does not reach); close them in processes left running",
                    self.spec.name
                )));
            }
        };
        if !status.success() {
            let tail: Vec<String> = tail.into_iter().collect();
            let why = match status.code() {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_owned(),
            };
            let message = format!("{} failed with {why}: {}", self.spec.name, tail.join("\n"));
            return Err(HandlerError {
                message,
                retryable: status.code() == Some(EXIT_TEMPFAIL),
            });
        }
        let out = match out {
            Ok(out) => out,
            Err(copied) => {
                let n = copied.map_err(|e| {
                    HandlerError::transient(format!("cannot spool the command's stdout: {e}"))
                })?;
                ctx.attach(Blob::from_file(&stdout_file).with_name("stdout"));
                attach_outputs(&ctx, &out_dir).await?;
                return Ok(json!({ "stdout_bytes": n }));
            }
        };
        attach_outputs(&ctx, &out_dir).await?;
        if out.len() > MAX_DC_MESSAGE {
            return Err(HandlerError::permanent(format!(
                "stdout is larger than {MAX_DC_MESSAGE} bytes; set stdout = \"blob\" for large outputs"
            )));
        }
        match self.spec.stdout {
            StdoutMode::Blob => Ok(Value::Null), // handled above
            StdoutMode::Text => Ok(json!({ "stdout": String::from_utf8_lossy(&out) })),
            StdoutMode::Json if out.iter().all(u8::is_ascii_whitespace) => Ok(Value::Null),
            StdoutMode::Json => serde_json::from_slice(&out).map_err(|e| {
                HandlerError::permanent(format!(
                    "stdout is not JSON ({e}); set stdout = \"text\" for plain output"
                ))
            }),
        }
    }
}

/// Attaches every regular file in `dir` (name order) as an output blob.
async fn attach_outputs(ctx: &JobContext, dir: &Path) -> Result<(), HandlerError> {
    let err = |e: std::io::Error| {
        HandlerError::permanent(format!("cannot read the output dir {}: {e}", dir.display()))
    };
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(err)?;
    while let Some(e) = entries.next_entry().await.map_err(err)? {
        if e.file_type().await.map_err(err)?.is_file() {
            files.push(e.path());
        }
    }
    files.sort();
    for f in files {
        ctx.attach(Blob::from_file(f));
    }
    Ok(())
}

/// Replaces `{input}`, `{input.N}`, `{output_dir}` and `{work_dir}` in one
/// argument; an index with no blob is an error naming it.
fn expand(arg: &str, inputs: &[InputBlob], out: &Path, work: &Path) -> Result<String, String> {
    if !arg.contains('{') {
        return Ok(arg.to_owned());
    }
    let mut result = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        result.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            result.push_str(&rest[start..]);
            return Ok(result);
        };
        let key = &rest[start + 1..start + len];
        let input = |i: usize| {
            inputs
                .get(i)
                .map(|b| b.path.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    format!(
                        "argument {arg:?} needs input blob {i}, but the job has {}",
                        inputs.len()
                    )
                })
        };
        match key {
            "input" => result.push_str(&input(0)?),
            "output_dir" => result.push_str(&out.to_string_lossy()),
            "work_dir" => result.push_str(&work.to_string_lossy()),
            k => match k.strip_prefix("input.").and_then(|n| n.parse().ok()) {
                Some(i) => result.push_str(&input(i)?),
                None => result.push_str(&rest[start..=start + len]),
            },
        }
        rest = &rest[start + len + 1..];
    }
    result.push_str(rest);
    Ok(result)
}

impl ExecHandler {
    /// The handler's own time limit, if it has one.
    pub fn timeout(&self) -> Option<Duration> {
        self.spec.timeout_secs.map(Duration::from_secs_f64)
    }
}

/// Reads the next line (without its newline) into `line`, keeping at most
/// [`STDERR_READ_MAX`] bytes of it. `Ok(false)` at the end of the stream.
async fn read_line_bounded(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    let mut read_any = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let end = buf.iter().position(|&b| b == b'\n');
        let part = &buf[..end.unwrap_or(buf.len())];
        let room = STDERR_READ_MAX.saturating_sub(line.len());
        line.extend_from_slice(&part[..part.len().min(room)]);
        let used = end.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if end.is_some() {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_own_group_is_never_signalled() {
        // killpg(0) would hit the caller's group; these must refuse, not signal.
        for pgid in [None, Some(Pid::from_raw(0)), Some(Pid::from_raw(1))] {
            assert_eq!(
                signal_group(pgid, Signal::SIGKILL),
                Err(nix::errno::Errno::ESRCH)
            );
        }
    }

    #[test]
    fn argv_placeholders_name_the_jobs_files() {
        let inputs = vec![
            InputBlob {
                name: None,
                size: 1,
                path: "/s/a.jpg".into(),
            },
            InputBlob {
                name: None,
                size: 1,
                path: "/s/b.png".into(),
            },
        ];
        let (o, w) = (Path::new("/w/out"), Path::new("/w"));
        let e = |a| expand(a, &inputs, o, w);
        assert_eq!(e("{input}").as_deref(), Ok("/s/a.jpg"));
        assert_eq!(e("--in={input.1}").as_deref(), Ok("--in=/s/b.png"));
        assert_eq!(e("{output_dir}/t.jpg").as_deref(), Ok("/w/out/t.jpg"));
        assert_eq!(e("{work_dir}").as_deref(), Ok("/w"));
        assert_eq!(e("{other} {x").as_deref(), Ok("{other} {x"), "left alone");
        let err = e("{input.2}").expect_err("no such blob");
        assert!(err.contains("needs input blob 2"), "{err}");
    }

    #[test]
    fn progress_lines_are_parsed() {
        assert_eq!(
            parse_progress("PROGRESS 40 resizing tile 3"),
            Some((40, Some("resizing"), Some("tile 3")))
        );
        assert_eq!(parse_progress("PROGRESS 100"), Some((100, None, None)));
        assert_eq!(
            parse_progress("PROGRESS 250 x"),
            Some((100, Some("x"), None)),
            "clamped"
        );
        assert_eq!(parse_progress("PROGRESS soon"), None);
        assert_eq!(parse_progress("progress 10"), None);
    }

    #[test]
    fn a_program_is_taken_as_given_with_a_slash_else_found_in_path() {
        use std::os::unix::fs::PermissionsExt;
        let sh = resolve("sh").expect("sh is in PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(resolve("no-such-program-jobmesh"), None);
        assert_eq!(resolve(&sh.to_string_lossy()), Some(sh.clone()));
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").expect("write");
        let given = plain.to_string_lossy().into_owned();
        assert_eq!(resolve(&given), None, "not executable");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(resolve(&given), Some(plain));
        assert_eq!(resolve(&dir.path().to_string_lossy()), None, "a directory");
    }

    #[test]
    fn configs_are_checked_with_messages_that_say_what_to_fix() {
        let p = Path::new("x.toml");
        let ok = parse("[[handler]]\nname = \"cat\"\nargv = [\"cat\"]\n", p).expect("valid");
        assert_eq!(ok[0].0.as_str(), "cat");
        let missing = parse(
            "[[handler]]\nname = \"x\"\nargv = [\"no-such-program-jobmesh\"]\n",
            p,
        )
        .expect_err("missing program");
        assert!(missing.to_string().contains("not found"), "{missing}");
        let twice = parse("[[handler]]\nname = \"a\"\nargv = [\"cat\"]\n[[handler]]\nname = \"a\"\nargv = [\"cat\"]\n", p)
            .expect_err("duplicate");
        assert!(twice.to_string().contains("twice"), "{twice}");
        let unknown = parse(
            "[[handler]]\nname = \"a\"\nargv = [\"cat\"]\nshell = true\n",
            p,
        )
        .expect_err("field");
        assert!(unknown.to_string().contains("shell"), "{unknown}");
        let empty = parse("[[handler]]\nname = \"a\"\nargv = []\n", p).expect_err("empty argv");
        assert!(empty.to_string().contains("argv is empty"), "{empty}");
        // A time limit a Duration cannot hold is refused, not a panic later.
        for t in ["0", "-1", "nan", "inf", "1e300"] {
            let text = format!("[[handler]]\nname = \"a\"\nargv = [\"cat\"]\ntimeout_secs = {t}\n");
            let e = parse(&text, p).expect_err(t);
            assert!(e.to_string().contains("at most 604800"), "{t}: {e}");
        }
    }

    #[tokio::test]
    async fn a_stderr_line_without_end_is_kept_to_its_bound() {
        let mut data = vec![b'x'; 10 * STDERR_READ_MAX];
        data.extend_from_slice(b"\n50% next\nlast");
        let mut r = &data[..];
        let mut line = Vec::new();
        assert!(read_line_bounded(&mut r, &mut line).await.expect("read"));
        assert_eq!(line.len(), STDERR_READ_MAX);
        assert!(read_line_bounded(&mut r, &mut line).await.expect("read"));
        assert_eq!(line, b"50% next");
        assert!(read_line_bounded(&mut r, &mut line).await.expect("read"));
        assert_eq!(line, b"last");
        assert!(!read_line_bounded(&mut r, &mut line).await.expect("read"));
    }
}
