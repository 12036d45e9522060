//! `--svg PATH`: the results as a picture, drawn with plotters' SVG backend from the results
//! alone, beside the text report and independent of it.
//!
//! A comparison is a grid: a row per scenario, a panel per measure (throughput, p99, server
//! CPU per message; bytes per connection for idle connections; the small connections' p99
//! and p99.9 and the stream's throughput for fairness). Each panel has horizontal bars, one
//! per server, so server names sit in a column on the left and never overlap; each bar is
//! labelled with its value and the table's marks (‡ the load generator may have set the
//! pace, ⚠ problems). A server has one colour in every panel. Scenarios differ by orders of
//! magnitude, so each panel has its own scale, with ticks at round numbers.
//!
//! `--find-max` draws latency against achieved throughput instead: one server's p50, p99
//! and p99.9, or (with `--compare`) every server's SLO percentile, one panel per scenario;
//! the SLO as a dashed line, and each server's highest sustainable rate (the knee) marked.

use std::io;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::findmax::{FindMaxReport, Percentile};
use crate::human::{bytes, micros};
use crate::results::{CompareReport, Outcome, RunResult};
use crate::scenario::{Scenario, Shape};

/// The width of every chart, in pixels.
const WIDTH: u32 = 1200;
/// Panels per row of a comparison.
const COLUMNS: usize = 3;

/// One colour per server, by its column in the table: the same in every panel and chart.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the server in column `column`.
fn colour(column: usize) -> RGBColor {
    PALETTE[column % PALETTE.len()]
}

/// What a panel's numbers are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// Per second.
    Rate,
    /// Microseconds.
    Micros,
    /// Bytes.
    Bytes,
    /// MiB per second.
    MibPerSecond,
}

/// One measure of a scenario: its caption and how to read it from a cell.
struct Measure {
    caption: &'static str,
    unit: Unit,
    value: fn(&Outcome) -> Option<f64>,
    /// What else the bar's label says (the fairness row: the value alone, without the stream).
    note: fn(&Outcome) -> Option<String>,
}

impl Measure {
    fn new(caption: &'static str, unit: Unit, value: fn(&Outcome) -> Option<f64>) -> Measure {
        Measure { caption, unit, value, note: |_| None }
    }
}

/// The measures drawn for a scenario.
fn measures(scenario: Scenario) -> Vec<Measure> {
    let cpu = |o: &Outcome| o.server_cpu().map(|(per, _)| per);
    fn echo(o: &Outcome) -> Option<&crate::run::EchoReport> {
        if let Outcome::Echo(e) = o { Some(e) } else { None }
    }
    fn churn(o: &Outcome) -> Option<&crate::run::ChurnReport> {
        if let Outcome::Churn(c) = o { Some(c) } else { None }
    }
    fn fair(o: &Outcome) -> Option<&crate::fairness::FairnessReport> {
        if let Outcome::Fairness(f) = o { Some(f) } else { None }
    }
    match scenario.shape() {
        Shape::Echo { .. } | Shape::Udp { .. } => vec![
            Measure::new("msgs/s (higher is better)", Unit::Rate, |o| Some(echo(o)?.msgs_per_s)),
            Measure::new("p99 round trip (lower is better)", Unit::Micros, |o| Some(echo(o)?.latency.p99_us)),
            Measure::new("server CPU per message (lower is better)", Unit::Micros, cpu),
        ],
        Shape::Churn { .. } => vec![
            Measure::new("connections/s (higher is better)", Unit::Rate, |o| Some(churn(o)?.conns_per_s)),
            Measure::new("p99 connect + echo (lower is better)", Unit::Micros, |o| {
                Some(churn(o)?.latency.p99_us)
            }),
            Measure::new("server CPU per connection (lower is better)", Unit::Micros, cpu),
        ],
        Shape::Idle { .. } => {
            vec![Measure::new("server memory per connection (lower is better)", Unit::Bytes, |o| match o {
                Outcome::Idle(m) => m.bytes_per_connection,
                _ => None,
            })]
        }
        Shape::Fairness { .. } => vec![
            Measure {
                note: |o| Some(format!("alone {}", micros(fair(o)?.small_p99_us.alone))),
                ..Measure::new("small conns' p99 beside the stream (lower)", Unit::Micros, |o| {
                    Some(fair(o)?.small_p99_us.beside_stream)
                })
            },
            Measure {
                note: |o| Some(format!("alone {}", micros(fair(o)?.small_p999_us.alone))),
                ..Measure::new("small conns' p99.9 beside the stream (lower)", Unit::Micros, |o| {
                    Some(fair(o)?.small_p999_us.beside_stream)
                })
            },
            Measure::new("the stream's MiB/s (higher is better)", Unit::MibPerSecond, |o| {
                Some(fair(o)?.stream_mib_per_s)
            }),
        ],
    }
}

