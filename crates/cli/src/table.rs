//! The tables `peer jobs` and `peer peers` print: plain aligned columns, no
//! borders, numbers on the right, no trailing blanks (fit for `column`,
//! `grep` and `awk`).

use comfy_table::{presets, CellAlignment, Table};

/// `header` over `rows`; the columns in `right` are right-aligned.
pub(crate) fn render(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    // Two blanks between columns, none at either end of a line.
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// A duration of `ms` milliseconds as people read it: `870ms`, `1.24s`,
/// `3m 20s`; `-` for none.
pub(crate) fn duration(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        // Whole seconds past a minute: humantime's "3m 20s".
        Some(ms) => {
            humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
        }
    }
}

/// A Unix time in milliseconds as a UTC time of day, `07:41:03.125Z`.
pub(crate) fn time_of_day(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let full = humantime::format_rfc3339_millis(at).to_string();
    // "2026-12-07T07:41:03.125Z": the date is noise in a live stream.
    full.get(11..).unwrap_or(&full).to_owned()
}

/// `peer status` for people.
pub(crate) fn status(r: &jobmesh_peer::status::StatusReport) -> String {
    let mut out = format!(
        "pool: {} worker{}{}, {} submitter{}; {} of {} slots busy; {} jobs queued; {} completed, {} failed since the workers started\n",
        r.workers,
        if r.workers == 1 { "" } else { "s" },
        if r.draining > 0 { format!(" ({} draining)", r.draining) } else { String::new() },
        r.submitters,
        if r.submitters == 1 { "" } else { "s" },
        r.busy,
        r.slots,
        r.queued,
        r.completed,
        r.failed,
    );
    let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let rows = r
        .capabilities
        .iter()
        .map(|c| {
            vec![
                c.capability.to_string(),
                c.workers.to_string(),
                c.slots.to_string(),
                c.busy.to_string(),
                c.completed.to_string(),
                c.failed.to_string(),
                rate(c.completed_per_min),
                rate(c.failed_per_min),
                duration(c.mean_run_ms),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&render(
        &[
            "CAPABILITY",
            "WORKERS",
            "SLOTS",
            "BUSY",
            "COMPLETED",
            "FAILED",
            "DONE/MIN",
            "FAILED/MIN",
            "MEAN RUN",
        ],
        rows,
        &[1, 2, 3, 4, 5, 6, 7, 8],
    ));
    if let Some(w) = r.rate_window_s {
        out.push_str(&format!("\n(rates over the last {w:.0} s)"));
    } else {
        out.push_str("\n(rates after this daemon has watched the pool for a few seconds)");
    }
    if !r.slowest.is_empty() {
        let rows = r
            .slowest
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.capability.to_string(),
                    duration(Some(s.mean_run_ms)),
                    s.finished.to_string(),
                ]
            })
            .collect();
        out.push_str("\n\n");
        out.push_str(&render(
            &["SLOWEST", "CAPABILITY", "MEAN RUN", "FINISHED"],
            rows,
            &[2, 3],
        ));
    }
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!(
        "\n\nthis daemon ({}): live jobs: {}; recent: {}",
        r.me.name,
        counts(&r.me.live),
        counts(&r.me.recent)
    ));
    if let Some((file, bytes)) = &r.me.journal {
        let size = match *bytes {
            b if b < 1 << 20 => format!("{} KiB", b.div_ceil(1024)),
            b => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        };
        out.push_str(&format!("; journal {} ({size})", file.display()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let out = render(
            &["JOB", "CAPABILITY", "N"],
            vec![
                vec!["a".into(), "thumbnail".into(), "7".into()],
                vec!["bbbb".into(), "ocr".into(), "12".into()],
            ],
            &[2],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "JOB   CAPABILITY   N",
                "a     thumbnail    7",
                "bbbb  ocr         12"
            ],
            "{out}"
        );
    }

    #[test]
    fn durations_and_times_read_as_people_write_them() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(870)), "870ms");
        assert_eq!(duration(Some(1_240)), "1.24s");
        assert_eq!(duration(Some(200_400)), "3m 20s");
        assert_eq!(time_of_day(1_796_629_263_125), "07:41:03.125Z");
    }
}
