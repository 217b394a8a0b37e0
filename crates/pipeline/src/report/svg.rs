//! Hand-written SVG charts: panels of line/scatter series with titles, axis labels, ticks,
//! gridlines, point labels and a shared legend. Enough for the report's plots, with no plotting
//! dependency.

use std::fmt::Write;

/// Colours (Tableau 10: distinct, readable on white, fine for most colour-vision deficiencies).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#edc948", "#ff9da7",
    "#bab0ac",
];

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Point marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// No marker.
    None,
    /// Filled circle.
    Circle,
    /// Circle outline.
    HollowCircle,
    /// Filled square.
    Square,
    /// Square outline.
    HollowSquare,
    /// Filled diamond.
    Diamond,
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Base-2 logarithm (data sizes: one tick per doubling).
    Log2,
}

/// One series of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text (series with an empty label are left out of the legend).
    pub label: String,
    /// Palette index.
    pub colour: usize,
    /// Dashed line.
    pub dashed: bool,
    /// Connect the points.
    pub line: bool,
    /// Marker.
    pub marker: Marker,
    /// `(x, y)`.
    pub points: Vec<(f64, f64)>,
    /// Text drawn next to each point (empty = none).
    pub point_labels: Vec<String>,
}

impl Series {
    /// A solid line with filled circles.
    pub fn line(label: impl Into<String>, colour: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            colour,
            dashed: false,
            line: true,
            marker: Marker::Circle,
            points,
            point_labels: Vec::new(),
        }
    }

    /// Points without a line.
    pub fn scatter(
        label: impl Into<String>,
        colour: usize,
        marker: Marker,
        points: Vec<(f64, f64)>,
    ) -> Series {
        Series {
            label: label.into(),
            colour,
            dashed: false,
            line: false,
            marker,
            points,
            point_labels: Vec::new(),
        }
    }

    /// Dashed line.
    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    /// With this marker.
    pub fn marker(mut self, marker: Marker) -> Series {
        self.marker = marker;
        self
    }

    /// With labels at the points.
    pub fn labels(mut self, labels: Vec<String>) -> Series {
        self.point_labels = labels;
        self
    }
}

/// One panel: axes and series.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Panel title.
    pub title: String,
    /// X-axis label (with unit).
    pub x_label: String,
    /// Y-axis label (with unit).
    pub y_label: String,
    /// X mapping.
    pub x_scale: Scale,
    /// Explicit x ticks (position, label; `\n` breaks lines); automatic when empty.
    pub x_ticks: Vec<(f64, String)>,
    /// Force the y range to include these values (e.g. 0).
    pub y_include: Vec<f64>,
    /// Force the x range to include these values.
    pub x_include: Vec<f64>,
    /// The series.
    pub series: Vec<Series>,
}

impl Chart {
    /// An empty panel.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            x_ticks: Vec::new(),
            y_include: Vec::new(),
            x_include: Vec::new(),
            series: Vec::new(),
        }
    }
}

/// A legend entry.
#[derive(Debug, Clone)]
pub struct LegendItem {
    /// Text.
    pub label: String,
    /// Palette index, or grey when `None` (style-only entries such as "validation: dashed").
    pub colour: Option<usize>,
    /// Dashed line sample.
    pub dashed: bool,
    /// Draw a line sample.
    pub line: bool,
    /// Marker sample.
    pub marker: Marker,
}

/// A figure: a title, panels side by side (wrapping after `columns`), a legend below.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Figure title.
    pub title: String,
    /// Line under the title (e.g. the settings shared by all runs).
    pub subtitle: String,
    /// Panels.
    pub panels: Vec<Chart>,
    /// Panels per row.
    pub columns: usize,
    /// Legend entries; built from the panels' labelled series when empty.
    pub legend: Vec<LegendItem>,
    /// Width of one panel in pixels.
    pub panel_width: f64,
}

impl Figure {
    /// A figure of `panels`, `columns` per row, 500-pixel panels, legend from the series.
    pub fn new(
        title: impl Into<String>,
        subtitle: impl Into<String>,
        panels: Vec<Chart>,
        columns: usize,
    ) -> Figure {
        Figure {
            title: title.into(),
            subtitle: subtitle.into(),
            panels,
            columns,
            legend: Vec::new(),
            panel_width: PANEL_W,
        }
    }