/// One bar: a server's value in one panel.
struct Bar<'a> {
    model: &'a str,
    /// The server's column in the table, which picks its colour.
    column: usize,
    /// `None`: the run failed or did not measure this.
    value: Option<f64>,
    /// ‡ and ⚠, as the table has them.
    marks: String,
    /// More for the label, if the measure has it.
    note: Option<String>,
}

/// Draw a comparison to `path`: the bar grid, or with `--find-max` the curves.
pub fn draw(report: &CompareReport, path: &Path) -> io::Result<()> {
    if report.runs.iter().any(|r| matches!(r.outcome, Outcome::FindMax(_))) {
        return draw_compare_curves(report, path);
    }
    let models = report.models();
    let rows = report.scenarios();
    let row_height = 70 + 22 * models.len() as u32;
    let height = 60 + row_height * rows.len() as u32 + 30;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let (top, rest) = root.split_vertically(60);
    top.draw(&Text::new(title(report), (WIDTH as i32 / 2, 12), centred(20))).map_err(failed)?;
    top.draw(&Text::new(legend(), (WIDTH as i32 / 2, 40), centred(13))).map_err(failed)?;
    let name_width = 20 + 7 * models.iter().map(|m| m.chars().count()).max().unwrap_or(8) as u32;
    for (i, scenario) in rows.iter().enumerate() {
        let area = rest.clone().shrink((0, row_height * i as u32), (WIDTH, row_height));
        draw_row(&area, report, *scenario, &models, name_width)?;
    }
    root.present().map_err(|e| io::Error::other(format!("cannot write {}: {e}", path.display())))
}

fn title(report: &CompareReport) -> String {
    format!(
        "echoloop bench --compare: {} CPUs ({}){}",
        report.machine.cpus,
        if report.machine.cpu_model.is_empty() { "unknown CPU" } else { &report.machine.cpu_model },
        if report.settings.pinned { ", servers on CPU 0, load generator on CPU 1" } else { "" }
    )
}

fn legend() -> &'static str {
    "‡ the load generator may have set the pace (a thread at ≥ 95% of a CPU, or behind its schedule) · \
     ⚠ the run had problems (see the table)"
}

/// A scenario's row: its title, then a panel per measure.
fn draw_row(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &CompareReport,
    scenario: Scenario,
    models: &[&str],
    name_width: u32,
) -> io::Result<()> {
    let (head, panels) = area.split_vertically(26);
    let style = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
    head.draw(&Text::new(scenario.title(), (10, 6), style)).map_err(failed)?;
    let columns = panels.split_evenly((1, COLUMNS));
    for (measure, panel) in measures(scenario).iter().zip(&columns) {
        let bars: Vec<Bar<'_>> = models
            .iter()
            .enumerate()
            .filter_map(|(column, model)| {
                let run = report.find(model, scenario)?;
                let (value, note) = ((measure.value)(&run.outcome), (measure.note)(&run.outcome));
                Some(Bar { model, column, value, marks: marks(run), note })
            })
            .collect();
        draw_bars(panel, measure, &bars, name_width)?;
    }
    Ok(())
}

/// " ‡", " ⚠", both or neither.
fn marks(run: &RunResult) -> String {
    let bound = if run.outcome.client_bound() { " ‡" } else { "" };
    let problem = if run.is_clean() { "" } else { " ⚠" };
    format!("{bound}{problem}")
}

