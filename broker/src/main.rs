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
#[command(
    name = "cirrus",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// TOML file with settings (keys as the flags, in snake_case).
    #[arg(long, env = "CIRRUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run only the controller of a cluster (no Kafka listener); brokers run one too,
    /// so this is optional. Needs --etcd-endpoints.
    Controller {
        /// TOML file with settings (keys as the flags, in snake_case).
        #[arg(long, env = "CIRRUS_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<SettingsArgs>,
    },
    /// Administer a cluster through any broker's admin API (--admin-listen).
    Admin(cirrus_broker::admin_cli::AdminArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (config, settings, standalone_controller) = match cli.command {
        Some(Command::Admin(args)) => return run_admin(args),
        Some(Command::Controller { config, settings }) => (config, *settings, true),
        None => (cli.config, cli.settings, false),
    };
    let file = match config.as_deref().map(SettingsArgs::from_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let settings = match settings.or(file).validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if standalone_controller && settings.etcd_endpoints.is_none() {
        eprintln!("error: `cirrus controller` needs --etcd-endpoints");
        return std::process::ExitCode::from(2);
    }
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
    let outcome = if standalone_controller {
        runtime.block_on(cirrus_broker::runtime::run_controller_only(
            settings,
            wait_for_signal(),
        ))
    } else {
        runtime.block_on(run(settings))
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_admin(args: cirrus_broker::admin_cli::AdminArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cirrus_broker::admin_cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the broker until SIGTERM/SIGINT. In a cluster, a fenced engine (lost session)
/// is abandoned and a new one started in its place, as a supervisor would restart the
/// process, without losing the listeners' addresses.
async fn run(settings: cirrus_broker::config::Settings) -> anyhow::Result<()> {
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut fenced_before = 0;
    loop {
        let mut broker = match Broker::start(settings.clone()).await {
            Ok(b) => b,
            // After a fence the cause is often still there (etcd unreachable): keep
            // trying, as a supervisor would, until it returns or we are told to stop.
            Err(e) if fenced_before > 0 => {
                tracing::warn!(error = %format!("{e:#}"), "restarting the engine failed; retrying in 2s");
                tokio::select! {
                    result = &mut signal => return result,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => continue,
                }
            }
            Err(e) => return Err(e),
        };
        broker.logs.metrics.fenced.inc_by(fenced_before);
        tokio::select! {
            result = &mut signal => {
                result?;
                tracing::info!("signal received: draining");
                return broker.shutdown().await;
            }
            _ = broker.fenced() => {
                fenced_before += 1;
                tracing::warn!(times = fenced_before, "engine fenced; abandoning it and starting a new one");
                broker.abandon().await;
            }
        }
    }
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
