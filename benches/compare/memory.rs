//! Peak memory of the `fieldsync` command exporting and importing a large
//! bundle, measured by the kernel (the child's maximum resident set size),
//! next to the `sqlite3` shell dumping the same table.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::fixture::{Figure, Res, empty_instance, instance};

/// Run a command to completion; return its wall time and peak RSS in MiB.
fn peak(mut cmd: Command) -> Res<(f64, f64)> {
    let start = Instant::now();
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `usage` is plain data the kernel fills; `pid` is our child,
    // reaped here exactly once (the `Child` handle is not waited on).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if reaped != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{cmd:?} failed").into());
    }
    drop(child);
    // Linux reports ru_maxrss in KiB.
    Ok((secs, usage.ru_maxrss as f64 / 1024.0))
}

/// Export and import `n` rows through the CLI.
pub fn run(dir: &Path, n: usize) -> Res<Vec<Figure>> {
    println!("\npeak memory: {n} rows through the fieldsync command");
    let bin = env!("CARGO_BIN_EXE_fieldsync");
    let db = dir.join("big.db");
    drop(instance(&db, "big", n)?);
    let bundle = dir.join("big.bundle");
    let mut dump = Command::new("sh");
    dump.arg("-c")
        .arg(format!("exec sqlite3 '{}' '.dump person'", db.display()));
    let (_, dump_mib) = peak(dump)?;

    let mut export = Command::new(bin);
    export
        .args(["export", "--full", "-o"])
        .arg(&bundle)
        .arg("--db")
        .arg(&db);
    let (export_s, export_mib) = peak(export)?;

    let target = dir.join("big-import.db");
    drop(empty_instance(&target, "hq")?);
    let mut import = Command::new(bin);
    import.args(["import", "--db"]).arg(&target).arg(&bundle);
    let (import_s, import_mib) = peak(import)?;
    println!("(export {export_s:.1} s, import {import_s:.1} s)");

    let mut out = Vec::new();
    for (what, mib) in [("export", export_mib), ("import", import_mib)] {
        let fig = Figure {
            label: format!("peak RSS, {what} of {n} rows (vs sqlite3 .dump), MiB"),
            baseline: dump_mib,
            measured: mib,
            unit: "MiB",
            target: None,
        };
        fig.print();
        out.push(fig);
    }
    Ok(out)
}
