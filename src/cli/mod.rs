//! The command line: `drover [--config FILE] <command>`. Each command lives in its own module;
//! this one parses arguments, loads the config and maps outcomes to exit codes.

mod check;
mod check_copy;
mod copy;
mod ddl;
mod generate;
mod init;
mod install;
mod interleave;
mod pause;
mod reload;
mod retry;
mod status;
mod status_offline;
mod verify;
mod verify_repair;
mod wait;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code when a command found problems, failed, or timed out.
pub const EXIT_PROBLEM: i32 = 1;
/// Exit code for a bad config file or command line.
pub const EXIT_CONFIG: i32 = 2;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Trigger-based PostgreSQL replication: migrations, fan-out, multi-master"
)]
struct Cli {
    /// Config file (default: $DROVER_CONFIG, else config/drover.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to every database and check versions, privileges and tables.
    Check,
    /// Create or update drover's schema, delta tables and triggers.
    Install,
    /// Remove everything drover created.
    Uninstall,
    /// Run the daemon in the foreground (SIGINT/SIGTERM stop it after the current round).
    Run,
    /// Show the running daemon's view of the syncs; when no daemon answers, what the databases
    /// record (progress, pending rows, pause, held tables) and exit 1.
    Status {
        /// Only this sync.
        sync: Option<String>,
        /// Print JSON: {"syncs": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Truncate and copy tables from the first source to the receive-only databases, then
    /// continue with changes from exactly that snapshot.
    Copy {
        sync: String,
        /// Only this table (SQL name, e.g. public.t).
        #[arg(long)]
        table: Option<String>,
    },
    /// Start a round of a sync now.
    Kick {
        sync: String,
        /// Return only once a round started after the call has been applied to every target
        /// (exit 1 on timeout, or at once when the sync is paused).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = wait::DEFAULT_TIMEOUT_SECS, requires = "wait")]
        timeout: f64,
    },
    /// Pause a sync: stored in its first source, so it survives daemon restarts.
    Pause {
        sync: String,
        /// Why (shown by status).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused sync.
    Resume { sync: String },
    /// Make the running daemon re-read its config file (as SIGHUP does).
    Reload,
    /// Run a schema change on every database of a sync (receivers first), with the sync
    /// paused around it; then refresh capture and resume.
    Ddl {
        sync: String,
        /// The SQL script to run.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "sql",
            required_unless_present = "sql"
        )]
        file: Option<PathBuf>,
        /// The SQL to run.
        #[arg(short = 'c', long = "command", value_name = "SQL")]
        sql: Option<String>,
        /// How long to wait for the round running at the call.
        #[arg(long, default_value_t = ddl::DEFAULT_TIMEOUT_SECS)]
        timeout: f64,
    },
    /// Retry held tables (a target refused their rows) now instead of after their backoff.
    Retry {
        sync: String,
        /// Only the held group that has this table (SQL name, e.g. public.t).
        #[arg(long)]
        table: Option<String>,
        /// Only on this target database.
        #[arg(long)]
        target: Option<String>,
    },
    /// Wait until every target has applied everything committed on the sources before the call.
    Wait {
        sync: String,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = wait::DEFAULT_TIMEOUT_SECS)]
        timeout: f64,
    },
    /// Write a commented config replicating every matching table of SOURCE to TARGET (no
    /// config file needed). Patterns: `*` and `?` wildcards, `schema.table` or a table name.
    Init {
        /// The source database, postgresql://user@host:port/dbname (a password in it is used
        /// to connect but never written).
        #[arg(long, value_name = "URL")]
        source: String,
        /// The target database, as --source.
        #[arg(long, value_name = "URL")]
        target: String,
        /// Only tables in this schema (repeatable; default every schema but the system's).
        #[arg(long = "schema", value_name = "SCHEMA")]
        schemas: Vec<String>,
        /// Only tables matching this pattern (repeatable), e.g. 'pgbench_*' or 'sales.*'.
        #[arg(long, value_name = "PATTERN")]
        tables: Vec<String>,
        /// Leave out tables matching this pattern (repeatable).
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Write the config to FILE (never overwritten) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Compare every table across the sync's databases and list the differing keys.
    Verify {
        sync: String,
        /// Only this table (it must be in the sync's relgroup).
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
        /// Print JSON: {"sync", "identical", "tables": [...]}.
        #[arg(long)]
        json: bool,
        /// Make every differing key equal to the first source (one transaction per database,
        /// as drover applies changes); needs the sync's lease (stop its daemon first).
        #[arg(long)]
        repair: bool,
        /// With --repair: print the SQL it would run and change nothing.
        #[arg(long, requires = "repair")]
        dry_run: bool,
    },
    /// Print the shell completion script (e.g. `drover completions bash >
    /// /usr/share/bash-completion/completions/drover`). Needs no config file.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page drover(1) in roff (`drover man | man -l -`). Needs no config file.
    Man,
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_CONFIG } else { EXIT_OK };
        }
    };
    if let Some(code) = generate(&cli.command) {
        return code;
    }
    // `init` writes a config: it needs none.
    if let Command::Init {
        source,
        target,
        schemas,
        tables,
        exclude,
        output,
    } = cli.command
    {
        let args = init::Args {
            source,
            target,
            schemas,
            tables,
            exclude,
            output,
        };
        return exit_code(block_on(init::run(&args)));
    }
    let config = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            if matches!(cli.command, Command::Reload) {
                eprintln!("drover: not reloaded: the daemon keeps running its old config");
            }
            return EXIT_CONFIG;
        }
    };
    init_tracing(config.daemon.log_format);
    exit_code(dispatch(cli.command, config))
}

