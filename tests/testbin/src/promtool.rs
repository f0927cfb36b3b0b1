//! Prometheus' own `promtool`, built from its Go module by `build-promtool.sh` (cached outside
//! the clone): `check metrics` parses an exposition the way Prometheus does and lints it against
//! the naming rules (counters end in `_total`, base units, help text on every metric).

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