    /// With these legend entries.
    pub fn legend(mut self, legend: Vec<LegendItem>) -> Figure {
        self.legend = legend;
        self
    }

    /// With panels this wide.
    pub fn panel_width(mut self, width: f64) -> Figure {
        self.panel_width = width.max(300.0);
        self
    }
}

const PANEL_W: f64 = 500.0;
const PANEL_H: f64 = 340.0;
const MARGIN_L: f64 = 72.0;
const MARGIN_R: f64 = 24.0;
const MARGIN_T: f64 = 34.0;
const MARGIN_B: f64 = 64.0;
const FONT: &str = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";

/// Escape text for SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Approximate rendered width of `text` at `size` px (for layout).
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.58
}

/// "Nice" tick positions covering `[lo, hi]`: steps of 1, 2, 2.5 or 5 × 10^k.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut i = 0;
    loop {
        let t = start + i as f64 * step;
        if t > hi + step * 1e-9 {
            break;
        }
        if t >= lo - step * 1e-9 {
            ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { bertlab_run::format::round_sig(t, 12) });
        }
        i += 1;
    }
    ticks
}

/// Tick text with as many decimals as the step needs.
fn tick_text(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize + usize::from(step_needs_extra(step))
    };
    let text = format!("{value:.decimals$}");
    if value.abs() >= 1e4 {
        bertlab_run::format::format_count(value)
    } else {
        text
    }
}

fn step_needs_extra(step: f64) -> bool {
    // 0.025 needs three decimals, not two.
    let mag = 10f64.powf(step.log10().floor());
    ((step / mag) - 2.5).abs() < 1e-9
}

struct Range {
    lo: f64,
    hi: f64,
}

impl Range {
    fn of(values: impl Iterator<Item = f64>, include: &[f64]) -> Range {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.chain(include.iter().copied()).filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            return Range { lo: 0.0, hi: 1.0 };
        }
        if hi - lo < 1e-12 {
            let pad = if lo.abs() > 1e-12 { lo.abs() * 0.05 } else { 0.05 };
            return Range { lo: lo - pad, hi: hi + pad };
        }
        Range { lo, hi }
    }
}

impl Figure {
    /// Render the figure.
    pub fn to_svg(&self) -> String {
        let columns = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(columns).max(1);
        let panels_width = columns as f64 * self.panel_width;
        // Wide enough for the title (bold 19 px) and the subtitle.
        let width = panels_width
            .max(text_width(&self.title, 19.0) * 1.08 + 40.0)
            .max(text_width(&self.subtitle, 13.0) + 40.0)
            .ceil();
        let x_offset = (width - panels_width) / 2.0;
        let legend = if self.legend.is_empty() { self.default_legend() } else { self.legend.clone() };
        let legend_rows = layout_legend(&legend, width - 40.0);
        let header = if self.subtitle.is_empty() { 44.0 } else { 64.0 };
        let legend_h = if legend.is_empty() { 0.0 } else { 16.0 + legend_rows.len() as f64 * 22.0 };
        let height = header + rows as f64 * PANEL_H + legend_h + 8.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {FONT}>"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"19\" font-weight=\"bold\">{}</text>",
            width / 2.0,
            escape(&self.title)
        );
        if !self.subtitle.is_empty() {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"50\" text-anchor=\"middle\" font-size=\"13\" fill=\"#444\">{}</text>",
                width / 2.0,
                escape(&self.subtitle)
            );
        }
        for (i, panel) in self.panels.iter().enumerate() {
            let x0 = x_offset + (i % columns) as f64 * self.panel_width;
            let y0 = header + (i / columns) as f64 * PANEL_H;
            render_panel(&mut s, panel, x0, y0, self.panel_width);
        }
        let mut y = header + rows as f64 * PANEL_H + 16.0;
        for row in legend_rows {
            let row_w: f64 = row.iter().map(|i| legend_item_width(&legend[*i])).sum();
            let mut x = (width - row_w) / 2.0;
            for i in row {
                render_legend_item(&mut s, &legend[i], x, y);
                x += legend_item_width(&legend[i]);
            }
            y += 22.0;
        }
        s.push_str("</svg>\n");
        s
    }

    fn default_legend(&self) -> Vec<LegendItem> {
        let mut items: Vec<LegendItem> = Vec::new();
        for series in self.panels.iter().flat_map(|p| &p.series) {
            if series.label.is_empty() || items.iter().any(|i| i.label == series.label) {
                continue;
            }
            items.push(LegendItem {
                label: series.label.clone(),
                colour: Some(series.colour),
                dashed: series.dashed,
                line: series.line,
                marker: series.marker,
            });
        }
        items
    }
}

