//! `render`: every selected host's files rendered locally with stand-in
//! facts, printed or written to a folder; no SSH.

use crate::cli::RenderArgs;
use crate::error::Outcome;
use crate::output::{out, outln};
use crate::run::{self, Mode};

/// `render`: every host's files rendered locally with stand-in facts; no SSH.
pub fn exec(args: &RenderArgs) -> Outcome {
    let mut settings = args.common.settings(Mode::Check)?;
    if let Some(host) = &args.host {
        settings.limit = Some(host.clone());
    }
    let started = std::time::Instant::now();
    let prepared = run::load(&settings)?;
    let rendered = run::render_offline(&prepared, &settings)?;
    let mut files = 0;
    for (host, outputs) in &rendered {
        for (path, content) in outputs {
            files += 1;
            match &args.out {
                Some(dir) => {
                    let target = dir.join(host).join(path.trim_start_matches('/'));
                    target
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&target, content))
                        .map_err(|e| format!("{}: {e}", target.display()))?;
                }
                None => {
                    outln!("==> {host}: {path} <==");
                    out!("{}", String::from_utf8_lossy(content));
                }
            }
        }
    }
    if args.out.is_some() {
        eprintln!("rendered {files} file(s) for {} host(s) in {:.3}s", rendered.len(), started.elapsed().as_secs_f64());
    }
    Ok(0)
}
