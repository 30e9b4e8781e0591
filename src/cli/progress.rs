//! Progress on stderr: `add`'s first sync (a bar with a spinner on a terminal, plain
//! lines, at most one a second, otherwise) and `db migrate`'s copy (a bar on a terminal).

use crate::sync::Progress as SyncProgress;

/// A progress bar on a terminal, plain lines otherwise (both on stderr).
pub(super) struct ProgressReporter {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::sync::Mutex<std::time::Instant>,
}

impl ProgressReporter {
    pub(super) fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            // The spinner turns while a long fetch reports nothing, so it never looks stuck.
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { bar, last_line: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    pub(super) fn report(&self, progress: SyncProgress) {
        let message = match progress {
            SyncProgress::Listing => "listing remote refs and fetching".to_owned(),
            SyncProgress::Mirrored => {
                self.finish();
                return;
            }
            SyncProgress::Fetching { refs } => format!("fetched {refs} refs"),
            SyncProgress::Commits { done, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    bar.set_message("recording commits");
                    return;
                }
                let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
                if done < total && last.elapsed() < std::time::Duration::from_secs(1) {
                    return;
                }
                *last = std::time::Instant::now();
                format!("recording commits {done}/{total}")
            }
        };
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The progress of `db migrate` on stderr: a bar of rows copied, on a terminal only (the
/// command prints its report when it is done; a script reads that).
pub(super) struct MigrateReporter {
    bar: Option<indicatif::ProgressBar>,
}

impl MigrateReporter {
    pub(super) fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            // A spinner until the snapshot says how many rows there are.
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message("opening the databases");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    pub(super) fn report(&self, progress: crate::storage::migrate::Progress) {
        use crate::storage::migrate::Progress;
        let message = match progress {
            Progress::Started { rows } => {
                if let Some(bar) = &self.bar {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} rows")
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    bar.set_length(rows);
                }
                return;
            }
            Progress::Table { table, rows } => format!("copying {table} ({rows} rows)"),
            Progress::Copied { rows } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(rows);
                }
                return;
            }
            Progress::Committing => "committing".to_owned(),
            Progress::Verifying => {
                self.finish();
                return;
            }
        };
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
