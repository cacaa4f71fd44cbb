//! `peer submit CAPABILITY --each FILE`: one job per line of input, in the
//! spirit of GNU parallel. `--parallel` jobs are in flight at once; results
//! come out a line each in input order; a bar (on a terminal) counts them
//! and a summary ends the run. A line that is not JSON fails that line only.

use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use jobmesh_peer::control::{self, Envelope, Request, Session, SubmitOptions};
use jobmesh_wire::Capability;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::args::{Common, SubmitArgs};
use crate::out::outln;
use crate::Via;

/// What became of one line.
enum Outcome {
    /// The job ran (to any end).
    Job(Box<Envelope>),
    /// The line was not an input.
    Bad(String),
}

#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    bad: u64,
}

pub(crate) async fn run(
    args: SubmitArgs,
    capability: Capability,
    common: &Common,
) -> anyhow::Result<u8> {
    let options = crate::submit_options(&args)?;
    let source = args.each.clone().context("--each")?;
    let stdin = source.as_os_str() == "-";
    let (reader, total): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if stdin {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let lines = count_lines(&source)?;
        let file = tokio::fs::File::open(&source)
            .await
            .with_context(|| format!("--each {}", source.display()))?;
        (Box::new(file), Some(lines))
    };
    let via = crate::connect(common).await?;
    let session = match &via {
        Via::Control(path) => Some(Session::open(path).await?),
        Via::Ephemeral(_) => None,
    };
    let bar = bar(total);
    let started = Instant::now();
    let mut tally = Tally::default();

    let lines = FramedRead::new(
        reader,
        LinesCodec::new_with_max_length(control::MAX_CONTROL_REQUEST),
    )
    .enumerate()
    .filter(|(_, l)| {
        let blank = matches!(l, Ok(t) if t.trim().is_empty());
        std::future::ready(!blank)
    });
    let submit_one = |(n, line): (usize, Result<String, tokio_util::codec::LinesCodecError>)| {
        let (via, session, options, capability, params) =
            (&via, &session, &options, &capability, &args.params);
        async move {
            let outcome = match parse(line, params) {
                Err(why) => Outcome::Bad(why),
                Ok(input) => match one(via, session.as_ref(), capability, input, options).await {
                    Ok(e) => Outcome::Job(Box::new(e)),
                    Err(e) => Outcome::Bad(format!("{e:#}")),
                },
            };
            (n + 1, outcome)
        }
    };
    let mut results = lines.map(submit_one).buffered(args.parallel as usize);
    let interrupted = loop {
        let next = tokio::select! {
            r = results.next() => r,
            _ = tokio::signal::ctrl_c() => break true,
        };
        let Some((line, outcome)) = next else {
            break false;
        };
        let say = |text: String| match &bar {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        };
        match outcome {
            Outcome::Bad(why) => {
                tally.bad += 1;
                say(format!("line {line}: {why}"));
            }
            Outcome::Job(e) => {
                if e.status == "completed" {
                    tally.completed += 1;
                } else {
                    tally.failed += 1;
                    say(format!(
                        "line {line}: job {} {}: {}",
                        e.job_id,
                        e.status,
                        e.error.as_deref().unwrap_or("no detail")
                    ));
                }
                if args.json {
                    outln!("{}", serde_json::to_string(&e)?);
                } else if let Some(r) = &e.result {
                    outln!("{r}");
                }
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
            b.set_message(format!("{} failed", tally.failed + tally.bad));
        }
    };
    // Dropping the session cancels what is still in flight.
    drop(results);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let done = tally.completed + tally.failed + tally.bad;
    eprintln!(
        "{done} lines in {secs:.2} s ({:.0}/s): {} completed, {} failed, {} not a job{}",
        done as f64 / secs.max(1e-3),
        tally.completed,
        tally.failed,
        tally.bad,
        if interrupted {
            "; interrupted, the jobs in flight were cancelled"
        } else {
            ""
        }
    );
    crate::finish(via).await;
    Ok(if interrupted {
        130
    } else if tally.failed + tally.bad > 0 {
        1
    } else {
        0
    })
}

/// One line's input, with the `--param`s added.
fn parse(
    line: Result<String, tokio_util::codec::LinesCodecError>,
    params: &[String],
) -> Result<serde_json::Value, String> {
    let text = line.map_err(|e| match e {
        tokio_util::codec::LinesCodecError::MaxLineLengthExceeded => format!(
            "over {} MiB, the most a job's input may be",
            control::MAX_CONTROL_REQUEST >> 20
        ),
        tokio_util::codec::LinesCodecError::Io(e) => format!("cannot read it: {e}"),
    })?;
    let mut input: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    crate::add_params(&mut input, params).map_err(|e| format!("{e:#}"))?;
    Ok(input)
}

/// Runs one job to its end, through the daemon's session or the one-off peer.
async fn one(
    via: &Via,
    session: Option<&Session>,
    capability: &Capability,
    input: serde_json::Value,
    options: &SubmitOptions,
) -> anyhow::Result<Envelope> {
    match (via, session) {
        (Via::Control(_), Some(session)) => {
            let req = Request::Submit {
                capability: capability.clone(),
                input,
                options: options.clone(),
                events: false,
                files: Vec::new(),
                out: None,
                out_dir: None,
                detach: false,
            };
            Ok(serde_json::from_value(session.request(&req).await?)?)
        }
        (Via::Ephemeral(h), _) => {
            let job_options = options.to_options().map_err(|e| anyhow::anyhow!("{e}"))?;
            let job = h.submit(capability.clone(), input, job_options).await?;
            Ok(Envelope::from_report(&job.result().await?))
        }
        (Via::Control(_), None) => anyhow::bail!("no session to the daemon"),
    }
}

/// The non-blank lines of `path`, for the bar.
fn count_lines(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("--each {}", path.display()))?;
    let mut n = 0;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("reading --each {}", path.display()))?;
        if !line.trim_ascii().is_empty() {
            n += 1;
        }
    }
    Ok(n)
}

/// A bar of `total` jobs (a spinner when unknown), on a terminal only.
fn bar(total: Option<u64>) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{bar:30}] {pos}/{len} jobs, {per_sec}, eta {eta}; {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}
