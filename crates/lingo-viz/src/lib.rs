//! Pictures of what Lingo's models do: the loss and validation-metric curves of a run and attention
//! maps of a sentence,
//! drawn with `plotters` (PNG) or written as self-contained HTML. Text is set in DejaVu Sans, embedded
//! in the binary (licence beside it in `assets/`), so pictures look the same on machines without fonts.

pub mod attention_map;
pub mod loss_curve;
pub mod metric_curves;
pub mod scaling;

pub use attention_map::attention_map;
pub use loss_curve::loss_curve;
pub use metric_curves::metric_curves;
pub use scaling::{scaling_plot, Panel};

use std::path::{Path, PathBuf};

/// What can go wrong drawing a picture.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// The data does not fit the picture (shapes that disagree).
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drawing: {0}")]
    Draw(String),
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>>
    for VizError
{
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        VizError::Draw(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, VizError>;

/// The error of an I/O operation on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VizError + '_ {
    move |source| VizError::Io {
        path: path.into(),
        source,
    }
}

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
