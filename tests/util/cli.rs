//! Running programs as an operator does: the real `fieldsync` binary (its
//! exit code, stdout and stderr, and its JSON output), and any program fed
//! on its standard input. Not the `sqlite3` shell's queries ([`super::shell`]).

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value as Json;

use super::Res;

/// What a finished process printed and how it exited.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Out {
    /// True if the process exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output parsed as one JSON value.
    pub fn json(&self) -> Res<Json> {
        serde_json::from_str(self.stdout.trim()).map_err(|e| {
            format!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
            .into()
        })
    }

    /// Fail unless the process exited with 0.
    pub fn ok(self) -> Res<Out> {
        if self.success() {
            Ok(self)
        } else {
            Err(format!(
                "command failed with {:?}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
            .into())
        }
    }
}

/// Run the real `fieldsync` binary with `args`.
pub fn fieldsync(args: &[&dyn AsRef<OsStr>]) -> Res<Out> {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::null())
        .output()?;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run `fieldsync` and fail unless it exits with 0.
pub fn fieldsync_ok(args: &[&dyn AsRef<OsStr>]) -> Res<Out> {
    fieldsync(args)?.ok()
}

/// Run a program with `input` on its standard input.
pub fn run_with_input(mut cmd: Command, input: &str) -> Res<Out> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A number from a JSON object.
pub fn num(v: &Json, key: &str) -> Res<u64> {
    v.get(key)
        .and_then(Json::as_u64)
        .ok_or_else(|| format!("no number {key:?} in {v}").into())
}

/// A string from a JSON object.
pub fn text<'a>(v: &'a Json, key: &str) -> Res<&'a str> {
    v.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("no string {key:?} in {v}").into())
}

/// Check a failed command: the exit code, exactly one line on stderr starting
/// with `fieldsync: error:` and containing every needle (case-insensitive),
/// nothing on stdout, and no panic.
#[track_caller]
pub fn assert_error(out: &Out, code: i32, needles: &[&str]) {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        out.code,
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "panic: {}",
        out.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one stderr line, got:\n{}",
        out.stderr
    );
    assert!(
        lines[0].starts_with("fieldsync: error: "),
        "stderr line does not start with `fieldsync: error: `: {}",
        lines[0]
    );
    let lower = lines[0].to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "error line does not mention {n:?}: {}",
            lines[0]
        );
    }
    assert!(
        out.stdout.trim().is_empty(),
        "a failed command printed on stdout: {}",
        out.stdout
    );
}
