use std::process::Command;

/// `examples/library.rs` (custom handlers, files in and out, custom strategy, events) runs to
/// completion. `cargo test` builds the examples next to the test binaries.
#[test]
fn the_library_example_runs() {
    let exe = std::env::current_exe().expect("test binary path");
    let examples = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples")
        .join("library");
    assert!(
        examples.exists(),
        "{} is missing: run `cargo test --workspace`",
        examples.display()
    );
    let out = Command::new(&examples).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"queued"), "{stdout}");
    assert_eq!(events.last(), Some(&"finished"), "{stdout}");
    assert!(events.iter().any(|e| e.starts_with("progress")), "{stdout}");
    assert!(stdout.contains(r#"result: {"words":5}"#), "{stdout}");
    assert!(stdout.contains("worker: counter"), "{stdout}");
    assert!(
        stdout.contains(r#"blob result: {"bytes":16} Some("upper.txt") = FILES TRAVEL TOO"#),
        "{stdout}"
    );
}