/// One panel: a horizontal bar per server, names on the left, values at the bars' ends.
fn draw_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    measure: &Measure,
    bars: &[Bar<'_>],
    name_width: u32,
) -> io::Result<()> {
    let n = bars.len().max(1);
    let most = bars.iter().filter_map(|b| b.value).fold(0.0, f64::max);
    // Plotted in the unit people read (KiB, ms), so that the axis's own round ticks are
    // round in that unit too.
    let scale = display_scale(most, measure.unit);
    let ticks = round_ticks(most, measure.unit);
    // Room to the right of the longest bar for its label.
    let top = ticks.last().copied().unwrap_or(1.0).max(most / 0.68) / scale;
    // The axis counts from the bottom; the table's first server goes on top.
    let row = |i: usize| n - 1 - i;
    let names: Vec<&str> = bars.iter().rev().map(|b| b.model).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(measure.caption, ("sans-serif", 13))
        .margin_right(10)
        .margin_left(4)
        .x_label_area_size(22)
        .y_label_area_size(name_width)
        .build_cartesian_2d(0.0..top, (0..n - 1).into_segmented())
        .map_err(failed)?;
    let unit = measure.unit;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .y_labels(n)
        .y_label_style(("sans-serif", 12))
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_string(),
            _ => String::new(),
        })
        .x_labels(5)
        .x_label_style(("sans-serif", 10))
        .x_label_formatter(&|x| tick_label(*x * scale, unit))
        .draw()
        .map_err(failed)?;
    let at = |bar: &Bar<'_>| bar.value.unwrap_or(0.0) / scale;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, bar)| {
            let mut rect = Rectangle::new(
                [(0.0, SegmentValue::Exact(row(i))), (at(bar), SegmentValue::Exact(row(i) + 1))],
                colour(bar.column).filled(),
            );
            rect.set_margin(3, 3, 0, 0);
            rect
        }))
        .map_err(failed)?;
    let label = TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, bar)| {
            let note = bar.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
            let text = match bar.value {
                Some(v) => format!(" {}{note}{}", value_label(v, measure.unit), bar.marks),
                None => format!(" failed{}", bar.marks),
            };
            Text::new(text, (at(bar), SegmentValue::CenterOf(row(i))), label.clone())
        }))
        .map_err(failed)?;
    Ok(())
}

/// A bar's label: "45.1k/s", "1.25 ms", "185 B", "812 MiB/s".
fn value_label(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate => format!("{}/s", crate::human::count(v)),
        Unit::Micros => micros(v),
        Unit::Bytes => bytes(v),
        Unit::MibPerSecond => format!("{v:.0} MiB/s"),
    }
}

/// Ticks from 0 at a round step (1, 2 or 5 times a power of ten, in the unit people read:
/// KiB for bytes, ms for a latency of milliseconds), reaching at least `most`.
fn round_ticks(most: f64, unit: Unit) -> Vec<f64> {
    let scale = display_scale(most, unit);
    let most = (most / scale).max(1e-9);
    let raw = most / 4.0;
    let power = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power);
    let count = (most / step).ceil() as usize;
    (0..=count.max(1)).map(|i| i as f64 * step * scale).collect()
}

/// The unit's scale for numbers around `most`: 1024^k for bytes, 1000 for ms, else 1.
fn display_scale(most: f64, unit: Unit) -> f64 {
    match unit {
        Unit::Bytes => {
            [1u64 << 30, 1 << 20, 1 << 10].into_iter().map(|s| s as f64).find(|s| most >= *s).unwrap_or(1.0)
        }
        Unit::Micros if most >= 1e6 => 1e6,
        Unit::Micros if most >= 1e3 => 1e3,
        _ => 1.0,
    }
}

