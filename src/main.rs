//! The `weir` command: run a pipeline, inspect or reset its checkpoint.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use weir::config::PipelineConfig;

mod status_line;
use status_line::StatusLine;

/// Exactly-once stream processing from Kafka into SQL tables.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    /// Log format: `text` for people, `json` for log shippers; `auto` picks text on a terminal.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true, env = "WEIR_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline until SIGINT/SIGTERM: recover from its checkpoint, then consume its topics
    /// into its table. The first signal stops after the running batch; a second exits at once.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Stop after this many new batches (for scripts and benchmarks).
        #[arg(long)]
        max_batches: Option<u64>,
        /// Serve metrics, health and the status page on this address (overrides `pipeline.http`),
        /// e.g. `127.0.0.1:9400`.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
    },
    /// Recompute from Kafka what the table must hold over the committed ranges and compare:
    /// missing, duplicated and differing rows per partition, gaps and overlaps between commits.
    /// Exits non-zero on any difference.
    Verify {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print the report as JSON on stdout, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Where a pipeline stands, without a running process: per partition the committed offset
    /// (from the sink's bookkeeping tables), the checkpoint's position, Kafka's end offset, the
    /// lag and the last commit's batch time.
    Status {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print the report as JSON on stdout, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Inspect or reset a checkpoint directory.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CheckpointCommand {
    /// Show the snapshots and plan logs of a checkpoint directory.
    Inspect {
        /// The checkpoint directory (`pipeline.checkpoint_dir`).
        dir: PathBuf,
    },
    /// Start fresh operator state at the stored offsets, after a change to the pipeline's identity.
    Reset {
        /// Keep the stored offsets (the only reset weir offers: a reset that forgets offsets
        /// would re-read or skip data; delete the directory for that).
        #[arg(long, required = true)]
        keep_offsets: bool,
        /// The pipeline file whose checkpoint to reset.
        pipeline: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "failpoints")]
    let _failpoints = failpoints_from_env();
    // `weir run` on a terminal shows a status line under its log.
    let status = (matches!(cli.command, Command::Run { .. })
        && !matches!(cli.log_format, LogFormat::Json)
        && std::io::stderr().is_terminal())
    .then(StatusLine::new);
    let json_logs = init_logging(cli.log_format, status.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print_stderr(&format!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    if let Some(status) = &status {
        status.finish();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = weir::error::report(error.as_ref());
            // Log shippers get the error as a structured line; people always get the plain one.
            if json_logs {
                tracing::error!(message = "weir stopped with an error.", error = %error);
            }
            print_stderr(&format!("error: {error}\n"));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            pipeline,
            max_batches,
            http,
        } => {
            let mut config = PipelineConfig::from_path(&pipeline)?;
            if http.is_some() {
                config.pipeline.http = http;
            }
            let shutdown = weir::runtime::shutdown::on_signals()
                .context("installing the SIGINT/SIGTERM handlers")?;
            weir::runtime::run_pipeline(&config, shutdown, max_batches).await?;
            Ok(())
        }
        Command::Verify { pipeline, json } => verify(&pipeline, json).await,
        Command::Status { pipeline, json } => {
            let config = PipelineConfig::from_path(&pipeline)?;
            let report = weir::runtime::pipeline_status(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { dir },
        } => {
            let inspection = tokio::task::spawn_blocking(move || weir::checkpoint::inspect(&dir))
                .await
                .context("inspecting the checkpoint")??;
            print_stdout(&format!("{inspection}\n"))
        }
        Command::Checkpoint {
            command: CheckpointCommand::Reset { pipeline, .. },
        } => {
            let config = PipelineConfig::from_path(&pipeline)?;
            let identity = weir::runtime::pipeline_identity(&config);
            let dir = config.pipeline.checkpoint_dir.clone();
            tokio::task::spawn_blocking(move || {
                weir::checkpoint::reset_keep_offsets(&dir, &identity)
            })
            .await
            .context("resetting the checkpoint")??;
            print_stdout(&format!(
                "checkpoint {} reset: offsets kept, operator state dropped\n",
                config.pipeline.checkpoint_dir.display()
            ))
        }
    }
}

/// `weir verify`: the report on stdout, progress on stderr (one line rewritten on a terminal).
async fn verify(pipeline: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = PipelineConfig::from_path(pipeline)?;
    let on_terminal = std::io::stderr().is_terminal();
    let report = weir::verify::verify(&config, move |progress| {
        if on_terminal {
            print_stderr(&format!("\r{progress}\x1b[K"));
        } else {
            print_stderr(&format!("{progress}\n"));
        }
    })
    .await?;
    if on_terminal {
        print_stderr("\n");
    }
    if json {
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        print_stdout(&report.to_string())?;
    }
    anyhow::ensure!(
        report.is_clean(),
        "verification of {} failed: {} missing, {} duplicated, {} differing, {} unexpected rows; {} problems with the committed ranges",
        pipeline.display(),
        report.missing,
        report.duplicated,
        report.differing,
        report.unexpected,
        report.problems.len()
    );
    Ok(())
}

/// Arms the failpoints named in `FAILPOINTS` (the `fail` crate's syntax, e.g.
/// `FAILPOINTS='runtime::after_fetch=2*off->panic'`) and makes a panic end the process at
/// once, as a crash would: a failpoint's `panic` aborts weir wherever it fires, in a task or on
/// a blocking thread.
#[cfg(feature = "failpoints")]
fn failpoints_from_env() -> fail::FailScenario<'static> {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    fail::FailScenario::setup()
}

/// Writes `text` to stdout. A reader that went away (`weir verify … | head`) is no error: there
/// is no one left to tell, and the command still ends with the status that says how it went.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to stdout"),
    }
}

/// Writes `text` to stderr, where nothing can be done about a failure to write.
fn print_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Installs the log subscriber; true when logs are JSON lines. A log line that cannot be
/// written (stderr closed) is dropped without a word, since the word would go there too.
fn init_logging(format: LogFormat, status: Option<&Arc<StatusLine>>) -> bool {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;

    // sqlx logs every applied migration and slow statement at INFO: noise on every start.
    let filter =
        EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .log_internal_errors(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else if let Some(status) = status {
        tracing_subscriber::fmt::layer()
            .compact()
            .log_internal_errors(false)
            .with_ansi(ansi)
            .with_writer(status.stderr())
            .with_filter(filter)
            .with_filter(status_line::WithoutBatchLines)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .log_internal_errors(false)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let progress = status.map(|status| {
        status.layer().with_filter(
            Targets::new().with_target(status_line::PROGRESS_TARGET, LevelFilter::DEBUG),
        )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(progress)
        .init();
    json
}
