//! How a cost grows with a size, on log–log axes: a straight line of slope 1 is linear growth,
//! slope 2 quadratic. One panel per measured quantity (time, memory), a line per method.

use plotters::prelude::*;
use std::path::Path;

/// One panel: its caption, y-axis label and `(method, [(size, value)])` series.
pub struct Panel {
    pub caption: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

const COLOURS: [RGBColor; 6] = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];

/// Draws the panels side by side as a PNG written to `path` (through a temporary file).
pub fn scaling_plot(
    panels: &[Panel],
    x_label: &str,
    path: &Path,
    title: &str,
) -> crate::Result<()> {
    crate::register_font();
    let tmp = path.with_extension("tmp.png");
    {
        let root =
            BitMapBackend::new(&tmp, (520 * panels.len().max(1) as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(40);
        top.titled(title, ("sans-serif", 22))?;
        for (area, panel) in body
            .split_evenly((1, panels.len().max(1)))
            .iter()
            .zip(panels)
        {
            let points: Vec<(f64, f64)> = panel
                .series
                .iter()
                .flat_map(|(_, p)| p.iter().copied())
                .filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.1.is_finite())
                .collect();
            if points.is_empty() {
                continue;
            }
            let range = |f: fn(&(f64, f64)) -> f64| {
                let lo = points.iter().map(f).fold(f64::INFINITY, f64::min);
                let hi = points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
                (lo / 1.5)..(hi * 1.5)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(panel.caption.as_str(), ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(range(|p| p.0).log_scale(), range(|p| p.1).log_scale())?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(panel.y_label.as_str())
                .x_labels(8)
                .y_labels(8)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 12))
                .draw()?;
            for (i, (name, pts)) in panel.series.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let pts: Vec<(f64, f64)> = pts
                    .iter()
                    .copied()
                    .filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 12))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    std::fs::rename(&tmp, path).map_err(crate::io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_log_log_panels() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("scaling.png");
        let line = |slope: f64| {
            (1..6)
                .map(|i| (2f64.powi(i), 2f64.powf(slope * i as f64)))
                .collect()
        };
        let panels = [Panel {
            caption: "time".into(),
            y_label: "ms".into(),
            series: vec![("n".into(), line(1.0)), ("n²".into(), line(2.0))],
        }];
        scaling_plot(&panels, "length", &path, "test")?;
        assert_eq!(&std::fs::read(&path)?[1..4], b"PNG");
        Ok(())
    }
}
