//! Prometheus's rules.
//!
//! - `file`: the rule-file format and its located errors ([`check_files`]).
//! - `group`: group evaluation (recording rules, alert states with `for` and
//!   `keep_firing_for`, `ALERTS` series, notifications to an `AlertSink`); [`Group`] and
//!   [`RuleState`] are also the read model the `/api/v1/rules` and `/api/v1/alerts` wire
//!   shapes are drawn from.
//! - `manager`: the running [`RuleManager`], its schedule, reloads and restored `for` state;
//!   every rule query first takes one of the [`QuerySlots`] the query APIs share.
//! - `template`, `printf`: the templates of alert labels and annotations.
//! - `unittest`: promtool's `test rules` ([`test_files`]).
//! - `metrics`: the `prometheus_rule_*` self-metrics.
//!
//! Reads metrics through the PromQL and LogQL engines and writes them through an appender;
//! delivering notifications is the `alertmanager` crate's; serves no HTTP.

mod file;
mod group;
mod manager;
mod metrics;
mod printf;
mod template;
mod unittest;

use std::io::{self, Write};
use std::path::PathBuf;

pub use file::{GroupSpec, RuleSpec};
pub use group::{ActiveAlert, AlertState, Group, Health, RuleState};
pub use manager::{QuerySlots, RuleConfig, RuleManager, RulesError};
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
