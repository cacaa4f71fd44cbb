//! Sets `cfg(netns_tests)` when the tests that build network namespaces can
//! run here: the build runs as root (effective uid 0, with the
//! `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` capabilities a container may take
//! away) and `ip`, `tc` and `iptables` are on `PATH` (`scripts/setup`
//! installs them). Without it those tests are ignored with the reason.

use std::path::{Path, PathBuf};

/// `CAP_NET_ADMIN`: veth pairs, addresses, qdiscs, iptables rules.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: `ip netns add` and `ip netns exec` (mounts, setns).
const CAP_SYS_ADMIN: u32 = 21;
/// The programs the tests run.
const TOOLS: [&str; 3] = ["ip", "tc", "iptables"];

fn main() {
    println!("cargo:rustc-check-cfg=cfg(netns_tests)");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-changed=build.rs");
    // Rerun once setup installs a tool: cargo scans a listed directory, and
    // a file added to it changes the directory's mtime (dpkg gives the file
    // itself an old one). Only directories that exist: a missing path would
    // rerun this, and rebuild the tests, on every build.
    for dir in path_dirs().filter(|d| d.is_absolute() && d.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = effective_uid(&status) == Some(0)
        && capable(&status, CAP_NET_ADMIN)
        && capable(&status, CAP_SYS_ADMIN);
    if root && TOOLS.iter().all(|t| on_path(t).is_some()) {
        println!("cargo:rustc-cfg=netns_tests");
    }
}

/// The effective uid: the second field of `/proc/self/status`'s `Uid:` line.
fn effective_uid(status: &str) -> Option<u32> {
    field(status, "Uid:")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `cap` is among the effective capabilities (`CapEff:`, hex).
fn capable(status: &str, cap: u32) -> bool {
    field(status, "CapEff:")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(name))
}

/// `PATH`'s directories, each once.
fn path_dirs() -> impl Iterator<Item = PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in std::env::split_paths(&path) {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter()
}

/// Where `program` is on `PATH` (the tests run it by name).
fn on_path(program: &str) -> Option<PathBuf> {
    path_dirs()
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
