//! Small charts as inline SVG: lines, steps, points and shaded bands on linear or log axes,
//! with ticks, labels and a legend. Hand-written so that a report is one self-contained file
//! with no fonts, scripts or network; text uses the page's font.

use crate::text::escape_markup as esc;
use std::fmt::Write as _;

/// A colour-blind-safe palette (Okabe-Ito), for series in order.
pub const PALETTE: &[&str] = &[
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

#[derive(Clone, Debug)]
pub enum Mark {
    Line,
    /// A step line: each value holds until the next point.
    Step,
    Points,
    /// A shaded band between `points` (lower) and `upper`, same x.
    Band {
        upper: Vec<(f64, f64)>,
    },
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
    /// Per-point hover text (a `<title>`), for points.
    pub labels: Vec<String>,
    /// Drawn thin and faint, without a legend entry.
    pub faint: bool,
    /// Bigger points with an outline (the Pareto front).
    pub emphasis: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, color: &str, mark: Mark, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            color: color.to_string(),
            mark,
            points,
            labels: Vec::new(),
            faint: false,
            emphasis: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// Draw the diagonal y = x (predicted against achieved).
    pub diagonal: bool,
    /// x counts something (evaluations, epochs): ticks only at whole numbers.
    pub integer_x: bool,
}

const W: f64 = 560.0;
const H: f64 = 320.0;
const L: f64 = 62.0;
const R: f64 = 16.0;
const T: f64 = 30.0;
const B: f64 = 46.0;

/// Round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    // Multiples of the step, computed (not accumulated) so that whole numbers stay whole.
    let first = (lo / step - 1e-9).ceil() as i64;
    let mut out = Vec::new();
    for k in first..first + 50 {
        let t = k as f64 * step;
        if t > hi + step * 1e-9 {
            break;
        }
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
    }
    out
}

/// A number for an axis: short, with k/M/G for large ones.
pub fn short_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a < 0.001 {
        format!("{v:.1e}")
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            series: Vec::new(),
            diagonal: false,
            integer_x: false,
        }
    }

    fn all_points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series.iter().flat_map(|s| {
            let upper = match &s.mark {
                Mark::Band { upper } => upper.as_slice(),
                _ => &[],
            };
            s.points.iter().chain(upper).copied()
        })
    }

    /// The chart as an `<svg>` element; a note instead when there is nothing to draw.
    pub fn render(&self) -> String {
        let tx = |x: f64| if self.log_x { x.max(1e-12).log10() } else { x };
        let pts: Vec<(f64, f64)> = self
            .all_points()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
            .map(|(x, y)| (tx(x), y))
            .collect();
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}"><title>{}</title>"#,
            esc(&self.title),
            esc(&self.title)
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="18" class="ct">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        if pts.is_empty() {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" class="empty">nothing to plot yet</text></svg>"#,
                W / 2.0,
                H / 2.0
            );
            return s;
        }
        let (mut x0, mut x1, mut y0, mut y1) = pts.iter().fold(
            (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
            |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
        );
        if self.diagonal {
            let lo = x0.min(y0);
            let hi = x1.max(y1);
            (x0, x1, y0, y1) = (lo, hi, lo, hi);
        }
        if x1 - x0 < 1e-12 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if y1 - y0 < 1e-12 {
            y0 -= 0.05 * y0.abs().max(1.0);
            y1 += 0.05 * y1.abs().max(1.0);
        }
        let pad = (y1 - y0) * 0.05;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let px = |x: f64| L + (tx(x) - x0) / (x1 - x0) * (W - L - R);
        let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
        // Axes and grid.
        let _ = write!(
            s,
            r#"<rect x="{L}" y="{T}" width="{}" height="{}" class="frame"/>"#,
            W - L - R,
            H - T - B
        );
        for t in ticks(y0, y1, 5) {
            let y = py(t);
            let _ = write!(
                s,
                r#"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="yt">{}</text>"#,
                W - R,
                L - 5.0,
                y + 4.0,
                short_num(t)
            );
        }
        let xt: Vec<f64> = if self.log_x {
            (x0.floor() as i32..=x1.ceil() as i32)
                .map(f64::from)
                .filter(|e| *e >= x0 - 1e-9 && *e <= x1 + 1e-9)
                .map(|e| 10f64.powf(e))
                .collect()
        } else if self.integer_x {
            ticks(x0, x1, 6)
                .into_iter()
                .filter(|t| (t - t.round()).abs() < 1e-9)
                .collect()
        } else {
            ticks(x0, x1, 6)
        };
        for t in xt {
            let x = px(t);
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{}" class="grid"/><text x="{x:.1}" y="{}" class="xt">{}</text>"#,
                H - B,
                H - B + 16.0,
                short_num(t)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="xl">{}</text><text transform="translate(14 {}) rotate(-90)" class="yl">{}</text>"#,
            L + (W - L - R) / 2.0,
            H - 8.0,
            esc(&self.x_label),
            T + (H - T - B) / 2.0,
            esc(&self.y_label)
        );
        if self.diagonal {
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" class="diag"/>"#,
                px(y0.max(x0)),
                py(y0.max(x0)),
                px(y1.min(x1)),
                py(y1.min(x1))
            );
        }
        let path = |points: &[(f64, f64)], step: bool| -> String {
            let mut d = String::new();
            let mut first = true;
            for &(x, y) in points {
                if !x.is_finite() || !y.is_finite() || (self.log_x && x <= 0.0) {
                    continue;
                }
                let (sx, sy) = (px(x), py(y));
                if first {
                    let _ = write!(d, "M{sx:.1} {sy:.1}");
                } else if step {
                    let _ = write!(d, " H{sx:.1} V{sy:.1}");
                } else {
                    let _ = write!(d, " L{sx:.1} {sy:.1}");
                }
                first = false;
            }
            d
        };
        for ser in &self.series {
            let width = if ser.faint { 1.0 } else { 2.0 };
            let opacity = if ser.faint { 0.35 } else { 1.0 };
            match &ser.mark {
                Mark::Line | Mark::Step => {
                    let d = path(&ser.points, matches!(ser.mark, Mark::Step));
                    let _ = write!(
                        s,
                        r#"<path d="{d}" fill="none" stroke="{}" stroke-width="{width}" stroke-opacity="{opacity}"/>"#,
                        ser.color
                    );
                }
                Mark::Band { upper } => {
                    let lower = path(&ser.points, false);
                    let mut up: Vec<(f64, f64)> = upper.clone();
                    up.reverse();
                    let upper_d = path(&up, false).replacen('M', "L", 1);
                    let _ = write!(
                        s,
                        r#"<path d="{lower} {upper_d} Z" fill="{}" fill-opacity="0.18" stroke="none"/>"#,
                        ser.color
                    );
                }
                Mark::Points => {
                    let r = if ser.emphasis { 4.5 } else { 3.0 };
                    for (i, &(x, y)) in ser.points.iter().enumerate() {
                        if !x.is_finite() || !y.is_finite() || (self.log_x && x <= 0.0) {
                            continue;
                        }
                        let title = ser
                            .labels
                            .get(i)
                            .map(|t| format!("<title>{}</title>", esc(t)))
                            .unwrap_or_default();
                        let stroke = if ser.emphasis {
                            r##" stroke="#000" stroke-width="1.2""##
                        } else {
                            ""
                        };
                        let _ = write!(
                            s,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{}" fill-opacity="{}"{stroke}>{title}</circle>"#,
                            px(x),
                            py(y),
                            ser.color,
                            if ser.emphasis { 1.0 } else { 0.6 * opacity }
                        );
                    }
                }
            }
        }
        // Legend, top left inside the frame.
        let mut ly = T + 14.0;
        for ser in self
            .series
            .iter()
            .filter(|s| !s.faint && !s.name.is_empty())
        {
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" class="lg">{}</text>"#,
                L + 8.0,
                ly - 9.0,
                ser.color,
                L + 22.0,
                ly,
                esc(&ser.name)
            );
            ly += 15.0;
        }
        s.push_str("</svg>");
        s
    }
}

