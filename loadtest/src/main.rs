//! `loadtest`: measure QPS and latency of any KServe V2 server.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use loadtest::{Config, Load, Protocol, Stop};

/// Load generator for KServe V2 / Open Inference Protocol servers
/// (infergate, Triton, KServe, mlserver).
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Args {
    /// Server address, host:port (gRPC port for --protocol grpc).
    #[arg(long, default_value = "127.0.0.1:8001")]
    target: String,

    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,

    #[arg(long)]
    model: String,

    /// Model version; default: the server's choice.
    #[arg(long)]
    model_version: Option<String>,

    /// Closed loop: this many clients, each sending its next request when the
    /// last is answered.
    #[arg(long, default_value_t = 1, conflicts_with = "rate")]
    concurrency: usize,

    /// Open loop: requests due per second, whatever the server does; latency
    /// counts from when a request was due (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,

    /// Open loop: most requests outstanding; a due request beyond it counts as
    /// a client_overloaded error.
    #[arg(long, default_value_t = 10_000)]
    max_inflight: usize,

    /// How long to measure (after the warm-up), e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", conflicts_with = "requests")]
    duration: Duration,

    /// Measure this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,

    /// Sent but not measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,

    /// HTTP connections in the pool / gRPC channels. Default: the concurrency
    /// (closed loop), 1 (gRPC open loop multiplexes).
    #[arg(long, default_value_t = 0)]
    connections: usize,

    /// Rows per request for inputs with a -1 first dimension.
    #[arg(long, default_value_t = 1)]
    batch: usize,

    /// An input's shape, overriding the model metadata: name=1,64. Repeatable.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(String, Vec<i64>)>,

    /// A V2 JSON infer request whose inputs to send instead of random data.
    #[arg(long)]
    request_file: Option<PathBuf>,

    /// Per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,

    /// Seed of the random input data.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Print the report as JSON (on stdout) instead of a table.
    #[arg(long)]
    json: bool,

    /// Write latency-over-time and latency-distribution plots to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,

    /// Exit with status 1 if any request failed.
    #[arg(long)]
    fail_on_error: bool,

    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_shape(s: &str) -> Result<(String, Vec<i64>), String> {
    let (name, dims) = s.split_once('=').ok_or("expected name=d1,d2,...")?;
    let dims = dims
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<i64>()
                .map_err(|e| format!("bad dimension '{d}': {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((name.to_string(), dims))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let config = Config {
        target: a.target,
        protocol: a.protocol,
        model: a.model,
        version: a.model_version,
        batch: a.batch.max(1),
        shapes: a.shapes,
        request_file: a.request_file,
        load: match a.rate {
            Some(rate) => Load::Open {
                rate,
                max_inflight: a.max_inflight,
            },
            None => Load::Closed {
                concurrency: a.concurrency.max(1),
            },
        },
        stop: match a.requests {
            Some(n) => Stop::Requests(n),
            None => Stop::Duration(a.duration),
        },
        warmup: a.warmup,
        connections: a.connections,
        timeout: a.timeout,
        seed: a.seed,
        progress: !a.quiet && !a.json,
    };
    let report = loadtest::run(&config).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = a.plot {
        std::fs::write(&path, loadtest::plot::svg(&report))?;
        eprintln!("plot written to {}", path.display());
    }
    if report.error_count() > 0 {
        eprintln!(
            "{} of {} requests failed",
            report.error_count(),
            report.requests
        );
        if a.fail_on_error {
            std::process::exit(1);
        }
    }
    Ok(())
}
