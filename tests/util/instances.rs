//! Instances driven through the library instead of the CLI: set up with a
//! schema, exporting to memory and importing from it. For tests where the
//! point is the engine (or a bundle crafted byte by byte), not the command.

use std::io::Cursor;
use std::path::Path;

use fieldsync::{ExportTarget, ImportReport, Instance, Selection};

use super::Res;

/// `init` an instance at `dir/NAME.db` with `schema`, every table tracked,
/// enrolled at every instance made before in `dir` and enrolling them (a
/// deployment whose HQ enrolled everyone).
pub fn instance(dir: &Path, name: &str, schema: &str) -> Res<Instance> {
    let (mut inst, _) = Instance::init(dir.join(format!("{name}.db")), name)?;
    inst.connection().execute_batch(schema)?;
    inst.track(&Selection::All)?;
    fieldsync::fuzzing::enrol_with_all_in(dir, &mut inst)?;
    Ok(inst)
}

/// If `bundle` was crafted by a test (signed by
/// [`fieldsync::fuzzing::key_for`] its sender), enrol that key at `i`
/// under the sender's name: the crafted bundle comes from an enrolled
/// instance gone bad, so what is tested is what lies beyond the signature.
/// Returns the key it enrolled, if it did.
pub fn enrol_if_crafted(i: &mut Instance, bundle: &[u8]) -> Res<Option<[u8; 32]>> {
    enrol_signer_if(i, bundle, true)
}

/// Enrol whoever signed `bundle` at `i`, under the name its header gives.
pub fn enrol_signer(i: &mut Instance, bundle: &[u8]) -> Res {
    enrol_signer_if(i, bundle, false).map(|_| ())
}

fn enrol_signer_if(i: &mut Instance, bundle: &[u8], crafted_only: bool) -> Res<Option<[u8; 32]>> {
    let Some((key, sender, _)) = fieldsync::fuzzing::bundle_signer(Cursor::new(bundle)) else {
        return Ok(None);
    };
    let crafted = fieldsync::fuzzing::key_for(&sender.id).verifying_key() == key;
    if (crafted || !crafted_only) && sender.id != i.site_id()? {
        let text = base64_key(key.as_bytes());
        let known = i.trusted()?.instances.iter().any(|t| t.public_key == text);
        // Enrolled by name and key only (no site id): a crafted bundle
        // claiming another instance's site id is still refused for it. A
        // name this instance refuses: the import then says so itself.
        if !known && i.enrol(&sender.name, &text, None, None).is_ok() {
            return Ok(Some(*key.as_bytes()));
        }
    }
    Ok(None)
}

fn base64_key(bytes: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A delta export for the peer `to`.
pub fn export_to(i: &mut Instance, to: &str) -> Res<Vec<u8>> {
    let mut b = Vec::new();
    i.export(
        &ExportTarget::Peer {
            to: to.into(),
            resend: false,
        },
        &mut b,
    )?;
    Ok(b)
}

/// A full export.
pub fn export_full(i: &mut Instance) -> Res<Vec<u8>> {
    let mut b = Vec::new();
    i.export(&ExportTarget::Full, &mut b)?;
    Ok(b)
}

/// Import a bundle held in memory (a bundle a test crafted is from an
/// enrolled sender: [`enrol_if_crafted`]).
///
/// The crafted sender's enrolment is the test's doing, not the import's: if
/// the import is refused it is taken back, so a test comparing the
/// database before and after sees only what the import did.
pub fn import(i: &mut Instance, bundle: &[u8]) -> Result<ImportReport, fieldsync::Error> {
    let enrolled = match enrol_if_crafted(i, bundle) {
        Ok(enrolled) => enrolled,
        Err(e) => panic!("cannot enrol the crafted sender: {e}"),
    };
    let result = i.import(Cursor::new(bundle));
    if let (Err(_), Some(key)) = (&result, enrolled) {
        if let Err(e) = i.connection().execute(
            "DELETE FROM fieldsync_pins WHERE public_key = ?1",
            [key.as_slice()],
        ) {
            panic!("cannot take back the crafted sender's enrolment: {e}");
        }
    }
    result
}
