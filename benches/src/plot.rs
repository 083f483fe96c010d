//! A small SVG bar chart: per-layer GFLOP/s against the measured peak.

use std::fmt::Write;

/// One bar: a label and a value in GFLOP/s.
pub struct Bar {
    /// Layer name.
    pub label: String,
    /// GFLOP/s.
    pub gflops: f64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG document with one horizontal bar chart per `(title, bars)` group, each with a dashed
/// line at `peak` GFLOP/s.
pub fn svg(groups: &[(String, Vec<Bar>)], peak: f64) -> String {
    let (row, left, width, bar_w) = (16.0, 220.0, 900.0, 600.0);
    let max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|b| b.gflops))
        .fold(peak, f64::max)
        .max(1.0);
    let height: f64 = groups
        .iter()
        .map(|(_, b)| 40.0 + row * b.len() as f64)
        .sum::<f64>()
        + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mut y = 20.0;
    for (title, bars) in groups {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{y}" font-size="13" font-weight="bold">{} — GFLOP/s per layer (dashed: measured peak {peak:.0})</text>"#,
            esc(title)
        );
        y += 10.0;
        let top = y;
        for b in bars {
            let w = bar_w * b.gflops.max(0.0) / max;
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{}" width="{w:.1}" height="{}" fill="#4878a8"/><text x="{}" y="{}">{:.0}</text>"##,
                left - 6.0,
                y + row - 4.0,
                esc(&b.label),
                y + 2.0,
                row - 4.0,
                left + w + 4.0,
                y + row - 4.0,
                b.gflops
            );
            y += row;
        }
        let px = left + bar_w * peak / max;
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{y}" stroke="#c03030" stroke-dasharray="4 3"/>"##
        );
        y += 30.0;
    }
    s.push_str("</svg>\n");
    s
}
