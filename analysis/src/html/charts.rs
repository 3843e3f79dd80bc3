//! Generic charts as SVG text (plotters' SVG backend): horizontal bars, heat maps, lines.
//! They know nothing of the report; [`super::figures`] feeds them its tables.
use plotters::{
    coord::{ranged1d::SegmentValue, Shift},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{HtmlError, PlotError};

/// An SVG document `w` × `h` drawn by `draw`; errors name the chart by its `title`.
fn svg(
    title: &str,
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<String, HtmlError> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present());
        drawn.map_err(|source| HtmlError::Chart {
            chart: title.to_owned(),
            source,
        })?;
    }
    Ok(buf)
}

/// The category name of a segment (`names[i]`, first at the top for horizontal charts).
fn seg_label(names: &[String], v: &SegmentValue<usize>, flip: bool) -> String {
    match v {
        SegmentValue::CenterOf(i) if *i < names.len() => {
            names[if flip { names.len() - 1 - i } else { *i }].clone()
        }
        _ => String::new(),
    }
}

/// Horizontal bars, first item on top; `log` for heavy-tailed counts.
pub(super) fn bars(
    title: &str,
    ydesc: &str,
    xdesc: &str,
    items: &[(String, f64)],
    log: bool,
) -> Result<String, HtmlError> {
    let n = items.len().max(1);
    let names: Vec<String> = items.iter().map(|x| x.0.clone()).collect();
    let max = items.iter().map(|x| x.1).fold(1e-9, f64::max);
    let min = items.iter().map(|x| x.1).fold(0.0, f64::min);
    let h = 90 + 22 * n as u32;
    svg(title, 900, h, |root| {
        let mut b = ChartBuilder::on(root);
        b.caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(170);
        let y = |i: usize| SegmentValue::Exact(n - 1 - i);
        let y1 = |i: usize| SegmentValue::Exact(n - i);
        let fmt = |v: &SegmentValue<usize>| seg_label(&names, v, true);
        let color = BLUE.mix(0.7).filled();
        macro_rules! draw {
            ($c:expr, $lo:expr) => {{
                let mut c = $c;
                c.configure_mesh()
                    .disable_y_mesh()
                    .y_labels(n)
                    .y_label_formatter(&fmt)
                    .x_desc(xdesc)
                    .y_desc(ydesc)
                    .draw()?;
                c.draw_series(items.iter().enumerate().filter(|(_, x)| x.1 != 0.0).map(
                    |(i, x)| {
                        let mut r = Rectangle::new([($lo, y(i)), (x.1, y1(i))], color);
                        r.set_margin(3, 3, 0, 0);
                        r
                    },
                ))?;
            }};
        }
        let segs = (0..n).into_segmented();
        if log {
            draw!(
                b.build_cartesian_2d((1.0..max * 2.0).log_scale(), segs)?,
                1.0
            );
        } else {
            let pad = (max - min) * 0.08;
            draw!(
                b.build_cartesian_2d(min - pad.min(-min)..max + pad, segs)?,
                0.0
            );
        }
        Ok(())
    })
}

/// A matrix of cells coloured by value (clipped to `range`), with the value written in each.
pub(super) fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    value: &dyn Fn(usize, usize) -> Option<f64>,
    range: (f64, f64),
    text: &dyn Fn(f64) -> String,
) -> Result<String, HtmlError> {
    let (nr, nc) = (rows.len().max(1), cols.len().max(1));
    let cell = (700 / nc.max(nr)).clamp(16, 48) as u32;
    let w = 190 + cell * nc as u32 + 30;
    let h = 110 + cell * nr as u32;
    svg(title, w, h, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d((0..nc).into_segmented(), (0..nr).into_segmented())?;
        c.configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&|v| seg_label(cols, v, false))
            .y_label_formatter(&|v| seg_label(rows, v, true))
            .x_label_style(("sans-serif", 11))
            .y_label_style(("sans-serif", 11))
            .draw()?;
        let mut cells = Vec::new();
        for r in 0..rows.len() {
            for q in 0..cols.len() {
                cells.push((r, q, value(r, q)));
            }
        }
        let at = |q: usize, r: usize| {
            let y = nr - 1 - r;
            [
                (SegmentValue::Exact(q), SegmentValue::Exact(y)),
                (SegmentValue::Exact(q + 1), SegmentValue::Exact(y + 1)),
            ]
        };
        c.draw_series(cells.iter().map(|&(r, q, v)| {
            let color = match v {
                None => RGBColor(235, 235, 235),
                Some(v) => {
                    let t = ((v - range.0) / (range.1 - range.0)).clamp(0.0, 1.0);
                    RGBColor(255 - (t * 200.0) as u8, 255 - (t * 120.0) as u8, 255)
                }
            };
            Rectangle::new(at(q, r), color.filled())
        }))?;
        if cell >= 26 {
            let style = TextStyle::from(("sans-serif", 10).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center));
            for &(r, q, v) in &cells {
                if let Some(v) = v {
                    let [lo, hi] = at(q, r);
                    let (x0, y0) = c.backend_coord(&lo);
                    let (x1, y1) = c.backend_coord(&hi);
                    root.draw_text(&text(v), &style, ((x0 + x1) / 2, (y0 + y1) / 2))?;
                }
            }
        }
        Ok(())
    })
}

/// One line per series over the same categories.
pub(super) fn lines(
    title: &str,
    ydesc: &str,
    xs: &[String],
    series: &[(String, Vec<u64>)],
) -> Result<String, HtmlError> {
    let n = xs.len().max(2);
    let max = series
        .iter()
        .flat_map(|s| s.1.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    svg(title, 900, 420, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .right_y_label_area_size(10)
            .build_cartesian_2d(0..n - 1, 0u64..max + max / 10 + 1)?;
        c.configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|i| xs.get(*i).cloned().unwrap_or_default())
            .x_desc("Month")
            .y_desc(ydesc)
            .draw()?;
        for (k, (name, ys)) in series.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            c.draw_series(LineSeries::new(
                ys.iter().enumerate().map(|(i, &y)| (i, y)),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })
}
