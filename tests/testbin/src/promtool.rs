//! Prometheus' own `promtool`, built from its Go module by `build-promtool.sh` (cached outside
//! the clone): `check metrics` parses an exposition the way Prometheus does and lints it against
//! the naming rules (counters end in `_total`, base units, help text on every metric); `check
//! rules` and `test rules` read and evaluate alert rule files with Prometheus' own rule engine.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();

fn promtool() -> &'static Path {
    PROMTOOL.get_or_init(|| crate::built_by("build-promtool.sh"))
}

/// `promtool check metrics` on `exposition`: `Err` with what promtool said when it found a
/// parse error or a lint problem.
pub fn check_metrics(exposition: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `promtool check rules` on the rule file at `path`: its syntax, every expression parsed, the
/// templates of its annotations.
pub fn check_rules(path: &Path) -> Result<String, String> {
    run(&["check".as_ref(), "rules".as_ref(), path.as_os_str()])
}

/// `promtool test rules` on the unit-test file at `path`: its input series are evaluated by
/// Prometheus' own rule engine and every expected alert compared.
pub fn test_rules(path: &Path) -> Result<String, String> {
    run(&["test".as_ref(), "rules".as_ref(), path.as_os_str()])
}

fn run(args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let output = Command::new(promtool())
        .args(args)
        .output()
        .expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(said)
    } else {
        Err(said)
    }
}
