//! Figures, their summaries (min / median / max over repeats), the printed
//! table and the JSON file.

use serde::Serialize;

/// One measured quantity of one scenario, with one sample per repeat.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// The scenario that measured it (`round-trip`, `raw`, ...).
    pub(crate) scenario: &'static str,
    /// What it is, e.g. `p50` or `10k no-ops via the control socket`.
    pub(crate) name: String,
    /// Its unit, e.g. `ms`, `jobs/s`, `MB/s`, `MiB`.
    pub(crate) unit: &'static str,
    /// One value per repeat.
    pub(crate) samples: Vec<f64>,
}

impl Figure {
    pub(crate) fn new(
        scenario: &'static str,
        name: impl Into<String>,
        unit: &'static str,
        samples: Vec<f64>,
    ) -> Self {
        Self {
            scenario,
            name: name.into(),
            unit,
            samples,
        }
    }

    /// (min, median, max) of the samples; NaN when there are none.
    pub(crate) fn summary(&self) -> (f64, f64, f64) {
        let mut s: Vec<f64> = self
            .samples
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if s.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        s.sort_by(f64::total_cmp);
        (s[0], median_sorted(&s), s[s.len() - 1])
    }

    /// The median of the samples.
    pub(crate) fn median(&self) -> f64 {
        self.summary().1
    }
}

fn median_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; NaN when empty.
pub(crate) fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    values[i]
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The table printed at the end of a run.
pub(crate) fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<14} {:<48} {:>10} {:>10} {:>10}  {}\n",
        "scenario", "figure", "min", "median", "max", "unit"
    );
    for f in figures {
        let (lo, mid, hi) = f.summary();
        out.push_str(&format!(
            "{:<14} {:<48} {:>10} {:>10} {:>10}  {}\n",
            f.scenario,
            f.name,
            fmt(lo),
            fmt(mid),
            fmt(hi),
            f.unit
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_quantiles() {
        let f = Figure::new("x", "y", "ms", vec![3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!(f.summary(), (1.0, 2.0, 3.0));
        let g = Figure::new("x", "y", "ms", vec![4.0, 1.0]);
        assert_eq!(g.median(), 2.5);
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 51.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert!(quantile(&mut [], 0.5).is_nan());
        assert!(table(&[f]).contains("2.000"));
    }
}
