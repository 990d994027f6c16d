//! `wf`: the developer CLI. Parses arguments and hands over to `wf_cli::wf`.

fn main() -> std::process::ExitCode {
    wf_cli::wf::main()
}