/// The exit code of a finished command; an error is printed with its causes.
fn exit_code(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drover: {e:#}");
            EXIT_PROBLEM
        }
    }
}

/// Runs a command that needs the loaded config.
fn dispatch(command: Command, config: Config) -> anyhow::Result<i32> {
    match command {
        Command::Run => crate::actors::daemon::run(config),
        Command::Check => block_on(check::run(&config)),
        Command::Install => block_on(install::install(&config)),
        Command::Uninstall => block_on(install::uninstall(&config)),
        Command::Status { sync, json } => block_on(status::status(&config, sync.as_deref(), json)),
        Command::Copy { sync, table } => block_on(copy::run(&config, &sync, table.as_deref())),
        Command::Retry {
            sync,
            table,
            target,
        } => block_on(retry::run(
            &config,
            &sync,
            table.as_deref(),
            target.as_deref(),
        )),
        Command::Kick { sync, wait, .. } if !wait => block_on(status::kick(&config, &sync)),
        Command::Kick { sync, timeout, .. } => block_on(pause::kick_wait(&config, &sync, timeout)),
        Command::Pause { sync, reason } => {
            block_on(pause::pause(&config, &sync, reason.as_deref()))
        }
        Command::Resume { sync } => block_on(pause::resume(&config, &sync)),
        Command::Reload => block_on(reload::run(&config)),
        Command::Ddl {
            sync,
            file,
            sql,
            timeout,
        } => block_on(ddl::run(
            &config,
            ddl::Args {
                sync: &sync,
                file: file.as_deref(),
                sql: sql.as_deref(),
                timeout,
            },
        )),
        Command::Wait { sync, timeout } => block_on(wait::run(&config, &sync, timeout)),
        Command::Init { .. } => unreachable!("handled before loading a config"),
        Command::Verify {
            sync,
            table,
            json,
            repair,
            dry_run,
        } => {
            let repair = verify::Repair {
                enabled: repair,
                dry_run,
            };
            block_on(verify::run(&config, &sync, table.as_deref(), json, repair))
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled by generate"),
    }
}

/// The commands that print generated files and need no config; None for every other one.
fn generate(command: &Command) -> Option<i32> {
    let mut out = std::io::stdout().lock();
    let written = match command {
        Command::Completions { shell } => generate::completions(*shell, &mut out),
        Command::Man => generate::man(&mut out),
        _ => return None,
    };
    Some(match written {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("drover: cannot write to stdout: {e}");
            EXIT_PROBLEM
        }
    })
}

fn block_on<F: std::future::Future<Output = anyhow::Result<i32>>>(f: F) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Logs to stderr as text or JSON lines (`daemon.log_format`); level from RUST_LOG (default
/// info).
fn init_tracing(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Checks that a sync named on the command line exists.
fn require_sync<'a>(config: &'a Config, sync: &str) -> anyhow::Result<&'a config::SyncConfig> {
    config.syncs.get(sync).ok_or_else(|| {
        anyhow::anyhow!(
            "no sync named {sync:?} in {} (syncs: {})",
            config.path.display(),
            config.syncs.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}
