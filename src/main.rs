//! The `ferry` binary: everything lives in the library; `main` only maps the
//! outcome to an exit code.

fn main() -> std::process::ExitCode {
    ferry::cli::main()
}
