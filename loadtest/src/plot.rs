//! Two pictures of a run, as one SVG: latency (p50, p99) and throughput
//! over time, and the latency distribution (latency against percentile,
//! with the tail stretched out as HdrHistogram plots do).

use std::fmt::Write;

use crate::report::Report;

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

fn line(points: &[(f64, f64)], colour: &str) -> String {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    format!(
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        pts.join(" ")
    )
}

/// A panel frame with a title and y ticks; returns the SVG and a mapping
/// from data to pixels.
fn frame(svg: &mut String, top: f64, title: &str, y_label: &str, y_max: f64) {
    let bottom = top + PANEL_H - 40.0;
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"14\" font-family=\"sans-serif\">{title}</text>\n\
         <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#444\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#444\"/>\n\
         <text x=\"8\" y=\"{}\" font-size=\"11\" font-family=\"sans-serif\">{y_label}</text>\n",
        top + 14.0,
        top + 24.0,
        W - RIGHT,
        top + 36.0,
    );
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        let y = bottom - (bottom - top - 24.0) * k as f64 / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{y:.1}\" font-size=\"10\" text-anchor=\"end\" font-family=\"sans-serif\">{v:.2}</text>\
             <line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
            LEFT - 4.0,
            W - RIGHT
        );
    }
}

pub fn svg(report: &Report) -> String {
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        PANEL_H * 2.0 + 20.0,
        PANEL_H * 2.0 + 20.0
    );
    let plot_w = W - LEFT - RIGHT;

    // Panel 1: latency over time.
    let secs = report.timeline.len().max(1) as f64;
    let max_ms = report
        .timeline
        .iter()
        .map(|s| s.p99_us)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let top = 10.0;
    let bottom = top + PANEL_H - 40.0;
    frame(
        &mut svg,
        top,
        &format!(
            "{} {:?}: latency over time ({:.0} req/s; blue p50, red p99)",
            report.model, report.protocol, report.qps
        ),
        "ms",
        max_ms,
    );
    let x = |i: f64| LEFT + plot_w * (i + 0.5) / secs;
    let y = |ms: f64| bottom - (bottom - top - 24.0) * ms / max_ms;
    let p50: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|s| (x(s.second as f64), y(s.p50_us as f64 / 1000.0)))
        .collect();
    let p99: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|s| (x(s.second as f64), y(s.p99_us as f64 / 1000.0)))
        .collect();
    svg.push_str(&line(&p50, "#1f77b4"));
    svg.push_str(&line(&p99, "#d62728"));
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" font-family=\"sans-serif\">seconds (0..{})</text>",
        W - RIGHT,
        bottom + 16.0,
        report.timeline.len()
    );

    // Panel 2: distribution, x = percentile on a 1/(1-q) scale.
    let top = PANEL_H + 10.0;
    let bottom = top + PANEL_H - 40.0;
    let h = &report.histogram;
    let max_ms = (h.max().max(1)) as f64 / 1000.0;
    frame(
        &mut svg,
        top,
        "latency distribution (x: percentile, log scale of 1/(1-q))",
        "ms",
        max_ms,
    );
    let nines = 5.0; // up to 99.999%
    let xq = |q: f64| LEFT + plot_w * ((1.0 / (1.0 - q)).log10() / nines).min(1.0);
    let y = |ms: f64| bottom - (bottom - top - 24.0) * ms / max_ms;
    if !h.is_empty() {
        let points: Vec<(f64, f64)> = (0..=200)
            .map(|i| {
                let q = 1.0 - 10f64.powf(-nines * i as f64 / 200.0);
                (xq(q), y(h.value_at_quantile(q) as f64 / 1000.0))
            })
            .collect();
        svg.push_str(&line(&points, "#2ca02c"));
    }
    for (q, label) in [
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
    ] {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" font-family=\"sans-serif\">{label}</text>",
            xq(q),
            bottom + 14.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
