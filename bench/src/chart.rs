//! The chart in the report: one panel per comparison people make (ours beside
//! its baseline), each bar labelled with its measured value. Plain SVG, so it
//! renders on GitHub next to RESULTS.md with no plotting dependency.

/// One figure measured for us and for its baseline, in the same unit.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub title: String,
    pub ours: f64,
    pub ours_label: String,
    pub baseline_name: String,
    pub baseline: f64,
    pub baseline_label: String,
}

const WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 190.0;
const BAR_AREA: f64 = WIDTH - LABEL_WIDTH - 150.0;
const PANEL_HEIGHT: f64 = 78.0;
const BAR_HEIGHT: f64 = 20.0;
const OURS_COLOR: &str = "#2b6cb0";
const BASELINE_COLOR: &str = "#a0aec0";

/// Renders the comparisons as an SVG document. Bars of one panel share a
/// linear scale (the longer bar fills the width), so each panel reads as
/// "how many times longer"; panels do not share a scale.
pub fn svg(comparisons: &[Comparison]) -> String {
    let height = 40.0 + PANEL_HEIGHT * comparisons.len() as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">tenant-config (blue) beside its baseline (grey); shorter is better</text>
"#
    );
    for (i, comparison) in comparisons.iter().enumerate() {
        let top = 40.0 + PANEL_HEIGHT * i as f64;
        let longest = comparison
            .ours
            .max(comparison.baseline)
            .max(f64::MIN_POSITIVE);
        let bar = |value: f64| (value / longest * BAR_AREA).max(1.0);
        out.push_str(&format!(
            r#"<text x="10" y="{}" font-weight="bold">{}</text>
"#,
            top + 14.0,
            escape(&comparison.title)
        ));
        for (row, (name, value, label, color)) in [
            (
                "tenant-config",
                comparison.ours,
                &comparison.ours_label,
                OURS_COLOR,
            ),
            (
                comparison.baseline_name.as_str(),
                comparison.baseline,
                &comparison.baseline_label,
                BASELINE_COLOR,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let y = top + 22.0 + row as f64 * (BAR_HEIGHT + 4.0);
            let width = bar(value);
            out.push_str(&format!(
                r#"<text x="10" y="{}">{}</text>
<rect x="{LABEL_WIDTH}" y="{y}" width="{width:.1}" height="{BAR_HEIGHT}" fill="{color}"/>
<text x="{:.1}" y="{}">{}</text>
"#,
                y + 15.0,
                escape(name),
                LABEL_WIDTH + width + 6.0,
                y + 15.0,
                escape(label),
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(ours: f64, baseline: f64) -> Comparison {
        Comparison {
            title: "warm read p50 <in-process>".into(),
            ours,
            ours_label: format!("{ours} µs"),
            baseline_name: "Powertools".into(),
            baseline,
            baseline_label: format!("{baseline} µs"),
        }
    }

    #[test]
    fn the_longer_bar_fills_the_panel_and_the_shorter_is_to_scale() {
        let svg = svg(&[comparison(2.0, 200.0)]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(&format!(r#"width="{BAR_AREA:.1}""#)), "{svg}");
        assert!(
            svg.contains(&format!(r#"width="{:.1}""#, BAR_AREA / 100.0)),
            "{svg}"
        );
        assert!(svg.contains("warm read p50 &lt;in-process&gt;"));
        assert!(svg.contains("200 µs") && svg.contains("2 µs"));
    }

    #[test]
    fn every_comparison_gets_its_own_panel() {
        let svg = svg(&[comparison(1.0, 2.0), comparison(3.0, 4.0)]);
        assert_eq!(svg.matches("<rect x=").count(), 4);
        assert!(svg.contains(r#"height="196""#), "{svg}");
    }
}
