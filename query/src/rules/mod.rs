//! Prometheus's rules: the rule-file format, the templates of alert labels and annotations,
//! group evaluation (recording rules, alert states, `ALERTS` series, notifications to an
//! `AlertSink`), the running manager with reloads, the API shapes of `/api/v1/rules` and
//! `/api/v1/alerts`, and promtool's `check rules` / `test rules`. Reads and writes metrics only
//! through the engine and `Tsdb::append`; delivering notifications is `crate::alertmanager`'s.

pub(crate) mod api;
mod file;
mod group;
mod manager;
mod metrics;
mod printf;
mod template;
mod unittest;

use std::io::{self, Write};
use std::path::PathBuf;

pub use manager::{RuleConfig, RuleManager, RulesError};
pub use unittest::{run_files as test_files, TestSummary};

/// `novamon check rules`: validates each file as promtool does, printing `SUCCESS: N rules
/// found` or every located error. Returns whether all files are valid.
pub fn check_files(paths: &[PathBuf], out: &mut dyn Write) -> io::Result<bool> {
    let mut ok = true;
    for path in paths {
        writeln!(out, "Checking {}", path.display())?;
        match file::load_file(path) {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                writeln!(out, "  SUCCESS: {n} rules found\n")?;
            }
            Err(errs) => {
                ok = false;
                writeln!(out, "  FAILED:")?;
                for e in errs {
                    writeln!(out, "{e}")?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(ok)
}
