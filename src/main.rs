//! `infergate serve ...`: parse, set up logging, run until SIGINT/SIGTERM.
//! `infergate export ...`: the prediction log and its labels as a training set.

use std::net::SocketAddr;

use clap::Parser;
use infergate::config::{Cli, Command, Config};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: a request's buffers are made on
/// the I/O threads and, when the request is logged, freed by the log's
/// writer thread, and glibc pays an arena lock for every such cross-thread
/// free (a third of the writer's time in a profile); mimalloc hands them
/// back without one. See README "Prediction log on vs off".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command } = Cli::parse();
    let args = match command {
        Command::Serve(args) => args,
        Command::Export(args) => {
            let summary = infergate::predlog::export::export(&args.log, &args.labels, &args.out)?;
            println!("{}", serde_json::to_string(&summary)?);
            return Ok(());
        }
        Command::Probe(args) => {
            if let Err(why) =
                infergate::probe::probe(args.host, args.http_port, &args.path, args.timeout)
            {
                eprintln!("not ready: {why}");
                std::process::exit(1);
            }
            return Ok(());
        }
    };

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in a container's log.
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }

    let addr = |port| SocketAddr::new(args.host, port);
    let listeners = infergate::Listeners::bind(
        addr(args.http_port),
        addr(args.grpc_port),
        Some(addr(args.metrics_port)),
    )
    .await?;
    infergate::run(
        Config::from(&*args),
        listeners,
        infergate::shutdown_signal(),
    )
    .await
}
