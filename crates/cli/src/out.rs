//! Standard output for commands that are read by people and by pipes.
//!
//! A reader that goes away (`peer jobs | head`) closes the pipe; the
//! command then ends quietly with status 0, as it has nothing left to do,
//! instead of panicking on the failed write.

use std::fmt;
use std::io::{ErrorKind, Write};

/// Writes one line to stdout (see the module docs for a closed pipe).
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// [`outln!`]'s body.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        closed(&e);
    }
}

/// Ends the command after a failed write to stdout: quietly with status 0
/// when the reader closed the pipe, else with an error and status 1.
pub(crate) fn closed(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}
