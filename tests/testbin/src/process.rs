//! Child processes that cannot outlive the test binary. The control plane lives in a `static`,
//! which Rust never drops, so each child runs under a tiny `sh` supervisor that holds a pipe from
//! this process: when the test binary exits, however it exits, the pipe closes, `read` returns,
//! and the supervisor stops the child. The supervisor exits with the child, removing its scratch
//! directory if given, so a crashed child is seen as an exited process.

use std::{
    fs::File,
    io,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
};

// A background list's stdin is /dev/null in a non-interactive shell, so the lifeline is handed
// to the watcher on fd 3.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null &
child=$!
( read -r _ <&3; kill -TERM "$child" 2>/dev/null ) &
wait "$child"
status=$?
if [ -n "${MODELGATE_TESTBIN_CLEANUP:-}" ]; then rm -rf "$MODELGATE_TESTBIN_CLEANUP"; fi
exit "$status"
"#;

/// A supervised child. Dropping it (or exiting) stops the child.
pub struct Supervised {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Supervised {
    /// Starts `program args...` with stdout and stderr appended to `log`, and `cleanup` removed
    /// once it has stopped.
    pub fn spawn(
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> io::Result<Self> {
        let log = File::create(log)?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("supervisor")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(dir) = cleanup {
            command.env("MODELGATE_TESTBIN_CLEANUP", dir);
        }
        let mut child = command.spawn()?;
        let lifeline = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("supervisor stdin was not piped"))?;
        Ok(Self {
            child,
            lifeline: Some(lifeline),
        })
    }

    /// Whether the supervisor (and so the child) has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Closing the lifeline is what stops the child; wait so no zombie is left behind.
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}
