//! The side-by-side comparison run: every figure fieldsync claims, measured
//! in one process run against its baseline (SQLite doing the same work
//! directly), interleaved, median of several repetitions, printed as a
//! table of ratios. BENCHMARKS.md holds a run of it.
//!
//! Run: `cargo bench --bench compare`
//! Scale (defaults in brackets): `FIELDSYNC_BENCH_N` rows for capture [50000],
//! `FIELDSYNC_BENCH_TRANSFER` rows for export/import [200000],
//! `FIELDSYNC_BENCH_SMALL`/`_LARGE` for the delta export [2000/200000],
//! `FIELDSYNC_BENCH_BUNDLES` x `FIELDSYNC_BENCH_PER` for many bundles
//! [100 x 10000], `FIELDSYNC_BENCH_RSS` rows for peak memory [1000000],
//! `FIELDSYNC_BENCH_REFS` child rows for integer vs text keys [200000],
//! `FIELDSYNC_BENCH_LOCKS` rows imported / exported while an app writes
//! [1000000], `FIELDSYNC_BENCH_SCHEMA` rows in the table a delta export
//! follows a schema change of [100000],
//! `FIELDSYNC_BENCH_REPS` repetitions [5; 3 for the large runs],
//! `FIELDSYNC_BENCH_ONLY` = a comma-separated list of parts: capture,
//! capture-int (the capture figures on an `INTEGER PRIMARY KEY` table),
//! fold (folding captured inserts into the log, integer vs text keys),
//! transfer, intkeys (import/export of integer vs text keys with
//! references), delta, many, memory, locks (an app's writes, through the
//! sqlite3 shell and Python, while fieldsync imports and exports: the app's
//! errors and waits, fieldsync's longest write transaction), schema (a
//! delta export after `ALTER TABLE … ADD COLUMN`, already followed or not,
//! vs one without a schema change; the receiver's import of it), encrypt
//! (a full export for a laptop and its import, encrypted vs signed only,
//! `FIELDSYNC_BENCH_TRANSFER` rows; the bundle's growth; the signature's
//! own cost), network (issue 14, on loopback: a delta of
//! `FIELDSYNC_BENCH_NET_ROWS` changes [20000] by `push` / `sync` / `pull`
//! against a running `fieldsync serve` vs `export` + `import` of it by file;
//! then the load run, `FIELDSYNC_BENCH_NET_CLIENTS` field instances [50] x
//! `FIELDSYNC_BENCH_NET_SYNCS` syncs [20], each writing
//! `FIELDSYNC_BENCH_NET_CHANGES` rows [200] before each sync: throughput,
//! latency, the server's peak RSS, and the check that every instance ends
//! identical to HQ; `FIELDSYNC_BENCH_NET_RPM` sets the server's
//! `--max-requests-per-minute` [its default]).

mod capture;
mod encrypt;
mod fixture;
mod intkeys;
mod locks;
mod memory;
mod network;
mod schema;
mod transfer;

use fixture::{Res, env_usize, header};

fn main() -> Res<()> {
    if std::env::var_os(memory::LAUNCH).is_some() {
        memory::launch(std::env::args_os().skip(1).collect());
    }
    let reps = env_usize("FIELDSYNC_BENCH_REPS", 5).max(1);
    let large_reps = env_usize("FIELDSYNC_BENCH_REPS", 3).max(1);
    let only = std::env::var("FIELDSYNC_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    let dir = tempfile::tempdir()?;
    let shell = std::process::Command::new("sqlite3")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_owned()
        });
    println!(
        "fieldsync comparison run: SQLite {} (bundled), sqlite3 shell {}, {} CPUs; medians of {reps} runs ({large_reps} for large ones)",
        rusqlite::version(),
        shell.as_deref().unwrap_or("not found"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    header();
    let mut figures = Vec::new();
    if wanted("capture") {
        figures.extend(capture::run(
            dir.path(),
            capture::Keys::Text,
            env_usize("FIELDSYNC_BENCH_N", 50_000),
            reps,
        )?);
    }
    if wanted("capture-int") {
        figures.extend(capture::run(
            dir.path(),
            capture::Keys::Int,
            env_usize("FIELDSYNC_BENCH_N", 50_000),
            reps,
        )?);
    }
    if wanted("fold") {
        figures.push(capture::fold(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_N", 50_000),
            reps,
        )?);
    }
    if wanted("transfer") {
        figures.extend(transfer::run(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_TRANSFER", 200_000),
            large_reps,
        )?);
    }
    if wanted("intkeys") {
        figures.extend(intkeys::run(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_REFS", 200_000),
            large_reps,
        )?);
    }
    if wanted("delta") {
        figures.push(transfer::delta_export(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_SMALL", 2_000),
            env_usize("FIELDSYNC_BENCH_LARGE", 200_000),
            reps,
        )?);
    }
    if wanted("many") {
        figures.push(transfer::many_bundles(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_BUNDLES", 100),
            env_usize("FIELDSYNC_BENCH_PER", 10_000),
            large_reps,
        )?);
    }
    if wanted("memory") {
        figures.extend(memory::run(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_RSS", 1_000_000),
        )?);
    }
    if wanted("locks") {
        figures.extend(locks::run(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_LOCKS", 1_000_000),
            large_reps,
        )?);
    }
    if wanted("schema") {
        figures.extend(schema::run(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_SCHEMA", 100_000),
            reps,
        )?);
    }
    if wanted("encrypt") {
        figures.extend(encrypt::run(
            dir.path(),
            env_usize("FIELDSYNC_BENCH_TRANSFER", 200_000),
            large_reps,
        )?);
    }
    if wanted("network") {
        let per_minute = env_usize("FIELDSYNC_BENCH_NET_RPM", 0);
        figures.extend(network::run(
            dir.path(),
            &network::Sizes {
                rows: env_usize("FIELDSYNC_BENCH_NET_ROWS", 20_000),
                clients: env_usize("FIELDSYNC_BENCH_NET_CLIENTS", 50).max(1),
                syncs: env_usize("FIELDSYNC_BENCH_NET_SYNCS", 20).max(1),
                per_sync: env_usize("FIELDSYNC_BENCH_NET_CHANGES", 200).max(1),
                per_minute: (per_minute > 0).then(|| u32::try_from(per_minute).unwrap_or(u32::MAX)),
            },
            reps,
        )?);
    }
    println!("\nsummary");
    header();
    for f in &figures {
        f.print();
    }
    Ok(())
}
