//! Forwards its arguments to the `protoc` that `protoc-bin-vendored` ships,
//! so the gRPC crates build on a machine without a system `protoc`.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let protoc = match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => path,
        Err(err) => {
            eprintln!("protoc-vendored: no vendored protoc for this platform: {err}");
            return ExitCode::from(2);
        }
    };
    match Command::new(&protoc).args(std::env::args_os().skip(1)).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(err) => {
            eprintln!("protoc-vendored: cannot run {}: {err}", protoc.display());
            ExitCode::from(2)
        }
    }
}
