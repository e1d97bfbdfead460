//! A spinner on the terminal while ArcGIS is read, so a long listing does not look hung.
//! Drawn on standard error and only on a terminal: pipes and `--json` stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget};

/// A running spinner; [`Spinner::finish`] clears it.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    /// Starts a spinner saying `message`, when `show` (and standard error is a terminal).
    pub fn start(show: bool, message: &str) -> Spinner {
        if !show {
            return Spinner(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_message(format!("{message}…"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner(Some(bar))
    }

    /// Clears the spinner.
    pub fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}
