//! The `cirrus` binary.

use std::path::PathBuf;

use cirrus_broker::config::SettingsArgs;
use cirrus_broker::runtime::Broker;
use clap::Parser;

/// Cirrus: a Kafka-compatible streaming engine with stateless brokers over object storage.
///
/// With no arguments it runs one node on 127.0.0.1:9092 keeping everything under
/// ./cirrus-data. Every setting is also a CIRRUS_* environment variable and a key of the
/// --config TOML file; flags win over variables, variables over the file.
#[derive(Parser, Debug)]
#[command(name = "cirrus", version, about, long_about)]
struct Cli {
    /// TOML file with settings (keys as the flags, in snake_case).
    #[arg(long, env = "CIRRUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let file = match cli
        .config
        .as_deref()
        .map(SettingsArgs::from_file)
        .transpose()
    {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let settings = match cli.settings.or(file).validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(settings.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(settings: cirrus_broker::config::Settings) -> anyhow::Result<()> {
    let broker = Broker::start(settings).await?;
    wait_for_signal().await?;
    tracing::info!("signal received: draining");
    broker.shutdown().await
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIRRUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
