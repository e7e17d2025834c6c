//! Loss curves of a training run.

use plotters::prelude::*;
use std::path::Path;

/// Draws training loss (light: per step; dark: moving average) and validation loss against steps,
/// as a PNG written to `path` (through a temporary file, so a reader never sees half a picture).
pub fn loss_curve(
    train: &[(f64, f64)],
    val: &[(f64, f64)],
    path: &Path,
    title: &str,
) -> crate::Result<()> {
    crate::register_font();
    if train.is_empty() && val.is_empty() {
        return Ok(());
    }
    let window = (train.len() / 50).max(1);
    let smooth: Vec<(f64, f64)> = train
        .iter()
        .enumerate()
        .map(|(i, &(s, _))| {
            let lo = i.saturating_sub(window - 1);
            let mean = train[lo..=i].iter().map(|p| p.1).sum::<f64>() / (i + 1 - lo) as f64;
            (s, mean)
        })
        .collect();
    let all = train.iter().chain(val);
    let max_step = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all
        .map(|p| p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (960, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .margin_right(32)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_step, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats/token)")
            .label_style(("sans-serif", 14))
            .draw()?;
        let light = RGBColor(150, 180, 230);
        if !train.is_empty() {
            chart.draw_series(LineSeries::new(train.iter().copied(), light))?;
            chart
                .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))?
                .label("train")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        }
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
    }
    std::fs::rename(&tmp, path).map_err(crate::io(path))?;
    Ok(())
}
