//! The failpoints of the write path (feature `failpoints`, the `fail`
//! crate): every step of the durable protocol in `store` can be made to
//! fail, so that tests inject the fault the crash argument is about.

use std::io;

/// Runs the `fail` point `name`, which may inject an I/O error into the step
/// around it; a no-op without the `failpoints` feature.
///
/// `return` or `return(eio)` injects an EIO-like `Other` error;
/// `return(enospc)` injects `StorageFull`; `return(erofs)` injects
/// `ReadOnlyFilesystem`; `return(eacces)` injects `PermissionDenied`.
/// `pause`, `panic`, `sleep(ms)` and `print` work as the `fail` crate says.
#[inline]
pub(crate) fn failpoint(name: &'static str) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |arg| Err(injected_error(name, arg)));
    let _ = name;
    Ok(())
}

#[cfg(feature = "failpoints")]
fn injected_error(name: &str, arg: Option<String>) -> io::Error {
    // The kinds carry the OS's wording, as a real error of that kind would.
    let (kind, text) = match arg.as_deref() {
        Some("enospc") => (io::ErrorKind::StorageFull, "No space left on device: "),
        Some("erofs") => (io::ErrorKind::ReadOnlyFilesystem, "Read-only file system: "),
        Some("eacces") => (io::ErrorKind::PermissionDenied, "Permission denied: "),
        _ => (io::ErrorKind::Other, ""),
    };
    io::Error::new(kind, format!("{text}injected by failpoint {name}"))
}

/// The names of every failpoint, in the order a write reaches them.
pub const FAILPOINTS: [&str; 9] = [
    "file_driver::open",
    "file_driver::before_temp_write",
    "file_driver::after_temp_write",
    "file_driver::before_temp_fsync",
    "file_driver::after_temp_fsync",
    "file_driver::before_rename",
    "file_driver::after_rename",
    "file_driver::before_dir_fsync",
    "file_driver::after_dir_fsync",
];