/// A tick's label: round numbers without trailing zeros ("20k", "1.5 ms", "5 KiB").
fn tick_label(x: f64, unit: Unit) -> String {
    let tidy = |v: f64| {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if x == 0.0 {
        return "0".into();
    }
    match unit {
        Unit::MibPerSecond => tidy(x),
        Unit::Rate => match x {
            x if x >= 1e6 => format!("{}M", tidy(x / 1e6)),
            x if x >= 1e3 => format!("{}k", tidy(x / 1e3)),
            x => tidy(x),
        },
        Unit::Micros => match x {
            x if x >= 1e6 => format!("{} s", tidy(x / 1e6)),
            x if x >= 1e3 => format!("{} ms", tidy(x / 1e3)),
            x => format!("{} µs", tidy(x)),
        },
        Unit::Bytes => {
            let units = [("GiB", (1u64 << 30) as f64), ("MiB", (1u64 << 20) as f64), ("KiB", 1024.0)];
            match units.iter().find(|(_, s)| x >= *s) {
                Some((name, s)) => format!("{} {name}", tidy(x / s)),
                None => format!("{} B", tidy(x)),
            }
        }
    }
}

/// One line of a latency-against-throughput chart.
struct Curve {
    label: String,
    colour: RGBColor,
    /// (achieved per second, latency in µs), in the order the rates were asked.
    points: Vec<(f64, f64)>,
    /// The highest sustainable rate's point, to mark.
    knee: Option<(f64, f64)>,
    /// What to write beside the knee, if anything.
    knee_label: Option<String>,
}

/// Curves of one search: `percentiles` of its steps, each in its own colour (or all in
/// `colour` when there is one).
fn curves_of(report: &FindMaxReport, percentiles: &[(Percentile, RGBColor)], label: &str) -> Vec<Curve> {
    let mut steps: Vec<_> = report.steps.iter().filter(|s| s.asked_per_s.is_some()).collect();
    steps.sort_by(|a, b| a.asked_per_s.partial_cmp(&b.asked_per_s).unwrap_or(std::cmp::Ordering::Equal));
    percentiles
        .iter()
        .map(|(p, colour)| {
            let points: Vec<(f64, f64)> =
                steps.iter().map(|s| (s.achieved_per_s, p.of(&s.latency).max(1.0))).collect();
            let knee = report.answer.rate_per_s.and_then(|rate| {
                let step = steps.iter().find(|s| s.asked_per_s == Some(rate))?;
                Some((step.achieved_per_s, p.of(&step.latency).max(1.0)))
            });
            let label = if percentiles.len() > 1 { p.name().to_string() } else { label.to_string() };
            // One label per search: on the curve of the SLO's own percentile.
            let knee_label = (*p == report.slo.percentile)
                .then(|| report.answer.rate_per_s.map(|r| format!("  {}/s", crate::human::count(r))))
                .flatten();
            Curve { label, colour: *colour, points, knee, knee_label }
        })
        .collect()
}

/// `--find-max` on one server: p50, p99 and p99.9 against achieved throughput, to `path`.
pub fn draw_findmax(report: &FindMaxReport, path: &Path) -> io::Result<()> {
    let shades = [
        (Percentile::P50, RGBColor(44, 160, 44)),
        (Percentile::P99, RGBColor(31, 119, 180)),
        (Percentile::P999, RGBColor(148, 103, 189)),
    ];
    let curves = curves_of(report, &shades, "");
    let title = format!("echoloop bench --find-max {}: latency against throughput", report.target);
    let subtitle = format!(
        "{} connections × {}, open loop, {:.1}s per step; SLO {}{}",
        report.connections,
        bytes(report.size as f64),
        report.duration_s,
        report.slo,
        report
            .answer
            .rate_per_s
            .map(|r| format!("; highest sustainable rate {}/s", crate::human::count(r)))
            .unwrap_or_default()
    );
    draw_curve_panels(&title, &[(subtitle, report.slo.limit_us, curves)], path)
}

/// `--compare --find-max`: every server's SLO percentile against throughput, one panel
/// per scenario.
fn draw_compare_curves(report: &CompareReport, path: &Path) -> io::Result<()> {
    let models = report.models();
    let mut panels = Vec::new();
    for scenario in report.scenarios() {
        let mut slo = None;
        let mut curves = Vec::new();
        for (column, model) in models.iter().enumerate() {
            let Some(Outcome::FindMax(m)) = report.find(model, scenario).map(|r| &r.outcome) else {
                continue;
            };
            slo = Some(m.slo);
            let rate =
                m.answer.rate_per_s.map(|r| format!(": {}/s", crate::human::count(r))).unwrap_or_default();
            let marks = report.find(model, scenario).map(marks).unwrap_or_default();
            curves.extend(curves_of(
                m,
                &[(m.slo.percentile, colour(column))],
                &format!("{model}{rate}{marks}"),
            ));
        }
        if let Some(slo) = slo {
            panels.push((format!("{} (SLO {slo})", scenario.title()), slo.limit_us, curves));
        }
    }
    let title = format!("{}: the SLO's percentile against throughput, knees marked", title(report));
    draw_curve_panels(&title, &panels, path)
}

/// Panels of curves, one under the other, to `path`.
fn draw_curve_panels(title: &str, panels: &[(String, f64, Vec<Curve>)], path: &Path) -> io::Result<()> {
    let panel_height = 460;
    let height = 50 + panel_height * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let (top, rest) = root.split_vertically(50);
    top.draw(&Text::new(title.to_string(), (WIDTH as i32 / 2, 14), centred(18))).map_err(failed)?;
    for (i, (caption, slo_us, curves)) in panels.iter().enumerate() {
        let area = rest.clone().shrink((0, panel_height * i as u32), (WIDTH, panel_height));
        draw_curve_panel(&area, caption, *slo_us, curves)?;
    }
    root.present().map_err(|e| io::Error::other(format!("cannot write {}: {e}", path.display())))
}

/// One panel: latency (log scale) against achieved throughput, the SLO dashed, knees
/// marked with a ring and their rate.
fn draw_curve_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    slo_us: f64,
    curves: &[Curve],
) -> io::Result<()> {
    let points = curves.iter().flat_map(|c| c.points.iter());
    let most_rate = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let (low, high) =
        points.map(|p| p.1).chain([slo_us]).fold((f64::MAX, 1.0f64), |(l, h), v| (l.min(v), h.max(v)));
    let x_top = round_ticks(most_rate * 1.05, Unit::Rate).last().copied().unwrap_or(1.0);
    let y_ticks = decades(low / 1.5, high * 1.5);
    let (y_low, y_high) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_top, (y_low..y_high).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(y_ticks.len() * 3)
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .x_desc("achieved msgs/s")
        .y_desc("round trip, from each message's due time")
        .x_label_formatter(&|x| tick_label(*x, Unit::Rate))
        .y_label_formatter(&|y| tick_label(*y, Unit::Micros))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(failed)?;
    let slo_style = ShapeStyle::from(&RED.mix(0.7)).stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new([(0.0, slo_us), (x_top, slo_us)], 8, 6, slo_style))
        .map_err(failed)?
        .label(format!("SLO {}", micros(slo_us)))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], slo_style));
    let mut labelled = 0;
    for curve in curves {
        let colour = curve.colour;
        chart
            .draw_series(LineSeries::new(curve.points.iter().copied(), colour.stroke_width(2)).point_size(3))
            .map_err(failed)?
            .label(curve.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        let Some((rate, latency)) = curve.knee else { continue };
        chart.draw_series([Circle::new((rate, latency), 8, colour.stroke_width(2))]).map_err(failed)?;
        let Some(text) = &curve.knee_label else { continue };
        // A dotted drop from the knee to the axis, and its rate down there, where no
        // curve runs (each search's label a line higher than the last).
        let drop = ShapeStyle::from(&colour.mix(0.6)).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new([(rate, y_low), (rate, latency)], 3, 3, drop))
            .map_err(failed)?;
        let style = TextStyle::from(("sans-serif", 13).into_font())
            .color(&colour)
            .pos(Pos::new(HPos::Left, VPos::Bottom));
        let label = EmptyElement::at((rate, y_low))
            + Text::new(text.trim().to_string(), (4, -4 - 16 * labelled), style);
        chart.draw_series([label]).map_err(failed)?;
        labelled += 1;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(failed)?;
    Ok(())
}

