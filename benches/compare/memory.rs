//! Peak memory of the `fieldsync` command exporting and importing a large
//! bundle, measured by the kernel (the child's maximum resident set size),
//! next to the `sqlite3` shell dumping the same table.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::fixture::{Figure, Res, empty_instance, instance};

/// The environment variable that turns this program into a launcher.
pub const LAUNCH: &str = "FIELDSYNC_BENCH_LAUNCH";

/// A child shares its parent's memory until it runs the new program, and
/// the kernel counts that in the child's peak; so the command is started
/// by a fresh, small copy of this program (see [`launch`]), whose own
/// memory is a few MiB, and that copy reports the peak.
fn peak(cmd: &[&std::ffi::OsStr]) -> Res<(f64, f64)> {
    let out = Command::new(std::env::current_exe()?)
        .env(LAUNCH, "1")
        .args(cmd)
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    match (
        parts.next().map(str::parse::<f64>),
        parts.next().map(str::parse::<f64>),
    ) {
        (Some(Ok(secs)), Some(Ok(kib))) if out.status.success() => Ok((secs, kib / 1024.0)),
        _ => Err(format!("measuring {cmd:?} failed: {text}").into()),
    }
}

/// Launcher mode: run the command given as arguments, print its wall time
/// in seconds and its peak RSS in KiB, and exit with its status.
pub fn launch(args: Vec<std::ffi::OsString>) -> ! {
    let Some((program, rest)) = args.split_first() else {
        std::process::exit(2);
    };
    let start = Instant::now();
    let child = match Command::new(program)
        .args(rest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => std::process::exit(3),
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `usage` is plain data the kernel fills; `pid` is our child,
    // reaped here exactly once (the `Child` handle is never waited on).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    drop(child);
    if reaped != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        std::process::exit(1);
    }
    // Linux reports ru_maxrss in KiB.
    println!("{secs} {}", usage.ru_maxrss);
    std::process::exit(0);
}

/// Export and import `n` rows through the CLI.
pub fn run(dir: &Path, n: usize) -> Res<Vec<Figure>> {
    println!("\npeak memory: {n} rows through the fieldsync command");
    let bin = env!("CARGO_BIN_EXE_fieldsync");
    let db = dir.join("big.db");
    drop(instance(&db, "big", n)?);
    let bundle = dir.join("big.bundle");
    let os = std::ffi::OsStr::new;
    let (_, dump_mib) = peak(&[os("sqlite3"), db.as_os_str(), os(".dump person")])?;
    let (export_s, export_mib) = peak(&[
        os(bin),
        os("export"),
        os("--full"),
        os("--no-encrypt"),
        os("-o"),
        bundle.as_os_str(),
        os("--db"),
        db.as_os_str(),
    ])?;
    let target = dir.join("big-import.db");
    {
        // The target enrolled the source, as HQ enrols its laptops.
        let mut inst = empty_instance(&target, "hq")?;
        crate::fixture::enrol_signer(&mut inst, &bundle)?;
    }
    let (import_s, import_mib) = peak(&[
        os(bin),
        os("import"),
        os("--db"),
        target.as_os_str(),
        bundle.as_os_str(),
    ])?;
    println!("(export {export_s:.1} s, import {import_s:.1} s)");

    let mut out = Vec::new();
    for (what, mib) in [("export", export_mib), ("import", import_mib)] {
        let fig = Figure {
            label: format!("peak RSS, {what} of {n} rows (vs sqlite3 .dump), MiB"),
            baseline: dump_mib,
            measured: mib,
            unit: "MiB",
            target: Some(64.0),
        };
        fig.print();
        out.push(fig);
    }
    Ok(out)
}
