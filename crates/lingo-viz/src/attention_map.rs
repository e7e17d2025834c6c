//! Attention maps: how much each output token looked at each source token, as a labelled heat map —
//! a PNG and a self-contained HTML page (hover a cell for its weight). Cells shrink and source labels
//! turn vertical as sentences get longer, so long sentences stay legible.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::fmt::Write as _;
use std::path::Path;

/// Makes whitespace tokens visible.
fn label(token: &str) -> String {
    match token {
        " " => "␣".into(),
        "\n" => "⏎".into(),
        "\t" => "⇥".into(),
        t => t.replace(['Ġ', '▁'], "␣"),
    }
}

/// White (0) to dark blue (1).
fn colour(w: f32) -> (u8, u8, u8) {
    let w = w.clamp(0.0, 1.0);
    let mix = |to: f32| (255.0 - w * (255.0 - to)).round() as u8;
    (mix(8.0), mix(48.0), mix(107.0))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `{base}.png` and `{base}.html`. `weights[i][j]` is the attention of target token `i` on
/// source token `j`.
pub fn attention_map(
    source: &[String],
    target: &[String],
    weights: &[Vec<f32>],
    base: &Path,
    title: &str,
) -> crate::Result<()> {
    if weights.len() != target.len() || weights.iter().any(|row| row.len() != source.len()) {
        return Err(crate::VizError::Input(format!(
            "attention map: {} target tokens and {} source tokens, but weights are {}×{}",
            target.len(),
            source.len(),
            weights.len(),
            weights.first().map_or(0, Vec::len)
        )));
    }
    let png = base.with_extension("png");
    let html = base.with_extension("html");
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir).map_err(crate::io(dir))?;
    }
    draw_png(source, target, weights, &png, title)?;
    std::fs::write(&html, render_html(source, target, weights, title)).map_err(crate::io(&html))?;
    Ok(())
}

fn draw_png(
    source: &[String],
    target: &[String],
    weights: &[Vec<f32>],
    path: &Path,
    title: &str,
) -> crate::Result<()> {
    crate::register_font();
    let (ns, nt) = (source.len().max(1), target.len().max(1));
    let cell = (900 / ns.max(nt)).clamp(12, 40) as i32;
    let font_px = (cell as f64 * 0.6).clamp(10.0, 16.0);
    let longest = |tokens: &[String]| {
        tokens
            .iter()
            .map(|t| label(t).chars().count())
            .max()
            .unwrap_or(1) as i32
    };
    let left = 20 + longest(target) * (font_px as i32 * 2 / 3) + 10;
    let top = 50 + longest(source) * (font_px as i32 * 2 / 3) + 10;
    let (w, h) = (left + ns as i32 * cell + 90, top + nt as i32 * cell + 30);
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (w as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let font = ("sans-serif", font_px).into_font();
        root.draw(&Text::new(
            title.to_string(),
            (10, 10),
            ("sans-serif", 18).into_font(),
        ))?;
        for (i, row) in weights.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
                let (r, g, b) = colour(v);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(r, g, b).filled(),
                ))?;
            }
        }
        // Target labels, right-aligned against the grid.
        let right = font.color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, t) in target.iter().enumerate() {
            root.draw(&Text::new(
                label(t),
                (left - 6, top + i as i32 * cell + cell / 2),
                right.clone(),
            ))?;
        }
        // Source labels, vertical, reading upwards from the grid.
        let vertical = font
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (j, s) in source.iter().enumerate() {
            root.draw(&Text::new(
                label(s),
                (left + j as i32 * cell + cell / 2, top - 6),
                vertical.clone(),
            ))?;
        }
        // Colour scale.
        let (bx, steps) = (left + ns as i32 * cell + 30, 50);
        let span = (nt as i32 * cell).max(60);
        for k in 0..steps {
            let v = 1.0 - k as f32 / (steps - 1) as f32;
            let (r, g, b) = colour(v);
            let y0 = top + k * span / steps;
            root.draw(&Rectangle::new(
                [(bx, y0), (bx + 14, y0 + span / steps + 1)],
                RGBColor(r, g, b).filled(),
            ))?;
        }
        let small = ("sans-serif", 12).into_font().color(&BLACK);
        root.draw(&Text::new("1", (bx + 18, top), small.clone()))?;
        root.draw(&Text::new("0", (bx + 18, top + span - 12), small))?;
        root.present()?;
    }
    std::fs::rename(&tmp, path).map_err(crate::io(path))?;
    Ok(())
}

fn render_html(source: &[String], target: &[String], weights: &[Vec<f32>], title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>\n\
         body{{font-family:sans-serif;margin:16px}} table{{border-collapse:collapse;font-size:13px}}\n\
         td{{width:22px;height:22px;border:1px solid #f4f4f4}}\n\
         th.src{{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;padding:4px 2px;white-space:nowrap}}\n\
         th.tgt{{text-align:right;font-weight:normal;padding-right:6px;white-space:nowrap}}\n\
         </style></head><body><h3>{t}</h3>\n<p>Rows: output tokens; columns: source tokens. Darker = more attention; hover a cell for its weight.</p>\n<table><tr><th></th>",
        t = html_escape(title)
    );
    for tok in source {
        let _ = write!(s, "<th class=\"src\">{}</th>", html_escape(&label(tok)));
    }
    s.push_str("</tr>\n");
    for (i, row) in weights.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><th class=\"tgt\">{}</th>",
            html_escape(&label(&target[i]))
        );
        for (j, &v) in row.iter().enumerate() {
            let (r, g, b) = colour(v);
            let _ = write!(
                s,
                "<td style=\"background:rgb({r},{g},{b})\" title=\"{} → {}: {v:.3}\"></td>",
                html_escape(&label(&target[i])),
                html_escape(&label(&source[j]))
            );
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_html_and_rejects_mismatched_shapes() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let base = dir.path().join("att");
        let src: Vec<String> = "a <b> c".split(' ').map(String::from).collect();
        let tgt: Vec<String> = vec!["x".into(), "</s>".into()];
        let w = vec![vec![0.7, 0.2, 0.1], vec![0.0, 0.5, 0.5]];
        attention_map(&src, &tgt, &w, &base, "test")?;
        assert_eq!(&std::fs::read(base.with_extension("png"))?[1..4], b"PNG");
        let html = std::fs::read_to_string(base.with_extension("html"))?;
        assert!(
            html.contains("&lt;b&gt;") && html.contains("&lt;/s&gt;") && html.contains("0.700")
        );
        assert!(attention_map(&src, &tgt, &w[..1], &base, "bad").is_err());
        Ok(())
    }
}
