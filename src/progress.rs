//! Progress bars for the command lines' long jobs, drawn on stderr only when it is a terminal
//! (so logs and pipes stay clean).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `len` steps of `what` (e.g. "images"), or a hidden one when stderr is not a
/// terminal. Call `finish_and_clear` when done.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(&format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {what} {{msg}}"))
        .expect("a valid template")
        .progress_chars("#>-");
    ProgressBar::new(len).with_style(style)
}