fn legend_item_width(item: &LegendItem) -> f64 {
    44.0 + text_width(&item.label, 13.0) + 18.0
}

fn layout_legend(items: &[LegendItem], width: f64) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = f64::INFINITY;
    for (i, item) in items.iter().enumerate() {
        let w = legend_item_width(item);
        if used + w > width {
            rows.push(Vec::new());
            used = 0.0;
        }
        rows.last_mut().expect("a row was pushed").push(i);
        used += w;
    }
    rows
}

fn render_legend_item(s: &mut String, item: &LegendItem, x: f64, y: f64) {
    let c = item.colour.map_or("#555", colour);
    if item.line {
        let dash = if item.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{c}\" stroke-width=\"2.5\"{dash}/>",
            x + 34.0
        );
    }
    render_marker(s, item.marker, x + 17.0, y, c);
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"13\">{}</text>",
        x + 40.0,
        y + 4.5,
        escape(&item.label)
    );
}

fn render_marker(s: &mut String, marker: Marker, x: f64, y: f64, c: &str) {
    match marker {
        Marker::None => {}
        Marker::Circle => {
            let _ = writeln!(s, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{c}\"/>");
        }
        Marker::HollowCircle => {
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"white\" stroke=\"{c}\" stroke-width=\"2\"/>"
            );
        }
        Marker::Square => {
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"{c}\"/>",
                x - 4.0,
                y - 4.0
            );
        }
        Marker::HollowSquare => {
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"white\" stroke=\"{c}\" stroke-width=\"2\"/>",
                x - 4.0,
                y - 4.0
            );
        }
        Marker::Diamond => {
            let _ = writeln!(
                s,
                "<path d=\"M {x:.1} {:.1} L {:.1} {y:.1} L {x:.1} {:.1} L {:.1} {y:.1} Z\" fill=\"{c}\"/>",
                y - 5.5,
                x + 5.5,
                y + 5.5,
                x - 5.5
            );
        }
    }
}

