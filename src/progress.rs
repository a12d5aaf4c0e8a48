//! Progress while hosts are worked on: on a terminal, one indicatif line per
//! host in flight (connect → snapshot → install → handlers) under an overall
//! bar, cleared at the end; otherwise plain timestamped lines on stderr, one
//! per host event. Never both; nothing with `-q`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    multi: Option<MultiProgress>,
    overall: ProgressBar,
    plain: bool,
    started: Instant,
}

impl Progress {
    pub fn new(hosts: usize, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let plain = !terminal && !quiet;
        let multi = (terminal && !quiet).then(MultiProgress::new);
        let overall = match &multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(hosts as u64));
                bar.set_style(
                    ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} hosts {elapsed:>4} {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.tick();
                bar
            }
            None => ProgressBar::with_draw_target(Some(hosts as u64), ProgressDrawTarget::hidden()),
        };
        Progress { multi, overall, plain, started: Instant::now() }
    }

    /// A line for one host, shown while it is worked on.
    pub fn host(&self, name: &str) -> HostProgress {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.insert_before(&self.overall, ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("  {spinner} {prefix:<20} {msg}").expect("valid template"));
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        HostProgress { bar, name: name.to_owned(), plain: self.plain, started: self.started }
    }

    /// A message between hosts (a batch starts), printed without tearing the bars.
    pub fn note(&self, message: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(message);
            }
            None if self.plain => eprintln!("{:>8.3}s {message}", self.started.elapsed().as_secs_f64()),
            None => {}
        }
    }

    pub fn host_done(&self) {
        self.overall.inc(1);
    }

    pub fn finish(&self) {
        self.overall.finish_and_clear();
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

pub struct HostProgress {
    bar: Option<ProgressBar>,
    name: String,
    plain: bool,
    started: Instant,
}

impl HostProgress {
    pub fn phase(&self, phase: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(phase.to_owned());
        } else if self.plain {
            eprintln!("{:>8.3}s {} {phase}", self.started.elapsed().as_secs_f64(), self.name);
        }
    }

    pub fn finish(self, outcome: &str) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.plain => eprintln!("{:>8.3}s {} {outcome}", self.started.elapsed().as_secs_f64(), self.name),
            None => {}
        }
    }
}
