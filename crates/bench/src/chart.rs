//! `--svg PATH`: the comparison as small multiples, one panel per scenario, one bar per
//! model, each bar labelled with its value. Scenarios differ by orders of magnitude
//! (a 64 KiB message against a 64 B one), so each panel has its own scale: compare the
//! bars within a panel, not across panels. Drawn with plotters' SVG backend from the
//! results alone, beside the text report and independent of it.

use std::io;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::human::{bytes, count};
use crate::results::{CompareReport, Outcome};
use crate::scenario::{Scenario, Shape};

/// The canvas, in pixels.
const SIZE: (u32, u32) = (1200, 780);

/// One colour per server, by its column in the table, the same in every panel.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(114, 176, 222),
    RGBColor(214, 99, 39),
    RGBColor(128, 128, 128),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
];

/// One bar: a server's value in one scenario. A failed run is a zero bar labelled so.
struct Bar<'a> {
    model: &'a str,
    /// The server's column in the table, which picks its colour.
    column: usize,
    value: f64,
    label: String,
}

/// One scenario's bars.
struct Panel<'a> {
    title: String,
    unit: &'static str,
    bars: Vec<Bar<'a>>,
}

/// Draw the chart to `path`.
pub fn draw(report: &CompareReport, path: &Path) -> io::Result<()> {
    let panels: Vec<Panel<'_>> = report.scenarios().into_iter().map(|s| panel(report, s)).collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let title = format!(
        "echoloop bench --compare: {} CPUs ({}){}",
        report.machine.cpus,
        report.machine.cpu_model,
        if report.settings.pinned { ", server on CPU 0, load generator on CPU 1" } else { "" }
    );
    let root = root.titled(&title, ("sans-serif", 22)).map_err(failed)?;
    let columns = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(columns).max(1);
    let areas = root.split_evenly((rows, columns));
    for (area, panel) in areas.iter().zip(&panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(|e| io::Error::other(format!("cannot write {}: {e}", path.display())))
}

/// The bars of one scenario.
fn panel(report: &CompareReport, scenario: Scenario) -> Panel<'_> {
    let bars = report.models().into_iter().enumerate().filter_map(|(column, model)| {
        let (value, label) = bar_value(&report.find(model, scenario)?.outcome);
        Some(Bar { model, column, value, label })
    });
    let unit = match scenario.shape() {
        Shape::Echo { .. } => "msgs/s (higher is better)",
        Shape::Churn { .. } => "connections/s (higher is better)",
        Shape::Idle { .. } => "bytes per connection (lower is better)",
        Shape::Udp { .. } => "datagrams/s (higher is better)",
    };
    Panel { title: scenario.title(), unit, bars: bars.collect() }
}

/// A bar's height and label: msgs/s, connections/s, or bytes per idle connection.
fn bar_value(outcome: &Outcome) -> (f64, String) {
    match outcome {
        Outcome::Echo(e) => (e.msgs_per_s, count(e.msgs_per_s)),
        Outcome::Churn(c) => (c.conns_per_s, count(c.conns_per_s)),
        Outcome::Idle(m) => {
            let b = m.bytes_per_connection.unwrap_or(0.0);
            (b, bytes(b))
        }
        Outcome::Failed { .. } => (0.0, "failed".to_string()),
    }
}

fn draw_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel<'_>) -> io::Result<()> {
    let n = panel.bars.len().max(1);
    let top = panel.bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1.0) * 1.18;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(62)
        // An integer range is inclusive here: 0..n-1 makes n segments, one per bar.
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(failed)?;
    let names: Vec<&str> = panel.bars.iter().map(|b| b.model).collect();
    let unit_is_bytes = panel.unit.starts_with("bytes");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(n)
        .x_label_style(("sans-serif", 11))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_string(),
            _ => String::new(),
        })
        .y_labels(5)
        .y_label_formatter(&|y| if unit_is_bytes { bytes(*y) } else { count(*y) })
        .y_desc(panel.unit)
        .axis_desc_style(("sans-serif", 12))
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(panel.bars.iter().enumerate().map(|(i, bar)| {
            let colour = PALETTE[bar.column % PALETTE.len()];
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), bar.value)],
                colour.filled(),
            );
            bar.set_margin(0, 0, 10, 10);
            bar
        }))
        .map_err(failed)?;
    let label_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(panel.bars.iter().enumerate().map(|(i, bar)| {
            Text::new(bar.label.clone(), (SegmentValue::CenterOf(i), bar.value), label_style.clone())
        }))
        .map_err(failed)?;
    Ok(())
}

fn failed(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing the chart: {e}"))
}