fn render_panel(s: &mut String, chart: &Chart, x0: f64, y0: f64, panel_width: f64) {
    let (px, py) = (x0 + MARGIN_L, y0 + MARGIN_T);
    let (pw, ph) = (panel_width - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B);
    let tx = |v: f64| match chart.x_scale {
        Scale::Linear => v,
        Scale::Log2 => v.max(1e-300).log2(),
    };
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let xr = Range::of(
        points().map(|p| tx(p.0)).chain(chart.x_ticks.iter().map(|t| tx(t.0))),
        &chart.x_include.iter().map(|v| tx(*v)).collect::<Vec<_>>(),
    );
    let yr = Range::of(points().map(|p| p.1), &chart.y_include);
    // Pad the data range so that markers and labels stay inside the frame.
    let xpad = (xr.hi - xr.lo) * 0.08;
    let (xlo, xhi) = (xr.lo - xpad, xr.hi + xpad);
    // Room below the lowest point and above the highest (for point labels).
    let (ylo, yhi) = (yr.lo - (yr.hi - yr.lo) * 0.08, yr.hi + (yr.hi - yr.lo) * 0.12);
    let yticks = nice_ticks(ylo, yhi, 5);
    let ystep = if yticks.len() > 1 { yticks[1] - yticks[0] } else { 1.0 };
    let sx = |v: f64| px + (tx(v) - xlo) / (xhi - xlo) * pw;
    let sy = |v: f64| py + ph - (v - ylo) / (yhi - ylo) * ph;

    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        px + pw / 2.0,
        y0 + 22.0,
        escape(&chart.title)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{px}\" y=\"{py}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" stroke=\"#333\" stroke-width=\"1\"/>"
    );
    // Y ticks and gridlines.
    for t in &yticks {
        let y = sy(*t);
        if y < py - 0.5 || y > py + ph + 0.5 {
            continue;
        }
        let _ = writeln!(
            s,
            "<line x1=\"{px}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\" stroke-width=\"1\"/>",
            px + pw
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"12\">{}</text>",
            px - 6.0,
            y + 4.0,
            tick_text(*t, ystep)
        );
    }
    // X ticks: explicit, or nice ones over the (linear) range.
    let xticks: Vec<(f64, String)> = if chart.x_ticks.is_empty() {
        let ticks = nice_ticks(xr.lo, xr.hi, 5);
        let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 1.0 };
        ticks.into_iter().map(|t| (t, tick_text(t, step))).collect()
    } else {
        chart.x_ticks.clone()
    };
    for (t, label) in &xticks {
        let x = sx(*t);
        if x < px - 0.5 || x > px + pw + 0.5 {
            continue;
        }
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{py}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\" stroke-width=\"1\"/>",
            py + ph
        );
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\" stroke-width=\"1\"/>",
            py + ph,
            py + ph + 5.0
        );
        for (li, line) in label.split('\n').enumerate() {
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\"{}>{}</text>",
                py + ph + 18.0 + li as f64 * 14.0,
                if li > 0 { " fill=\"#555\"" } else { "" },
                escape(line)
            );
        }
    }
    let x_label_lines = xticks.iter().map(|(_, l)| l.split('\n').count()).max().unwrap_or(1) as f64;
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>",
        px + pw / 2.0,
        py + ph + 22.0 + x_label_lines * 14.0,
        escape(&chart.x_label)
    );
    let (lx, ly) = (x0 + 18.0, py + ph / 2.0);
    let _ = writeln!(
        s,
        "<text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 {lx} {ly})\">{}</text>",
        escape(&chart.y_label)
    );
    // Series: lines first, then markers and labels on top.
    for series in &chart.series {
        let c = colour(series.colour);
        if series.line && series.points.len() > 1 {
            let d: Vec<String> = series
                .points
                .iter()
                .enumerate()
                .map(|(i, (x, y))| format!("{} {:.1} {:.1}", if i == 0 { "M" } else { "L" }, sx(*x), sy(*y)))
                .collect();
            let dash = if series.dashed { " stroke-dasharray=\"7 4\"" } else { "" };
            let _ = writeln!(
                s,
                "<path d=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2.2\"{dash}/>",
                d.join(" ")
            );
        }
    }
    for series in &chart.series {
        let c = colour(series.colour);
        for (i, (x, y)) in series.points.iter().enumerate() {
            render_marker(s, series.marker, sx(*x), sy(*y), c);
            if let Some(label) = series.point_labels.get(i).filter(|l| !l.is_empty()) {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{c}\">{}</text>",
                    sx(*x),
                    sy(*y) - 9.0,
                    escape(label)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(0.83, 0.91, 5), vec![0.84, 0.86, 0.88, 0.9]);
        assert_eq!(nice_ticks(3.0, 97.0, 4), vec![25.0, 50.0, 75.0]);
        assert_eq!(tick_text(0.025, 0.025), "0.025");
        assert_eq!(tick_text(0.86, 0.02), "0.86");
        assert_eq!(tick_text(50.0, 25.0), "50");
    }

    #[test]
    fn a_figure_has_titles_labels_ticks_and_legend() {
        let mut chart = Chart::new("Loss", "epoch", "loss (cross-entropy)");
        chart.x_ticks = vec![(1.0, "1".into()), (2.0, "2".into())];
        chart.series.push(Series::line("a <b>", 0, vec![(1.0, 0.5), (2.0, 0.4)]));
        chart.series.push(
            Series::line("c", 1, vec![(1.0, 0.6), (2.0, 0.3)]).dashed().labels(vec!["x".into(), "".into()]),
        );
        let fig = Figure::new("T & U", "sub", vec![chart], 2);
        let svg = fig.to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"500\""), "{svg}");
        for needle in [
            "T &amp; U",
            ">sub<",
            ">Loss<",
            ">epoch<",
            ">loss (cross-entropy)<",
            "a &lt;b&gt;",
            "stroke-dasharray",
            ">x<",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path d=\"M").count(), 2);
    }

    #[test]
    fn degenerate_ranges_still_render() {
        let mut chart = Chart::new("one point", "x", "y");
        chart.series.push(Series::scatter("p", 0, Marker::Diamond, vec![(3.0, 0.5)]));
        chart.x_scale = Scale::Log2;
        let svg = Figure::new("t", "", vec![chart], 1).to_svg();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
