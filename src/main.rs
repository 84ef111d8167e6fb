//! Thin: parse the command line, start tracing, run the command, map the
//! outcome to an exit code (0 ok, 1 findings, 2 usage or input error).

mod cli;
mod commands;

use clap::Parser;
use cli::{Cli, Command, PolicyCommand};
use commands::{INPUT_ERROR, OK};
use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The offline commands end as Unix tools do when their reader goes
/// away (`shareaudit audit ... | head`): killed by SIGPIPE, quietly, instead
/// of an error about a broken pipe (or a panic in `print!`). Rust ignores
/// SIGPIPE for every program; the daemon keeps it so: its sockets must
/// see errors, not kill it.
fn die_on_broken_pipe() {
    // SAFETY: resets one signal's disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let offline = match &cli.command {
        Command::Audit(_) | Command::Policy(_) | Command::Schema { .. } | Command::Report(_) => {
            true
        }
        Command::Generate(args) => args.brokers.is_none(),
        Command::Run(_) | Command::Demo(_) => false,
    };
    if offline {
        die_on_broken_pipe();
    }
    // The demo's live summary is for a person: its expected dead letters are not logged over it.
    let level = if matches!(cli.command, Command::Demo(_)) && cli.log == "warn" {
        "error"
    } else {
        cli.log.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .init();

    let result = match &cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Policy(PolicyCommand::Check { file }) => commands::policy::check(file.as_deref()),
        Command::Policy(PolicyCommand::Test {
            dir,
            policy,
            verbose,
            coverage,
        }) => commands::policy::test(dir, policy.as_deref(), *verbose, *coverage),
        Command::Policy(PolicyCommand::Explain { rule, policy }) => {
            commands::policy::explain(rule, policy.as_deref())
        }
        Command::Generate(args) => commands::generate::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Schema { name } => {
            let text = match name.as_str() {
                "event" => shareaudit::codec::avro::EVENT_AVSC,
                "consent" => shareaudit::codec::avro::CONSENT_AVSC,
                _ => shareaudit::codec::avro::VIOLATION_AVSC,
            };
            print!("{text}");
            Ok(OK)
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("shareaudit: error: {e:#}");
            ExitCode::from(INPUT_ERROR as u8)
        }
    }
}
