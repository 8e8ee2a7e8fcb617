//! The `waybill` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    waybill::main()
}
