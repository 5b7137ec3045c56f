//! The command line: flags that override the config file, and the subcommands. Owns argument
//! parsing only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "novamon",
    version,
    about = "One process for metrics, logs and traces: a Prometheus remote-write receiver and query API for Grafana.",
    long_about = "One process for metrics, logs and traces.\n\nWithout arguments novamon serves on its embedded default: data under ./data, HTTP on 0.0.0.0:9090 (Prometheus remote-write at /api/v1/write, the Prometheus query API at /api/v1/*, health at /-/healthy and /-/ready, self-metrics at /metrics). A YAML config file (--config) overrides the defaults and takes Prometheus's prometheus.yml shape; the flags below override both."
)]
pub struct Cli {
    /// YAML configuration file (prometheus.yml shape plus novamon's sections); the embedded
    /// default when absent.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Directory for all stored data [default: ./data, or storage.path of the config].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for the HTTP API [default: 0.0.0.0:9090, or listeners.http of the config].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<std::net::SocketAddr>,

    /// How long samples are kept, in Prometheus notation (e.g. 15d, 36h) [default: 15d, or
    /// storage.retention of the config].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub retention: Option<std::time::Duration>,

    /// Address for OTLP/gRPC: metrics, logs and traces [default: 0.0.0.0:4317, or otlp.grpc
    /// of the config].
    #[arg(long, value_name = "ADDR")]
    pub otlp_grpc_listen: Option<std::net::SocketAddr>,

    /// Address for OTLP/HTTP: metrics, logs and traces [default: 0.0.0.0:4318, or otlp.http
    /// of the config].
    #[arg(long, value_name = "ADDR")]
    pub otlp_http_listen: Option<std::net::SocketAddr>,

    /// Address for the Fluentd forward protocol [default: 0.0.0.0:24224, or
    /// logs.forward.listen of the config].
    #[arg(long, value_name = "ADDR")]
    pub forward_listen: Option<std::net::SocketAddr>,

    /// Web config file in Prometheus's format (exporter-toolkit): TLS and basic auth of the
    /// HTTP, OTLP/HTTP and OTLP/gRPC listeners, plus novamon's bearer_tokens and roles
    /// [default: listeners.web_config of the config]. Re-read on SIGHUP and POST /-/reload.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Log filter in tracing's env-filter syntax (e.g. info, novamon=debug).
    #[arg(
        long,
        value_name = "FILTER",
        env = "NOVAMON_LOG",
        default_value = "info"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run PromQL test scripts (Prometheus's promqltest format) against novamon's engine and
    /// storage; prints each failing evaluation and ends with "N passed, M failed".
    PromqlTest {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Check a configuration file and exit: 0 when valid, 2 with the error otherwise.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Validate files, as promtool check does.
    #[command(subcommand)]
    Check(Check),
    /// Run unit tests, as promtool test does.
    #[command(subcommand)]
    Test(Test),
}

#[derive(Debug, Subcommand)]
pub enum Check {
    /// Check Prometheus rule files: prints every error with file, line, group and rule;
    /// exits 1 when any file is invalid.
    Rules {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Test {
    /// Run rule unit tests in promtool's format; prints failures and ends with
    /// "N passed, M failed"; exits 1 when any test failed.
    Rules {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}
