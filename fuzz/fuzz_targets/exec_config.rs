//! An exec handlers file (`peer --config`, crates/peer/src/exec.rs,
//! `parse`): TOML in, a checked handler per `[[handler]]` or an error
//! naming the handler and the problem. Programs are looked up in `PATH`
//! (a file-system check, no process is started).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader reads the file as UTF-8 text first.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(handlers) = jobmesh_peer::exec::parse(text, Path::new("handlers.toml")) {
            // What a run reads from a checked handler.
            for (_, handler) in handlers {
                let _ = handler.timeout();
            }
        }
    }
});
