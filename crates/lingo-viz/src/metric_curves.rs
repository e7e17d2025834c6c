//! Validation metrics of a training run over its steps: one small panel per metric (they live on
//! different scales: F1 in [0, 1], BLEU in [0, 100], lengths in tokens).

use plotters::prelude::*;
use std::path::Path;

/// The most panels one picture holds (the first metrics by name).
const MAX_PANELS: usize = 12;

/// Draws each `(name, [(step, value)])` series in its own panel, as a PNG written to `path`
/// (through a temporary file). Nothing is written when there are no points.
pub fn metric_curves(
    series: &[(String, Vec<(f64, f64)>)],
    path: &Path,
    title: &str,
) -> crate::Result<()> {
    crate::register_font();
    let series: Vec<&(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, points)| !points.is_empty())
        .take(MAX_PANELS)
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let cols = series.len().min(3);
    let rows = series.len().div_ceil(cols);
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (360 * cols as u32, 40 + 260 * rows as u32))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(40);
        top.titled(title, ("sans-serif", 22))?;
        for (area, (name, points)) in body.split_evenly((rows, cols)).iter().zip(&series) {
            let max_step = points.iter().map(|p| p.0).fold(1.0, f64::max);
            let (lo, hi) = points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                    (a.min(p.1), b.max(p.1))
                });
            let pad = ((hi - lo) * 0.1).max(1e-3 * hi.abs().max(1.0));
            let mut chart = ChartBuilder::on(area)
                .caption(name.as_str(), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(52)
                .build_cartesian_2d(0f64..max_step, (lo - pad)..(hi + pad))?;
            chart
                .configure_mesh()
                .label_style(("sans-serif", 12))
                .x_labels(4)
                .y_labels(5)
                .draw()?;
            chart.draw_series(LineSeries::new(points.iter().copied(), RED.stroke_width(2)))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
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
    fn writes_one_panel_per_metric() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metrics.png");
        let series = vec![
            ("f1".to_string(), vec![(100.0, 0.5), (200.0, 0.8)]),
            ("bleu".to_string(), vec![(100.0, 12.0), (200.0, 30.0)]),
        ];
        metric_curves(&series, &path, "test")?;
        let bytes = std::fs::read(&path)?;
        assert_eq!(&bytes[1..4], b"PNG");
        // No points, no picture.
        let empty = dir.path().join("none.png");
        metric_curves(&[], &empty, "test")?;
        assert!(!empty.exists());
        Ok(())
    }
}
