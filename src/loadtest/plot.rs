//! `--plot out.svg`: the latency percentile distribution, drawn the way HdrHistogram's plotter
//! draws it: percentile on a log scale of 1/(1-p) (so 90%, 99%, 99.9% … are evenly spaced and the
//! tail gets as much room as the median), latency on a linear scale, one line per request kind.
//!
//! Hand-written SVG: one chart of polylines and labels does not justify a plotting library.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::latency::Latencies;
use super::mix::RequestKind;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// Decades of 1/(1-p) shown: up to 99.999%.
const DECADES: f64 = 5.0;

/// One line of the chart: its label, its colour and its points.
type Series = (&'static str, &'static str, Vec<(f64, u64)>);

/// The points of one distribution: (decades of 1/(1-p), latency in µs).
fn points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, u64)> = h
        .iter_quantiles(5)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 {
                DECADES
            } else {
                (1.0 / (1.0 - q)).log10().min(DECADES)
            };
            (x, h.highest_equivalent(v.value_iterated_to()))
        })
        .collect();
    out.push((DECADES, h.highest_equivalent(h.max())));
    out
}

/// The chart, as a complete SVG document.
pub fn svg(latencies: &Latencies, title: &str) -> String {
    let mut series: Vec<Series> = vec![("all", "#000000", points(&latencies.overall()))];
    let colors = ["#1f77b4", "#d62728", "#2ca02c"];
    for (kind, color) in RequestKind::ALL.into_iter().zip(colors) {
        let h = latencies.of_kind(kind);
        if !h.is_empty() {
            series.push((kind.as_str(), color, points(h)));
        }
    }
    let top_value = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, y)| y))
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = nice_ceiling(top_value);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / DECADES * plot_w;
    let py = |y: u64| TOP + plot_h - y as f64 / y_max as f64 * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = px(i as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let v = y_max * i / 5;
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (µs)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = WIDTH - RIGHT + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{name}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: u64) -> u64 {
    let mut base = 1u64;
    loop {
        for m in [1, 2, 5] {
            if base * m >= v {
                return base * m;
            }
        }
        base *= 10;
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(nice_ceiling(999), 1000);
    }

    #[test]
    fn the_chart_has_a_line_per_kind_that_ends_at_the_maximum() {
        let mut l = Latencies::default();
        for us in 1..=1000 {
            l.record(RequestKind::PreflightAllowed, Duration::from_micros(us));
            l.record(RequestKind::Get, Duration::from_micros(us * 2));
        }
        let svg = svg(&l, "a & b");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("a &amp; b"));
        assert!(svg.contains(">preflight-allowed<") && svg.contains(">get<"));
        // The y axis tops out at the next round value above the 2000 µs maximum.
        assert!(svg.contains(">2000</text>"), "{svg}");
    }

    #[test]
    fn percentiles_climb_left_to_right() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for us in 1..=10_000 {
            h.record(us).unwrap();
        }
        let p = points(&h);
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        // The maximum, as the top of its 3-significant-digit bucket.
        let max = p.last().unwrap().1;
        assert!((10_000..10_010).contains(&max), "{max}");
    }
}
