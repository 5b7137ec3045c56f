//! The `novamon` binary: parses the command line, loads the configuration and hands over to
//! `serve` or a subcommand. Errors end here: exit code 2 for bad usage or configuration, 1 for
//! failures at run time.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use novamon::cli::{Check, Cli, Command, Test};
use novamon::config::{self, Config};
use novamon::{serve, web};

// jemalloc for Rust's allocations too (sized deallocation); `server/src/heap.rs` says why.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (`malloc_conf` is the unprefixed build's
/// name for them): freed pages go back to the system after one second instead of ten. Under a
/// steady write load RocksDB frees whole memtables and the append path its request buffers;
/// held for ten seconds, they were a tenth of the resident set at 1M series.
#[no_mangle]
#[allow(non_upper_case_globals)]
static malloc_conf: JemallocConf = JemallocConf(c"dirty_decay_ms:1000".as_ptr());

#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: it points to an immutable static string, never written.
unsafe impl Sync for JemallocConf {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PromqlTest { ref files }) => promql_test(files),
        Some(Command::Check(Check::Rules { ref files })) => {
            rules_outcome(rules::check_files(files, &mut std::io::stdout().lock()))
        }
        Some(Command::Test(Test::Rules { ref files })) => rules_outcome(
            rules::test_files(files, &mut std::io::stdout().lock()).map(|s| s.failed == 0),
        ),
        Some(Command::CheckConfig { ref file }) => match Config::load(Some(file)) {
            Ok(c) => match novamon::alertmanager::check(&c).and_then(|()| {
                web::Web::open(c.listeners.web_config.as_deref()).map_err(anyhow::Error::msg)?;
                Ok(())
            }) {
                Ok(()) => {
                    for d in c.deprecated_keys() {
                        eprintln!("novamon: warning: {d}");
                    }
                    println!("{}: valid", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("novamon: {e:#}");
                    ExitCode::from(2)
                }
            },
            Err(e) => config_error(&e),
        },
        None => {
            let config = match load_config(&cli) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            init_logging(&cli.log);
            match serve::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("fatal: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, config::ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.storage.path = dir.clone();
    }
    if let Some(addr) = cli.http_listen {
        config.listeners.http = addr;
    }
    if let Some(addr) = cli.otlp_grpc_listen {
        config.otlp.grpc = addr;
    }
    if let Some(addr) = cli.otlp_http_listen {
        config.otlp.http = addr;
    }
    if let Some(addr) = cli.forward_listen {
        config.logs.forward.listen = addr;
    }
    if let Some(p) = &cli.web_config_file {
        config.listeners.web_config = Some(p.clone());
    }
    if let Some(r) = cli.retention {
        config.storage.retention = config::PromDuration(r);
    }
    Ok(config)
}

fn config_error(e: &config::ConfigError) -> ExitCode {
    eprintln!("novamon: {e}");
    ExitCode::from(2)
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: in a file or a journal the codes are noise.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

fn promql_test(files: &[std::path::PathBuf]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match promql::promqltest::run_files(files, &mut out) {
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("novamon promql-test: {e}");
            ExitCode::from(2)
        }
    }
}

/// promtool's exit codes: 0 all good, 1 a check or test failed.
fn rules_outcome(r: std::io::Result<bool>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("novamon: {e}");
            ExitCode::from(2)
        }
    }
}
