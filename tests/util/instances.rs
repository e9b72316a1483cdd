//! Instances driven through the library instead of the CLI: set up with a
//! schema, exporting to memory and importing from it. For tests where the
//! point is the engine (or a bundle crafted byte by byte), not the command.

use std::io::Cursor;
use std::path::Path;

use fieldsync::{ExportTarget, ImportReport, Instance, Selection};

use super::Res;

/// `init` an instance at `dir/NAME.db` with `schema`, every table tracked.
pub fn instance(dir: &Path, name: &str, schema: &str) -> Res<Instance> {
    let (mut inst, _) = Instance::init(dir.join(format!("{name}.db")), name)?;
    inst.connection().execute_batch(schema)?;
    inst.track(&Selection::All)?;
    Ok(inst)
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

/// Import a bundle held in memory.
pub fn import(i: &mut Instance, bundle: &[u8]) -> Result<ImportReport, fieldsync::Error> {
    i.import(Cursor::new(bundle))
}
