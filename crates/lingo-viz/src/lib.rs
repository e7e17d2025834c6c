//! Pictures of what Lingo's models do: the loss curves of a run and attention maps of a sentence,
//! drawn with `plotters` (PNG) or written as self-contained HTML. Text is set in DejaVu Sans, embedded
//! in the binary (licence beside it in `assets/`), so pictures look the same on machines without fonts.

pub mod attention_map;
pub mod loss_curve;

pub use attention_map::attention_map;
pub use loss_curve::loss_curve;

static FONT: std::sync::Once = std::sync::Once::new();

pub(crate) fn register_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}