/// A horizontal stacked bar chart of shares (one bar per row, parts in `names` order).
pub fn stacked_bars(title: &str, names: &[&str], rows: &[(String, Vec<u64>)]) -> String {
    let bar_h = 16.0;
    let h = T + 30.0 + rows.len() as f64 * (bar_h + 4.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><text x="{}" y="18" class="ct">{t}</text>"#,
        W / 2.0,
        t = esc(title)
    );
    let mut lx = L;
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="26" width="10" height="10" fill="{}"/><text x="{}" y="35" class="lg">{}</text>"#,
            PALETTE[i % PALETTE.len()],
            lx + 14.0,
            esc(n)
        );
        lx += 14.0 + 8.0 * n.len() as f64 + 18.0;
    }
    for (r, (label, parts)) in rows.iter().enumerate() {
        let y = T + 20.0 + r as f64 * (bar_h + 4.0);
        let total: u64 = parts.iter().sum();
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="yt">{}</text>"#,
            L - 5.0,
            y + 12.0,
            esc(label)
        );
        let mut x = L;
        for (i, &p) in parts.iter().enumerate() {
            if total == 0 || p == 0 {
                continue;
            }
            let w = p as f64 / total as f64 * (W - L - R);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bar_h}" fill="{}"><title>{}: {p} of {total}</title></rect>"#,
                PALETTE[i % PALETTE.len()],
                esc(names[i])
            );
            x += w;
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!((t[1] - 0.2).abs() < 1e-12 && (t[5] - 1.0).abs() < 1e-12);
        assert_eq!(short_num(1_500_000.0), "1.5M");
        assert_eq!(short_num(0.25), "0.25");
    }

    #[test]
    fn an_empty_chart_says_so() {
        let c = Chart::new("t", "x", "y");
        assert!(c.render().contains("nothing to plot yet"));
    }
}
