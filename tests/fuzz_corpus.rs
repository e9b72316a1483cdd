//! Replays the fuzz inputs on stable Rust, so CI exercises every input kept
//! in git without cargo-fuzz: each file under `fuzz/seed/<target>/` goes
//! through the same body as the fuzz target `<target>`
//! ([`fieldsync::fuzzing`]). Those are the seed inputs and every input that
//! once found a bug (named `crash-*`, each with a regression test). Where
//! the fuzzers have run, their working corpus (`fuzz/corpus/<target>/`, out
//! of git) and any crash they wrote (`fuzz/artifacts/<target>/`) are
//! replayed too.
//!
//! The seed inputs were written by the ignored test below, which builds the
//! instances with the real engine:
//!
//! ```sh
//! cargo test --test tests fuzz_corpus::generate_seed_corpus -- --ignored
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use fieldsync::fuzzing::{self, ImportTarget, Outcome};

use crate::util::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The targets, as named in fuzz/Cargo.toml.
const TARGETS: [&str; 5] = [
    "decode_bundle",
    "decode_sealed",
    "import_mutated",
    "decode_envelope",
    "check_request",
];

/// Every input of a target: the committed seeds and, where present, the
/// local working corpus and crash artifacts.
fn inputs(target: &str) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    for kind in ["seed", "corpus", "artifacts"] {
        let dir = fuzz_dir().join(kind).join(target);
        if !dir.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn seed_sql() -> Res<String> {
    Ok(fs::read_to_string(fuzz_dir().join("seed/field-1.sql"))?)
}

#[test]
fn decode_corpora_replay_without_panics() -> Res {
    let mut n = 0;
    for target in ["decode_bundle", "decode_sealed", "decode_envelope"] {
        let files = inputs(target)?;
        assert!(!files.is_empty(), "no inputs for {target}");
        for f in files {
            let data = fs::read(&f)?;
            // A panic names the file through the test's output.
            eprintln!("{target}: {}", f.display());
            match target {
                "decode_bundle" => fuzzing::decode_bundle(&data),
                "decode_envelope" => fuzzing::decode_envelope(&data),
                _ => fuzzing::decode_sealed(&data),
            }
            n += 1;
        }
    }
    eprintln!("{n} decoder inputs replayed");
    Ok(())
}

#[test]
fn request_corpus_replays_without_panics() -> Res {
    let files = inputs("check_request")?;
    assert!(!files.is_empty(), "no inputs for check_request");
    for f in &files {
        eprintln!("check_request: {}", f.display());
        fuzzing::check_request(&fs::read(f)?);
    }
    // Seeds made now are signed now: they pass the checks, and a replay of
    // each is refused (check_request asserts both).
    for seed in fuzzing::request_seeds() {
        fuzzing::check_request(&seed);
    }
    Ok(())
}

#[test]
fn import_corpus_replays_clean() -> Res {
    let dir = tempfile::tempdir()?;
    let target = ImportTarget::new(dir.path(), &seed_sql()?)?;
    let files = inputs("import_mutated")?;
    assert!(!files.is_empty(), "no inputs for import_mutated");
    let (mut applied, mut rejected) = (0, 0);
    for f in files {
        let data = fs::read(&f)?;
        let outcome = fuzzing::import_mutated(&target, &data);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("seed-") {
            assert!(
                matches!(outcome, Outcome::Applied(_)),
                "the real bundle {name} does not import: {outcome:?}"
            );
        }
        match outcome {
            Outcome::Applied(_) => applied += 1,
            Outcome::Rejected(_) => rejected += 1,
        }
    }
    eprintln!("import_mutated: {applied} applied, {rejected} rejected");
    Ok(())
}

#[test]
#[ignore = "rewrites fuzz/seed (the seed database and inputs); run when the format or engine tables change"]
fn generate_seed_corpus() -> Res {
    let dir = tempfile::tempdir()?;
    let generated = fuzzing::generate(dir.path())?;
    let seed = fuzz_dir().join("seed");
    fs::create_dir_all(&seed)?;
    let dump = sqlite3(&generated.seed_db, ".dump")?;
    fs::write(seed.join("field-1.sql"), dump)?;
    for target in TARGETS {
        let out = seed.join(target);
        fs::create_dir_all(&out)?;
        if target == "decode_envelope" {
            for (name, bytes) in &generated.bundles {
                fs::write(out.join(format!("seed-{name}.fse")), sealed(bytes)?)?;
            }
            continue;
        }
        for (name, bytes) in &generated.bundles {
            if target == "import_mutated" {
                fs::write(
                    out.join(format!("seed-{name}.open")),
                    fuzzing::open(&fuzzing::without_sender_statement(bytes)?)?,
                )?;
            } else {
                fs::write(out.join(format!("seed-{name}.fsb")), bytes)?;
            }
        }
        if target != "import_mutated" {
            let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden-v1.bundle");
            fs::copy(golden, out.join("seed-golden-v1.fsb"))?;
        }
    }
    Ok(())
}

/// A signed bundle in an envelope to the harness's identity, its outer
/// header naming the bundle's own sender.
fn sealed(bundle: &[u8]) -> Res<Vec<u8>> {
    let header = fieldsync::bundle::reader::read_header_only(&mut std::io::Cursor::new(bundle))?;
    Ok(fuzzing::seal_for_fuzz(bundle, &header.sender)?)
}

#[test]
#[ignore = "writes fuzz/seed/decode_envelope from the committed decode_bundle seeds"]
fn generate_envelope_seeds() -> Res {
    let out = fuzz_dir().join("seed/decode_envelope");
    fs::create_dir_all(&out)?;
    for f in inputs("decode_bundle")? {
        let name = f.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.starts_with("seed-") || name.contains("golden-v1") {
            continue;
        }
        let bundle = fs::read(&f)?;
        fs::write(out.join(format!("{name}.fse")), sealed(&bundle)?)?;
    }
    // One whose outer header names another sender than the bundle inside.
    let hq = fs::read(fuzz_dir().join("seed/decode_bundle/seed-hq-delta.fsb"))?;
    fs::write(
        out.join("seed-outer-mismatch.fse"),
        fuzzing::seal_for_fuzz(&hq, &fuzzing::fuzz_recipient_site())?,
    )?;
    Ok(())
}

#[test]
#[ignore = "writes fuzz/seed/check_request: requests signed as the client signs them"]
fn generate_request_seeds() -> Res {
    let out = fuzz_dir().join("seed/check_request");
    fs::create_dir_all(&out)?;
    for (i, seed) in fuzzing::request_seeds().into_iter().enumerate() {
        fs::write(out.join(format!("seed-{i}.req")), seed)?;
    }
    Ok(())
}
