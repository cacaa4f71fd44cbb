//! What `peer submit` shows while a job runs: a progress bar on a terminal,
//! JSON lines on stderr with `--json`, nothing otherwise.

use std::time::Duration;

/// Shows a job's events: a progress bar on a terminal, JSON lines on stderr
/// with `--json`, nothing otherwise.
pub(crate) struct Progress {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(crate) fn new(json: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(100);
            let style =
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { json, bar }
    }

    pub(crate) fn event(&mut self, e: &serde_json::Value) {
        if self.json {
            eprintln!("{e}");
            return;
        }
        let Some(bar) = &self.bar else { return };
        let name = e["event"].as_str().unwrap_or_default();
        match name {
            "progress" => {
                if let Some(p) = e["progress"]["percent"].as_u64() {
                    bar.set_position(p);
                }
                let stage = e["progress"]["stage"].as_str().unwrap_or_default();
                let msg = e["progress"]["message"].as_str().unwrap_or_default();
                bar.set_message(format!("{stage} {msg}"));
            }
            "retrying" => bar.set_message(format!(
                "retrying after: {}",
                e["error"].as_str().unwrap_or_default()
            )),
            other => bar.set_message(other.to_owned()),
        }
    }

    pub(crate) fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
