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
// to the watcher on fd 3. A child that outlives its grace after SIGTERM (an API server whose etcd
// is already gone keeps retrying) is killed.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null &
child=$!
(
  read -r _ <&3
  kill -TERM "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$child" 2>/dev/null
) &
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

#[cfg(test)]
mod tests {
    use std::{io::BufRead, time::Duration};

    use super::*;

    const CHILD_ROLE: &str = "MODELGATE_TESTBIN_CHILD_ROLE";

    /// Run only by the test below, in a process of its own: starts a supervised child that
    /// ignores SIGTERM, prints its pid, and aborts the way a crashing test binary would.
    #[test]
    #[ignore = "the child half of an_aborted_test_binary_leaves_no_child_behind"]
    fn child_role() {
        if std::env::var_os(CHILD_ROLE).is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "trap '' TERM; echo $$ > {}; exec sleep 600",
            pid_file.display()
        );
        let child = Supervised::spawn(
            Path::new("/bin/sh"),
            &["-c".to_owned(), script],
            &dir.path().join("log"),
            None,
        )
        .unwrap();
        while std::fs::read_to_string(&pid_file).map_or(true, |p| p.trim().is_empty()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("PID {}", std::fs::read_to_string(&pid_file).unwrap().trim());
        std::mem::forget(child);
        std::mem::forget(dir);
        std::process::abort();
    }

    #[test]
    fn an_aborted_test_binary_leaves_no_child_behind() {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "process::tests::child_role",
                "--nocapture",
            ])
            .env(CHILD_ROLE, "1")
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "the child binary aborts");
        let pid = output
            .stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("PID ").map(str::to_owned))
            .expect("the child printed its supervised pid");
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        // SIGTERM is ignored: gone only once the supervisor's grace ends and it kills.
        for _ in 0..600 {
            if !alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !alive(),
            "process {pid} outlived the test binary that started it"
        );
    }
}
