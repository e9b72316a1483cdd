//! The cost of encryption to the recipient (spec/trust.md): a full export
//! of `n` rows for a laptop and the laptop's import of it, encrypted (what
//! `fieldsync export --full --for laptop` writes) against the same bundle
//! signed only (`--no-encrypt`); the bundle's growth in bytes, split into
//! the fixed part and the 16 bytes per 64 KiB chunk; and the signature's own
//! cost (one Ed25519 signature on export, two verifications on import),
//! which has no cheaper baseline in the writer: every bundle is signed, so
//! it is timed alone and compared with the export.
//!
//! Setup: HQ with `n` rows of the 8-column `person` table, tracked; a
//! laptop with the empty table, tracked, whose first bundle HQ imported (so
//! HQ knows its encryption key). Each import runs on a fresh copy of that
//! laptop.

use std::path::{Path, PathBuf};

use fieldsync::bundle::{SigningKey, VerifyingKey};
use fieldsync::{ExportOptions, ExportTarget, Instance, Overwrite};

use crate::fixture::{
    Figure, Res, empty_instance, enrol_each_other, instance, median, side_by_side, time,
};

/// The target on time: signing and encryption add at most 10%.
const TARGET: Option<f64> = Some(1.1);

fn copy(from: &Path, to: &Path) -> Res<()> {
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut p = to.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::copy(from, to)?;
    Ok(())
}

fn options(encrypt: bool) -> ExportOptions {
    ExportOptions {
        overwrite: Overwrite::Force,
        encrypt,
        ..ExportOptions::default()
    }
}

pub fn run(dir: &Path, n: usize, reps: usize) -> Res<Vec<Figure>> {
    println!("\nencryption to the recipient: full export and import of {n} rows");
    let mut hq = instance(&dir.join("encrypt-hq.db"), "hq", n)?;
    let laptop_path = dir.join("encrypt-laptop.db");
    {
        let mut laptop = empty_instance(&laptop_path, "laptop")?;
        // HQ enrolled the laptop, and the laptop knows HQ.
        enrol_each_other(&mut hq, &mut laptop)?;
        let first = dir.join("encrypt-first.bundle");
        laptop.export_to_file(
            &ExportTarget::Peer {
                to: "hq".into(),
                resend: false,
            },
            &first,
        )?;
        hq.import_file(&first)?;
    }
    let target = ExportTarget::FullFor {
        peers: vec!["laptop".into()],
    };
    let plain = dir.join("encrypt-plain.bundle");
    let sealed = dir.join("encrypt-sealed.bundle");
    let mut figures = Vec::new();
    let (mut plain_bytes, mut sealed_bytes) = (0u64, 0u64);
    figures.push(side_by_side(
        "full export, encrypted (vs signed only)",
        reps,
        TARGET,
        |ours| {
            let (out, opts) = if ours {
                (&sealed, options(true))
            } else {
                (&plain, options(false))
            };
            let mut bytes = 0;
            let t = time(|| {
                bytes = hq
                    .export_to_file_with(&target, out, &opts, &mut |_, _| {})?
                    .bytes;
                Ok(())
            })?;
            if ours {
                sealed_bytes = bytes;
            } else {
                plain_bytes = bytes;
            }
            Ok(t)
        },
    )?);
    let work = dir.join("encrypt-laptop-run.db");
    figures.push(side_by_side(
        "the laptop imports it, encrypted (vs signed only)",
        reps,
        TARGET,
        |ours| {
            copy(&laptop_path, &work)?;
            let mut laptop = Instance::open(&work)?;
            let file = if ours { &sealed } else { &plain };
            let mut applied = 0;
            let t = time(|| {
                applied = laptop.import_file(file)?.applied;
                Ok(())
            })?;
            if applied != n as u64 {
                return Err(format!("{applied} rows applied, not {n}").into());
            }
            Ok(t)
        },
    )?);
    // Reading alone, as import's passes do (verify, then decode every
    // record): what decryption costs without the database's writes.
    let reader = Instance::open(&laptop_path)?;
    figures.push(side_by_side(
        "reading it (verify + decode), encrypted (vs signed only)",
        reps,
        TARGET,
        |ours| {
            let file = if ours { &sealed } else { &plain };
            time(|| {
                let (info, _) = reader.inspect(std::fs::File::open(file)?)?;
                if !info.intact {
                    return Err("the bundle does not read".into());
                }
                Ok(())
            })
        },
    )?);
    // The envelope's parts, from the file itself: the preamble and outer
    // header, age's header (one stanza per recipient, the sender's own
    // included) and nonce, then 16 bytes of tag per 64 KiB chunk.
    let raw = std::fs::read(&sealed)?;
    let outer = 14 + u32::from_le_bytes(raw[10..14].try_into()?) as usize;
    let mac = (raw[outer..].windows(5))
        .position(|w| w == b"\n--- ")
        .ok_or("no age header")?;
    let age_header = mac
        + 1
        + (raw[outer + mac + 1..].iter())
            .position(|&b| b == b'\n')
            .ok_or("no end of the age header")?
        + 1;
    let payload = raw.len() - outer - age_header - 16;
    let chunks = payload.div_ceil((64 << 10) + 16);
    let plaintext = payload - 16 * chunks;
    println!(
        "envelope of a {plaintext}-byte signed bundle: {} bytes = outer header {outer} + age header {age_header} (2 recipients) + nonce 16 + 16 x {chunks} chunks (the same bundle --no-encrypt: {plain_bytes} bytes; file {sealed_bytes} bytes)",
        raw.len() - plaintext,
    );
    let fig = Figure {
        label: "its size, encrypted (vs signed only), MB".into(),
        baseline: plain_bytes as f64 / 1e6,
        measured: sealed_bytes as f64 / 1e6,
        unit: "MB",
        target: None,
    };
    fig.print();
    figures.push(fig);

    // The signature alone: what signing adds to any export, and verifying
    // (twice: the check pass and the apply pass) to any import.
    let key = SigningKey::from_bytes(&[7; 32]);
    let public: VerifyingKey = key.verifying_key();
    let message = [5u8; 94];
    let rounds = 2_000;
    let mut sign = Vec::new();
    let mut verify = Vec::new();
    for _ in 0..reps {
        sign.push(
            time(|| {
                for _ in 0..rounds {
                    std::hint::black_box(ed25519_dalek::Signer::sign(&key, &message));
                }
                Ok(())
            })? / rounds as f64,
        );
        let signature = ed25519_dalek::Signer::sign(&key, &message);
        verify.push(
            time(|| {
                for _ in 0..rounds {
                    std::hint::black_box(public.verify_strict(&message, &signature))?;
                }
                Ok(())
            })? / rounds as f64,
        );
    }
    let (sign, verify) = (median(sign), median(verify));
    let export = figures[0].baseline;
    let import = figures[1].baseline;
    println!(
        "one Ed25519 signature {:.1} µs ({:.5}% of the signed export), two verifications {:.1} µs ({:.5}% of the import)",
        sign * 1e6,
        100.0 * sign / export,
        2.0 * verify * 1e6,
        100.0 * 2.0 * verify / import
    );
    Ok(figures)
}
