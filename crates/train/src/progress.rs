//! Training progress on stderr: an indicatif bar with loss, accuracy and ETA on a terminal,
//! plain log lines (about ten per epoch) otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, lines otherwise.
    #[default]
    Auto,
    /// Always a bar.
    Bar,
    /// Always plain lines.
    Lines,
    /// Nothing (tests, benchmarks).
    Quiet,
}

impl ProgressMode {
    fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        }
    }
}

/// Progress of one epoch.
pub(crate) struct EpochProgress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    next_line: u64,
    started: Instant,
}

impl EpochProgress {
    pub(crate) fn new(mode: ProgressMode, epoch: usize, epochs: usize, total_batches: u64) -> EpochProgress {
        let mode = mode.resolve();
        let label = format!("Epoch {epoch}/{epochs}");
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total_batches), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template")
                .progress_chars("━╸─"),
            );
            bar.set_prefix(label.clone());
            bar
        });
        EpochProgress {
            mode,
            bar,
            label,
            total: total_batches,
            done: 0,
            next_line: 1,
            started: Instant::now(),
        }
    }

    /// One training batch done; `loss` and `acc` are the epoch's running means.
    pub(crate) fn batch(&mut self, loss: f64, acc: f64) {
        self.done += 1;
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("loss {loss:.4} acc {acc:.4}"));
                    bar.inc(1);
                }
            }
            ProgressMode::Lines => {
                // About ten lines per epoch, and always the last batch.
                let step = (self.total / 10).max(1);
                if self.done >= self.next_line * step || self.done == self.total {
                    self.next_line = self.done / step + 1;
                    let elapsed = self.started.elapsed().as_secs_f64();
                    let eta = elapsed / self.done as f64 * (self.total - self.done) as f64;
                    eprintln!(
                        "{} {}/{} loss {loss:.4} acc {acc:.4} elapsed {} eta {}",
                        self.label,
                        self.done,
                        self.total,
                        bertlab_run::format::hms(elapsed),
                        bertlab_run::format::hms(eta)
                    );
                }
            }
            _ => {}
        }
    }

    /// The epoch's summary line (Keras' `- acc … - loss … - val_acc … - val_loss …`).
    pub(crate) fn finish(self, summary: &str) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        if self.mode != ProgressMode::Quiet {
            eprintln!("{} {}", self.label, summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use bertlab_run::format::hms;

    #[test]
    fn hms_formats_like_the_notebook() {
        assert_eq!(hms(167.4), "00:02:47");
        assert_eq!(hms(3_725.0), "01:02:05");
    }
}
