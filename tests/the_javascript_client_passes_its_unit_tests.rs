//! The browser client's pure parts (clients/js: identity and its vectors,
//! the pool view, the shipped bundle being the build of its sources), with
//! node's test runner, as part of the README's test command.

#[test]
fn the_javascript_client_passes_its_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    assert!(
        dir.join("node_modules/esbuild").is_dir(),
        "clients/js's node packages are missing: run scripts/setup"
    );
    let out = std::process::Command::new("node")
        .args(["--test", "test/"])
        .current_dir(&dir)
        .output()
        .expect("node runs (scripts/setup installs it)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test in clients/js:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("# fail 0"), "{said}");
}
