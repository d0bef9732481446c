//! The report: sections of rows (ours, baseline, target, verdict) rendered as
//! Markdown, with the machine it ran on.

use std::time::Duration;

use crate::chart::{self, Comparison};
use crate::sizes::Sizes;

/// One row of the report.
pub struct Row {
    pub figure: String,
    pub ours: String,
    pub baseline: String,
    pub target: String,
    pub met: Option<bool>,
}

pub struct Report {
    pub sizes: Sizes,
    /// Figure 1's p50, for the figures set beside it.
    pub figure_1_p50: Option<std::time::Duration>,
    sections: Vec<(String, Vec<Row>, Vec<String>)>,
    comparisons: Vec<Comparison>,
}

impl Report {
    pub fn new(sizes: Sizes) -> Self {
        Self {
            sizes,
            figure_1_p50: None,
            sections: Vec::new(),
            comparisons: Vec::new(),
        }
    }

    pub fn section(&mut self, title: &str, rows: Vec<Row>, notes: Vec<String>) {
        eprintln!("  ✓ measured: {title}");
        self.sections.push((title.to_owned(), rows, notes));
    }

    /// Takes the sections and chart entries of a report measured apart.
    pub fn merge(&mut self, other: Report) {
        self.sections.extend(other.sections);
        self.comparisons.extend(other.comparisons);
    }

    /// Adds a figure to the chart (ours beside its baseline).
    pub fn compare(&mut self, comparison: Comparison) {
        self.comparisons.push(comparison);
    }

    /// The chart of every comparison, as SVG.
    pub fn chart(&self) -> String {
        chart::svg(&self.comparisons)
    }

    /// The report as Markdown; `chart_file` is the chart's name beside it.
    pub fn render(&self, took: Duration, chart_file: &str) -> String {
        let machine = machine();
        let mut out = String::new();
        out.push_str("# Benchmark results\n\n");
        out.push_str(&format!(
            "Produced by `bash bench/run.sh`{} in one run of {:.0} s on {machine}. Every figure below, ours and baseline, was measured in that run.\n\n![tenant-config beside its baselines]({chart_file})\n\n",
            if self.sizes.smoke { " --smoke (tiny sizes: figures are not meaningful)" } else { "" },
            took.as_secs_f64()
        ));
        // Sections are measured in the order the stack allows (the token
        // vending figure needs the shared stack, the store-failure figures
        // their own) and shown in figure order.
        let mut sections: Vec<_> = self.sections.iter().collect();
        sections.sort_by_key(|(title, _, _)| figure_number(title));
        for (title, rows, notes) in sections {
            out.push_str(&format!("## {title}\n\n| figure | ours | baseline | target | |\n| --- | --- | --- | --- | --- |\n"));
            for row in rows {
                let verdict = match row.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "",
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    row.figure, row.ours, row.baseline, row.target, verdict
                ));
            }
            out.push('\n');
            for note in notes {
                out.push_str(&format!("- {note}\n"));
            }
            out.push('\n');
        }
        out
    }
}

/// The number a section's title starts with (`"10. Token vending"` → 10);
/// a title without one goes last.
fn figure_number(title: &str) -> u32 {
    title
        .split_once(". ")
        .and_then(|(number, _)| number.parse().ok())
        .unwrap_or(u32::MAX)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {memory}, {} ({rustc})",
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizes::SMOKE;

    #[test]
    fn sections_are_shown_in_figure_order_whatever_order_they_were_measured_in() {
        let mut report = Report::new(SMOKE);
        for title in ["2. Two", "10. Ten", "1. One", "9. Nine"] {
            report.section(title, Vec::new(), Vec::new());
        }
        let text = report.render(Duration::from_secs(1), "chart.svg");
        let order: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("## "))
            .collect();
        assert_eq!(order, ["1. One", "2. Two", "9. Nine", "10. Ten"]);
    }
}
