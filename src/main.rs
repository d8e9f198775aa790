//! The `drover` binary: parse the command line, load the config, run the command.
//! Exit codes: 0 success, 1 a problem found or a timeout, 2 a bad config or command line.

fn main() {
    std::process::exit(drover::cli::main());
}