/// Powers of ten covering `low..high` (at least two), for a log axis.
fn decades(low: f64, high: f64) -> Vec<f64> {
    let first = low.max(1e-3).log10().floor() as i32;
    let last = (high.max(low * 10.0).log10().ceil() as i32).max(first + 1);
    (first..=last).map(|e| 10f64.powi(e)).collect()
}

fn centred(size: u32) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Top))
}

fn failed(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing the chart: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_in_the_unit_people_read() {
        assert_eq!(round_ticks(45_100.0, Unit::Rate), [0.0, 20_000.0, 40_000.0, 60_000.0]);
        assert_eq!(round_ticks(7.9, Unit::Rate), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(round_ticks(2_300.0, Unit::Micros), [0.0, 1000.0, 2000.0, 3000.0]);
        let kib = round_ticks(18.4 * 1024.0, Unit::Bytes);
        assert_eq!(kib, [0.0, 5.0, 10.0, 15.0, 20.0].map(|k| k * 1024.0));
        assert_eq!(
            kib.iter().map(|b| tick_label(*b, Unit::Bytes)).collect::<Vec<_>>(),
            ["0", "5 KiB", "10 KiB", "15 KiB", "20 KiB"]
        );
        assert_eq!(tick_label(1500.0, Unit::Micros), "1.5 ms");
        assert_eq!(tick_label(20_000.0, Unit::Rate), "20k");
        assert_eq!(tick_label(250.0, Unit::Micros), "250 µs");
        assert_eq!(decades(40.0, 2500.0), [10.0, 100.0, 1000.0, 10_000.0]);
        assert_eq!(display_scale(18_000.0, Unit::Bytes), 1024.0);
        assert_eq!(display_scale(2300.0, Unit::Micros), 1000.0);
    }
}
