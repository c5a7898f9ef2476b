use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> ExitCode {
    let matches = p2p::cli::Cli::command().get_matches();
    let mut cli = p2p::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (p2p::cli::Command::Send(args), Some(("send", sub))) =
        (&mut cli.command, matches.subcommand())
    {
        let given = |id: &str| {
            sub.value_source(id)
                .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
        };
        args.room_given = given("room") || given("signal");
    }
    p2p::logging::init(cli.verbose, cli.quiet);
    match p2p::run(cli) {
        Ok(code) => code,
        Err(e) => {
            if p2p::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            // One line: the error and its causes, outermost first.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("p2p: error: {}", chain.join(": "));
            if e.downcast_ref::<p2p::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
