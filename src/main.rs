use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = p2p::cli::Cli::parse();
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
