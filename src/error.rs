//! The errors fieldsync reports: one type and its families.
//!
//! The story, chosen openly: there is **one error type**, [`Error`], and every
//! fallible operation returns it ([`Result`]). Its variants are *families*,
//! one per kind of operation ([`SiteError`] opening and init, [`TrackError`],
//! [`BundleError`] the file format, [`ExportError`], [`ImportError`],
//! [`SetupError`] `init --from`, [`CheckError`], and [`ClockError`], which
//! lives with the clock at the bottom of the engine), plus the
//! storage conditions every operation can meet ([`Error::Busy`],
//! [`Error::Sqlite`], [`Error::Io`]). A caller that cares about one
//! condition matches `Error::Import(ImportError::FromSelf { .. })`; one that
//! does not prints it. Inside the engine, a function may return a family
//! when that is all it can fail with, and `?` lifts it into [`Error`].
//! Conditions of the domain always get a variant of their own: an
//! [`io::Error`] is only ever a real I/O failure.
//!
//! Every message is a sentence a field officer can act on: it names the
//! database, file, table or column at fault and, where there is one, says
//! what to do. The CLI prints the message on one line.

use std::io;
use std::path::PathBuf;

pub use crate::base::hlc::ClockError;

/// A database that fails the consistency check (`fieldsync check`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// At least one invariant is broken.
    #[error(
        "database {} fails fieldsync's consistency check with {}; the first: {first}",
        path.display(),
        crate::error::count(*count, "problem", "problems")
    )]
    Inconsistent {
        /// The database.
        path: PathBuf,
        /// Problems found.
        count: u64,
        /// The first one, as a sentence.
        first: String,
    },
}

/// Opening or initialising an instance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    /// The database file does not exist.
    #[error("database {} does not exist; check the path, or create it with `fieldsync init --db {} --name NAME`", path.display(), path.display())]
    DatabaseMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The file exists but is not an SQLite database.
    #[error("{} is not an SQLite database; --db takes the app's database file (a bundle? `fieldsync inspect {}` shows what it holds)", path.display(), path.display())]
    NotADatabase {
        /// The path given.
        path: PathBuf,
    },
    /// The database has no fieldsync tables yet.
    #[error("database {} is not set up for fieldsync yet; run `fieldsync init --db {} --name NAME` first", path.display(), path.display())]
    NotInitialized {
        /// The path given.
        path: PathBuf,
    },
    /// `init` was run again with a different name.
    #[error("database {} is already initialised as instance '{existing}'; it cannot be renamed to '{requested}'", path.display())]
    NameMismatch {
        /// The path given.
        path: PathBuf,
        /// The name stored in the database.
        existing: String,
        /// The name asked for.
        requested: String,
    },
    /// The instance name is not usable.
    #[error("instance name {name:?} is not allowed: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// The engine tables were written by a newer fieldsync.
    #[error("database {} was set up by a newer fieldsync (engine schema {found}, this one knows {supported}); upgrade fieldsync", path.display())]
    NewerEngine {
        /// The path given.
        path: PathBuf,
        /// Schema version found.
        found: i64,
        /// Schema version this build writes.
        supported: i64,
    },
    /// The engine tables are damaged (a value is missing or malformed).
    #[error("the fieldsync tables in this database are damaged: {detail}")]
    Damaged {
        /// What is wrong.
        detail: String,
    },
    /// This instance's key pairs are missing or do not fit together.
    #[error(
        "this instance's keys are damaged ({detail}); restore the database from a backup, or set up a new instance with `fieldsync init` and have HQ enrol its key"
    )]
    KeyDamaged {
        /// What is wrong.
        detail: String,
    },
    /// The operating system gave no random numbers for a new key.
    #[error(
        "the operating system gave no random numbers for this instance's keys ({detail}); the database was not set up or upgraded, try again"
    )]
    NoRandomness {
        /// The operating system's error.
        detail: String,
    },
}

/// Choosing and introspecting tables to track.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// No such table.
    #[error("table '{table}' does not exist in this database")]
    NoSuchTable {
        /// The table named.
        table: String,
    },
    /// A view or virtual table.
    #[error("'{table}' is a {kind}, not an ordinary table; only ordinary tables can be tracked")]
    NotATable {
        /// The object named.
        table: String,
        /// view, virtual table, …
        kind: String,
    },
    /// fieldsync's own tables are never tracked.
    #[error("'{table}' is one of fieldsync's own tables and cannot be tracked")]
    EngineTable {
        /// The table named.
        table: String,
    },
    /// An app table named with fieldsync's prefix.
    #[error(
        "table '{table}' cannot be tracked: names starting with fieldsync_ are kept for fieldsync's own tables; rename the table to track it"
    )]
    ReservedName {
        /// The table named.
        table: String,
    },
    /// A WITHOUT ROWID table without a key (SQLite does not allow one).
    #[error("table '{table}' has no PRIMARY KEY and no rowid")]
    NoPrimaryKey {
        /// The table named.
        table: String,
    },
    /// A table without a key whose columns are named rowid, _rowid_ and oid.
    #[error(
        "table '{table}' has no primary key and columns named rowid, _rowid_ and oid, so its rows cannot be told apart; give it a primary key or rename one of those columns"
    )]
    RowidShadowed {
        /// The table named.
        table: String,
    },
    /// `--local-key` on a table whose key has several columns.
    #[error(
        "table '{table}' has a composite key ({}); --local-key needs a key of one integer column, so track it without --local-key (its key values are then the same on every instance)",
        columns.join(", ")
    )]
    CompositeLocalKey {
        /// The table named.
        table: String,
        /// Its key columns.
        columns: Vec<String>,
    },
    /// `--local-key` on a key that is not an integer.
    #[error(
        "the key '{column}' of table '{table}' is not an integer column, so it is not a number the app assigns locally; track it without --local-key"
    )]
    LocalKeyNotInteger {
        /// The table named.
        table: String,
        /// The key column.
        column: String,
    },
    /// `--identity COL` names a column that is not UNIQUE NOT NULL.
    #[error(
        "column '{column}' of table '{table}' cannot identify rows: it must be NOT NULL and have a UNIQUE index of its own (compared byte for byte); track the table without --identity, or add the constraint in the app"
    )]
    IdentityNotUnique {
        /// The table named.
        table: String,
        /// The column named.
        column: String,
    },
    /// More than 2^32 identical rows in a table without a key.
    #[error("table '{table}' holds more identical rows than fieldsync can tell apart")]
    TooManyCopies {
        /// The table named.
        table: String,
    },
    /// The table is already tracked with another identity than asked for.
    #[error(
        "table '{table}' is already tracked with rows identified {current}; it cannot change to {requested} (a changed identity would make every row a new one on the other instances)"
    )]
    IdentityChange {
        /// The table named.
        table: String,
        /// How it is tracked.
        current: String,
        /// What was asked.
        requested: String,
    },
    /// A key column compares with a collation other than BINARY.
    #[error(
        "key column '{column}' of table '{table}' uses COLLATE {collation}; fieldsync needs keys that compare byte for byte"
    )]
    KeyCollation {
        /// The table named.
        table: String,
        /// The key column.
        column: String,
        /// Its collation.
        collation: String,
    },
    /// The table changed shape since it was tracked.
    #[error(
        "table '{table}' changed since it was tracked ({detail}); run `fieldsync track --db {db} {table}` to follow the change"
    )]
    SchemaChanged {
        /// The database, as to type it in a shell.
        db: String,
        /// The table named.
        table: String,
        /// What changed.
        detail: String,
    },
    /// The key of a tracked table changed.
    #[error(
        "the key of table '{table}' changed from ({was}) to ({now}); other instances find its rows by that key, so \
         fieldsync cannot follow the change: put the key back as it was in {db} (rebuild the table with the old \
         key, keeping the new columns), then run the command again"
    )]
    KeyChanged {
        /// The database, as to type it in a shell.
        db: String,
        /// The table named.
        table: String,
        /// The key as tracked.
        was: String,
        /// The key now.
        now: String,
    },
    /// A column was removed or its key membership changed: fieldsync cannot follow.
    #[error("table '{table}' changed in a way fieldsync cannot follow ({detail})")]
    IncompatibleChange {
        /// The table named.
        table: String,
        /// What changed.
        detail: String,
    },
    /// `track` without tables.
    #[error("name the tables to track, or pass --all")]
    NothingNamed,
    /// `track --all` found nothing it could track.
    #[error("no table was tracked: {detail}")]
    NothingTracked {
        /// Why, table by table, and what to do.
        detail: String,
    },
    /// A capture trigger's name is held by a trigger fieldsync did not
    /// make (names starting with `fieldsync_` are fieldsync's).
    #[error(
        "the capture trigger '{trigger}' of table '{table}' cannot be installed: table '{owner}' has a trigger of that name that fieldsync did not make; rename or drop that trigger (names starting with fieldsync_ are fieldsync's)"
    )]
    TriggerNameTaken {
        /// The table being tracked.
        table: String,
        /// The trigger name.
        trigger: String,
        /// The table the trigger of that name is on.
        owner: String,
    },
    /// A table named by the console's Data page (or a library caller) is
    /// not tracked.
    #[error("table '{table}' is not tracked here; `fieldsync status` lists the tracked tables")]
    NotTracked {
        /// The table named.
        table: String,
    },
}

/// Reading or writing the bundle file format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Wrong magic bytes.
    #[error("the file is not a fieldsync bundle (it does not start with the bundle signature)")]
    NotABundle,
    /// Mangled line endings: the file went through a text-mode transfer.
    #[error(
        "the file was damaged by a text-mode transfer (line endings were converted); send it again as a binary attachment"
    )]
    LineEndingsMangled,
    /// A format version this build does not read.
    #[error(
        "the bundle uses format version {found}, newer than this fieldsync reads ({supported}); upgrade fieldsync"
    )]
    NewerFormat {
        /// Version in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The file ends early.
    #[error("the bundle is truncated (the file ends early; it was probably not copied completely)")]
    Truncated,
    /// The checksum does not match the content.
    #[error(
        "the bundle is corrupt (its checksum does not match its content); copy it again from the sender"
    )]
    ChecksumMismatch,
    /// The signature of a version-4 bundle does not hold.
    #[error(
        "refused: the bundle's signature does not match its content (it was altered after it was signed, damaged or not copied completely); do not import it, ask the sender for a new one and check the sender's fingerprint with HQ (`fieldsync key` on both sides)"
    )]
    SignatureInvalid,
    /// The content does not decode.
    #[error("the bundle is corrupt or malformed: {detail}")]
    Malformed {
        /// What could not be decoded.
        detail: String,
    },
    /// `--max-size` below what a part needs.
    #[error(
        "--max-size {max_size} is too small: each part needs at least {min} bytes (64 KiB); e-mail limits are usually 10MB to 25MB"
    )]
    PartTooSmall {
        /// The size asked for.
        max_size: u64,
        /// The smallest allowed.
        min: u64,
    },
    /// A bundle would need more parts than a set may have.
    #[error("the bundle would need {count} parts (at most {max}); give a larger --max-size")]
    TooManyParts {
        /// Parts needed.
        count: u64,
        /// The most allowed.
        max: u32,
    },
    /// A part of a split bundle that does not hold together.
    #[error(
        "{} is a damaged part of a split bundle: {detail}", file.display()
    )]
    DamagedPart {
        /// The part file.
        file: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Two parts that claim the same place in one bundle but differ.
    #[error(
        "{} is part {index} of bundle {set}, but a different part {index} of that bundle was received before: one of them is forged; ask the sender for the parts again, and remove the parts kept of it (in the .fieldsync-parts directory beside the database) if they keep clashing",
        file.display()
    )]
    PartConflicts {
        /// The part file.
        file: PathBuf,
        /// The bundle (short id).
        set: String,
        /// The part's number.
        index: u32,
    },
    /// Every part is here, but together they are not the bundle they name.
    #[error(
        "the {count} parts of bundle {set} ({name}) do not make the bundle they name (its BLAKE3 or size differs): one was forged or damaged before it was cut; the parts kept of it were removed: ask the sender for the parts again"
    )]
    PartsDoNotJoin {
        /// The bundle (short id).
        set: String,
        /// Its file name when cut.
        name: String,
        /// Parts.
        count: u32,
    },
    /// A part given where a whole bundle is needed.
    #[error(
        "this is one part of a split bundle; `fieldsync import` takes the parts, in any order and over several runs, and applies the bundle once all are there"
    )]
    IsPart,
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writing a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A peer name matches several instances.
    #[error(
        "more than one known instance is called '{name}' (site ids {sites}); pass the site id to --to instead"
    )]
    AmbiguousPeer {
        /// The name given.
        name: String,
        /// The candidates.
        sites: String,
    },
    /// The peer is this instance.
    #[error(
        "'{name}' is this instance itself; export --to names the instance that will import the bundle"
    )]
    PeerIsSelf {
        /// The name given.
        name: String,
    },
    /// The peer name is not usable.
    #[error("peer name {name:?} is not allowed: {reason}")]
    InvalidPeer {
        /// The name given.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// Nothing is tracked.
    #[error("no tables are tracked yet; run `fieldsync track --db {db} --all` first")]
    NothingTracked {
        /// The database, as to type it in a shell.
        db: String,
    },
    /// The output file named is the database itself.
    #[error("{} is the database itself; choose another output file", path.display())]
    OutputIsDatabase {
        /// The output path given.
        path: PathBuf,
    },
    /// The output file named is a directory.
    #[error("{} is a directory; give the bundle a file name", path.display())]
    OutputIsDirectory {
        /// The output path given.
        path: PathBuf,
    },
    /// The output path names a device, a pipe or a socket.
    #[error(
        "{} is not a regular file; export writes a bundle file (give a file name such as to-hq.bundle)",
        path.display()
    )]
    OutputNotAFile {
        /// The output path given.
        path: PathBuf,
    },
    /// The bundle was written and committed but could not take its name.
    #[error(
        "the bundle was written to {} but could not be renamed to {} ({source}); rename it by hand",
        written.display(),
        path.display()
    )]
    NotRenamed {
        /// Where the bundle is.
        written: PathBuf,
        /// The name it was to have.
        path: PathBuf,
        /// Why the rename failed.
        source: io::Error,
    },
    /// The output file is a bundle holding changes its recipient has not
    /// acknowledged: overwriting it could lose them.
    #[error(
        "{} holds {} {who} has not acknowledged ({numbers}); write to another file with -o, or pass --force to overwrite it{after}",
        path.display(),
        crate::error::count(*count, "change number", "change numbers")
    )]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
        /// Who has not acknowledged them (`'hq'`, `this instance`, …).
        who: String,
        /// How many change numbers.
        count: u64,
        /// Which, per origin (`field-1 5-7`).
        numbers: String,
        /// What `--force` would then do, as a clause starting with `; `,
        /// or empty.
        after: String,
    },
    /// The output file looks like a bundle whose header cannot be read, so
    /// what it holds is unknown.
    #[error(
        "{} looks like a bundle but its header cannot be read ({reason}), so it may hold changes not delivered yet; write to another file with -o, or pass --force to overwrite it",
        path.display()
    )]
    OverwriteUnreadable {
        /// The existing file.
        path: PathBuf,
        /// Why its header cannot be read.
        reason: String,
    },
    /// The change log refers to a row the app table does not have.
    #[error(
        "table '{table}' has lost row {key} that the change log still records; run `fieldsync compact` and try again"
    )]
    RowVanished {
        /// The table.
        table: String,
        /// The key, as SQL literals.
        key: String,
    },
}

/// Setting up a new instance from a full bundle (`init --from`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The bundle is a delta, which cannot set up an instance.
    #[error(
        "{path} is not a full export, so it cannot set up a new instance; ask the sender for one made with `fieldsync export --full`"
    )]
    NotFull {
        /// The bundle.
        path: PathBuf,
    },
    /// A table in the bundle comes without its schema (an older build).
    #[error(
        "the bundle does not carry the schema of table '{table}' (it was made by an older fieldsync); create the tables yourself, run `fieldsync init` and `fieldsync track`, then `fieldsync import` the bundle"
    )]
    NoSchema {
        /// The table.
        table: String,
    },
    /// A schema statement in the bundle is not allowed.
    #[error("the bundle's schema for table '{table}' was refused, nothing was changed: {detail}")]
    SchemaRefused {
        /// The table.
        table: String,
        /// Why.
        detail: String,
    },
    /// A local table or view in the bundle is not allowed.
    #[error(
        "the bundle's {kind} '{name}' was refused, nothing was changed: {detail}; a full export made by `fieldsync export --full` never carries this, so ask the sender for a new one"
    )]
    ObjectRefused {
        /// "local table" or "view".
        kind: &'static str,
        /// Its name.
        name: String,
        /// Why.
        detail: String,
    },
    /// The database already has an object named like a table or view the
    /// bundle would create.
    #[error(
        "{path} already has {kind} named '{name}', which the bundle would create; `init --from` sets up a new database: give a new file name"
    )]
    NameTaken {
        /// The database.
        path: PathBuf,
        /// What it has there ("a view", "an index", "a table").
        kind: String,
        /// The name.
        name: String,
    },
    /// The database already has a table the bundle would create.
    #[error(
        "{path} already has a table named '{table}'; `init --from` sets up a new database: give a new file name, or to merge into this one run `fieldsync init` and `fieldsync track`, then `fieldsync import` the bundle"
    )]
    TableExists {
        /// The database.
        path: PathBuf,
        /// The table.
        table: String,
    },
    /// The database is already a fieldsync instance.
    #[error(
        "{path} is already set up as instance '{name}'; `fieldsync import` the bundle into it instead"
    )]
    AlreadySetUp {
        /// The database.
        path: PathBuf,
        /// Its instance name.
        name: String,
    },
}

/// Applying a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The bundle came from this instance.
    #[error("this bundle was exported by this instance ('{name}'); import it on another instance")]
    FromSelf {
        /// This instance's name.
        name: String,
    },
    /// A table in the bundle is not tracked here.
    #[error("the bundle carries table '{table}', which {reason}")]
    UnknownTable {
        /// The table.
        table: String,
        /// Why it cannot be applied.
        reason: String,
    },
    /// Columns differ.
    #[error("table '{table}' does not match the bundle: column '{column}' {detail}")]
    SchemaMismatch {
        /// The table.
        table: String,
        /// The column at fault.
        column: String,
        /// How it differs.
        detail: String,
    },
    /// The sender identifies a table's rows otherwise than this instance.
    #[error(
        "table '{table}' identifies its rows by {theirs} at the sender but by {ours} here, so its rows cannot be matched; track it the same way on every instance (the simplest: set the laptop up with `fieldsync init --from` a full export of HQ)"
    )]
    IdentityMismatch {
        /// The table.
        table: String,
        /// At the sender: key, column, origin or content.
        theirs: String,
        /// Here (or "untracked").
        ours: String,
    },
    /// A column holding local numbers of another table arrives as plain values.
    #[error(
        "column '{column}' of table '{table}' refers here to rows of '{parent}' by their local numbers, but the sender sends its values as they are (it does not track '{parent}' the same way), so they would name other rows; track '{parent}' the same way on every instance (the simplest: set the laptop up with `fieldsync init --from` a full export of HQ)"
    )]
    ReferenceNotTranslated {
        /// The table.
        table: String,
        /// Its column.
        column: String,
        /// The table it refers to.
        parent: String,
    },
    /// The bundle would hold more of its sender's changes in quarantine
    /// than the bound allows (spec/quarantine.md).
    #[error(
        "refused: this bundle from '{sender}' would leave {held} of its changes held in quarantine, more than the limit of {limit} per sender; {kept}. `fieldsync conflicts --db {db}` lists why changes are refused: fix the cause at the sender, discard what is held (`fieldsync conflicts --db {db} --discard-from {sender}`), or raise the limit: sqlite3 {db} \"INSERT OR REPLACE INTO fieldsync_meta VALUES ('max_held_per_sender', N)\""
    )]
    TooManyHeld {
        /// The sender.
        sender: String,
        /// Its changes the quarantine would hold.
        held: u64,
        /// The bound.
        limit: u64,
        /// What stays: "nothing was imported", or the changes an import in
        /// several write transactions applied before it found out.
        kept: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// The tracked tables changed between two write transactions of one
    /// import (`track` ran meanwhile).
    #[error(
        "the tracked tables changed while the import was running (did `fieldsync track` run?); what was applied so far is kept; import the bundle again to finish: fieldsync import --db {db} FILE"
    )]
    TrackedChanged {
        /// The database, as typed after `--db`.
        db: String,
    },
    /// Nothing held matches what was to be discarded.
    #[error("the quarantine holds no {what}; `fieldsync conflicts --db {db}` lists what it holds")]
    NotHeld {
        /// What was asked for: "change #7", "change from 'field-1'".
        what: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// A change number was reused with different content.
    #[error(
        "the bundle's change {origin}#{seq} differs from the change with that number already here; instance '{origin}' may have been restored from an old backup"
    )]
    SequenceReused {
        /// Origin name.
        origin: String,
        /// The sequence number.
        seq: u64,
    },
    /// A bundle sent over the network by one instance is signed by another
    /// (spec/network.md: a request carries its own instance's bundle).
    #[error(
        "the bundle is from '{sender}', not signed by the key {expected} that signed the request; an instance syncs only its own bundles over the network (carry another's as a file)"
    )]
    NotFromRequester {
        /// The fingerprint of the key that signed the request.
        expected: String,
        /// The sender the bundle names.
        sender: String,
    },
}

/// Who may send a bundle (spec/trust.md): unsigned bundles and signers
/// other than the one pinned for a site.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// An unsigned bundle (format 1 to 3) outside a migration period.
    #[error(
        "refused: the bundle from '{sender}' is unsigned (format version {version}, written by an older fieldsync); upgrade fieldsync at the sender, or allow unsigned bundles for a migration period: `fieldsync trust --db {db} --allow-unsigned-for 30`"
    )]
    Unsigned {
        /// The name the bundle gives its sender.
        sender: String,
        /// Its format version.
        version: u16,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// An unsigned full bundle given to `init --from` without leave.
    #[error(
        "refused: the bundle is unsigned (format version {version}, written by an older fieldsync); export it again with this fieldsync, or, if you trust the file, run `init --from` again with --allow-unsigned"
    )]
    UnsignedSetup {
        /// Its format version.
        version: u16,
    },
    /// The sender's site is pinned to another key.
    #[error(
        "refused: the bundle says it is from '{sender}' but is signed by key {found} (signing-key fingerprint {found_fingerprint}), not by the key {pinned} this instance pinned for that instance; do not import it: check the fingerprint with HQ (`fieldsync key` on both sides)"
    )]
    KeyChanged {
        /// The name the bundle gives its sender.
        sender: String,
        /// The key that signed it (base64).
        found: String,
        /// Its short fingerprint.
        found_fingerprint: String,
        /// The key pinned for the sender's site id (base64).
        pinned: String,
    },
    /// The signing key is pinned to another site.
    #[error(
        "refused: the bundle says it is from '{sender}' but its signing key {key} (signing-key fingerprint {fingerprint}) belongs to another instance ('{owner}'); do not import it: check the fingerprint with HQ (`fieldsync key` on both sides)"
    )]
    KeyOfAnotherSite {
        /// The name the bundle gives its sender.
        sender: String,
        /// The key that signed it (base64).
        key: String,
        /// Its short fingerprint.
        fingerprint: String,
        /// The instance the key is pinned to.
        owner: String,
    },
    /// `--allow-unsigned-for` out of range.
    #[error(
        "--allow-unsigned-for takes 1 to 90 days (30 is enough to upgrade a deployment); {days} is out of range"
    )]
    AllowanceOutOfRange {
        /// What was asked.
        days: u32,
    },
    /// A trust record signed by the anchor says something no anchor writes.
    #[error(
        "refused: the bundle carries a trust record, signed by this instance's HQ, that is damaged ({detail}); ask HQ to export again"
    )]
    BadRecord {
        /// What is wrong with it.
        detail: String,
    },
    /// `fieldsync_pins` holds something no fieldsync writes.
    #[error(
        "the list of trusted instances in this database is damaged ({detail}); restore the database from a backup"
    )]
    DamagedKeyring {
        /// What is wrong.
        detail: String,
    },
    /// The sender is not enrolled here, nor by the anchor's records.
    #[error(
        "refused: the bundle from '{sender}' is signed by a key this instance does not know (fingerprint {fingerprint}); {what_to_do}"
    )]
    NotEnrolled {
        /// The name the bundle gives its sender.
        sender: String,
        /// Its signing-key fingerprint.
        fingerprint: String,
        /// What to do, depending on whether this instance is HQ.
        what_to_do: String,
    },
    /// The sender was revoked.
    #[error(
        "refused: '{sender}' was revoked on {when}{by}; its bundles are no longer imported. What it sent before stays: `fieldsync trust --db {db} --list`"
    )]
    Revoked {
        /// Its name.
        sender: String,
        /// When it was revoked.
        when: String,
        /// " by HQ ('hq')", or empty if revoked here.
        by: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// The sender uses a name another instance has.
    #[error(
        "refused: the bundle says it is from '{sender}', but that name belongs to another instance (signing-key fingerprint {owner_fingerprint}) and this bundle is signed by key {fingerprint}; do not import it: it may be an impostor. Check the fingerprint with HQ (`fieldsync key` on both sides)"
    )]
    NameOfAnother {
        /// The name the bundle gives its sender.
        sender: String,
        /// Fingerprint of the key that signed it.
        fingerprint: String,
        /// Fingerprint of the instance that has the name.
        owner_fingerprint: String,
    },
    /// The sender's key is enrolled under another name.
    #[error(
        "refused: the bundle says it is from '{sender}', but its signing key (fingerprint {fingerprint}) is enrolled as '{enrolled}'; if it was renamed, enrol it again under its new name (`fieldsync trust`), otherwise do not import it"
    )]
    OtherName {
        /// The name the bundle gives its sender.
        sender: String,
        /// Its signing-key fingerprint.
        fingerprint: String,
        /// The name it is enrolled under.
        enrolled: String,
    },
    /// `init --from --expect-key` with a file signed by another key.
    #[error(
        "refused: the file is signed by '{sender}' with fingerprint {found} (signing key {found_signing}), not {expected} as expected; do not use it: get the full export from your HQ again and check the fingerprint with HQ (`fieldsync key` there)"
    )]
    NotExpectedKey {
        /// The name the file gives its sender.
        sender: String,
        /// What was expected.
        expected: String,
        /// The file's signer's instance fingerprint (or its signing
        /// fingerprint when the file does not carry its recipient).
        found: String,
        /// The signing-key fingerprint.
        found_signing: String,
    },
    /// `init --from` without `--expect-key`, not on a terminal.
    #[error(
        "refused: set up from this file only if it is your HQ's: it is signed by '{sender}', fingerprint {fingerprint}. Check that fingerprint with HQ (`fieldsync key --db HQ.db` there, read over the phone), then run again with --expect-key {fingerprint}"
    )]
    ExpectKeyNeeded {
        /// The name the file gives its sender.
        sender: String,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// The person at the terminal did not confirm the fingerprint.
    #[error("not set up: the fingerprint was not confirmed; nothing was changed")]
    NotConfirmed,
    /// `fieldsync trust` or `revoke` was given something unusable.
    #[error("{what}: {detail}")]
    BadEnrolment {
        /// What was given.
        what: String,
        /// Why it cannot be used and what to give instead.
        detail: String,
    },
    /// `revoke` or `--anchor` names an instance not in the keyring.
    #[error(
        "no instance called '{name}' is enrolled here; `fieldsync trust --db {db} --list` shows those that are"
    )]
    NoSuchInstance {
        /// The name given.
        name: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// `--max-clock-ahead` out of range.
    #[error(
        "--max-clock-ahead takes 1 minute to 30 days (e.g. 1h, 90m, 2d); {} is out of range",
        crate::base::hlc::span(*ms)
    )]
    ClockBoundOutOfRange {
        /// What was asked, in milliseconds.
        ms: i64,
    },
    /// An origin statement signed by another key than the one valid for
    /// its origin.
    #[error(
        "refused: the bundle from '{sender}' carries a statement of '{origin}' signed by key {found} (signing-key fingerprint {found_fingerprint}), not by the key this instance pinned for '{origin}'; do not import it: it may be forged — check the fingerprint with HQ (`fieldsync key` on both sides)"
    )]
    StatementKeyChanged {
        /// The name the bundle gives its sender.
        sender: String,
        /// The origin the statement is of.
        origin: String,
        /// The key that signed it (base64).
        found: String,
        /// Its short fingerprint.
        found_fingerprint: String,
    },
    /// An origin statement signed by a key pinned for another site.
    #[error(
        "refused: the bundle from '{sender}' carries a statement of '{origin}' signed by a key (signing-key fingerprint {fingerprint}) that belongs to another instance ('{owner}'); do not import it: it may be forged — check with HQ"
    )]
    StatementKeyOfAnotherSite {
        /// The name the bundle gives its sender.
        sender: String,
        /// The origin the statement is of.
        origin: String,
        /// The key's short fingerprint.
        fingerprint: String,
        /// The instance the key belongs to.
        owner: String,
    },
    /// An origin statement signed by a key no instance is enrolled with.
    #[error(
        "refused: the bundle from '{sender}' carries a statement of '{origin}' signed by a key this instance does not know (signing-key fingerprint {fingerprint}); '{origin}' is not enrolled here nor by HQ's records: import a newer bundle from HQ first, or check with HQ"
    )]
    StatementKeyUnknown {
        /// The name the bundle gives its sender.
        sender: String,
        /// The origin the statement is of.
        origin: String,
        /// The key's short fingerprint.
        fingerprint: String,
    },
    /// An origin statement that does not decode or whose signature fails.
    #[error(
        "refused: the bundle from '{sender}' carries a statement that {why}; it may be forged or corrupted — check with HQ"
    )]
    BadStatement {
        /// The name the bundle gives its sender.
        sender: String,
        /// What is wrong with it.
        why: String,
    },
    /// A claim beyond what the origin signed.
    #[error(
        "refused: the bundle from '{sender}' claims changes of '{origin}' up to {claimed} (in '{field}'), but '{origin}' has signed no change beyond {top}; it may be forged or corrupted — check with HQ"
    )]
    ClaimBeyondStatement {
        /// The name the bundle gives its sender.
        sender: String,
        /// The origin claimed of.
        origin: String,
        /// The header field: covers, seen or lacks.
        field: &'static str,
        /// The largest number claimed.
        claimed: u64,
        /// The highest number the origin signed.
        top: u64,
    },
    /// A claim on this instance's own changes beyond its sequence.
    #[error(
        "refused: the bundle from '{sender}' claims changes of this instance ('{name}') up to {claimed} (in '{field}'), but it has made {seq} and signed no more; it may be forged or corrupted — check with HQ"
    )]
    ClaimBeyondOwn {
        /// The name the bundle gives its sender.
        sender: String,
        /// This instance's name.
        name: String,
        /// The header field.
        field: &'static str,
        /// The largest number claimed.
        claimed: u64,
        /// This instance's counter (or the top of its own statement).
        seq: u64,
    },
    /// A change number no instance reaches.
    #[error(
        "refused: the bundle from '{sender}' claims change {claimed} of '{origin}' (in '{field}'), beyond 2^53, which no instance reaches; it is forged or corrupted — check with HQ"
    )]
    ClaimTooLarge {
        /// The name the bundle gives its sender.
        sender: String,
        /// The origin claimed of.
        origin: String,
        /// The header field.
        field: &'static str,
        /// The number.
        claimed: u64,
    },
    /// A claim of an origin no statement is known of, beyond what this
    /// instance knows and the bundle carries.
    #[error(
        "refused: the bundle from '{sender}' claims changes of '{origin}' up to {claimed} (in '{field}'), but carries none beyond {bound} and no statement of '{origin}' says it made more; it may be forged or corrupted — check with HQ"
    )]
    ClaimUnfounded {
        /// The name the bundle gives its sender.
        sender: String,
        /// The origin claimed of.
        origin: String,
        /// The header field.
        field: &'static str,
        /// The largest number claimed.
        claimed: u64,
        /// What this instance knows of the origin and the body carries.
        bound: u64,
    },
}

/// Encrypted bundles (spec/trust.md, "Encryption to the recipient").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope is not addressed to this instance.
    #[error(
        "refused: the bundle is encrypted for {recipients}, not for this instance ('{this}'); import it on the instance it was written for, or ask the sender to export again with `--to {this}`"
    )]
    NotForThisInstance {
        /// The recipients its outer header names.
        recipients: String,
        /// This instance's name.
        this: String,
    },
    /// The outer header or the age stream does not hold.
    #[error(
        "the encrypted bundle is damaged or truncated ({detail}); copy it again from the sender"
    )]
    Damaged {
        /// What failed.
        detail: String,
    },
    /// The outer header does not decode or is out of bounds.
    #[error(
        "the encrypted bundle is corrupt or malformed: {detail}; copy it again from the sender"
    )]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// An envelope version this build does not read.
    #[error(
        "the bundle is encrypted with envelope version {found}, which this fieldsync does not read; upgrade fieldsync"
    )]
    NewerVersion {
        /// Version in the file.
        found: u16,
    },
    /// The signed header inside disagrees with the outer header.
    #[error(
        "refused: the encrypted bundle says outside it is from {outer} but the signed bundle inside is from {inner}; do not import it, ask the sender for a new one"
    )]
    OuterMismatch {
        /// The sender the outer header names.
        outer: String,
        /// The sender the signed header names.
        inner: String,
    },
    /// No recipient is known for a peer to encrypt to.
    #[error(
        "cannot encrypt the bundle to '{peer}': its key is not known here yet; import a bundle from '{peer}' first (its key comes with it), or enrol it, or pass --no-encrypt to write the bundle unencrypted (then carry it by hand)"
    )]
    NoRecipient {
        /// The peer.
        peer: String,
    },
    /// A full export names nobody to encrypt to.
    #[error(
        "a full export is encrypted to the instances it is for: name them with --for NAME,… (their keys must be known here), or pass --no-encrypt for the file that sets up a new laptop (it has no key yet; carry the file by hand and check it with `init --from --expect-key`)"
    )]
    FullWithoutRecipients,
    /// Too many recipients for one envelope.
    #[error("cannot encrypt one bundle to {count} instances; at most 1000")]
    TooManyRecipients {
        /// How many were asked.
        count: usize,
    },
    /// `init --from` was given an encrypted file.
    #[error(
        "refused: this full export is encrypted (for {recipients}), and a new instance has no key to decrypt it yet; at the sender, write the setup file with `fieldsync export --full --for NAME --no-encrypt` and carry it by hand"
    )]
    EncryptedSetup {
        /// The recipients its outer header names.
        recipients: String,
    },
    /// A sender's age recipient differs from the one recorded for it.
    #[error(
        "refused: the bundle from '{sender}' carries the encryption key {found}, not the key {recorded} this instance recorded for it; do not import it: check the fingerprint with HQ (`fieldsync key` on both sides)"
    )]
    RecipientChanged {
        /// The name the bundle gives its sender.
        sender: String,
        /// The recipient the bundle carries.
        found: String,
        /// The one recorded.
        recorded: String,
    },
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Network sync (spec/network.md): the server, the client, and what a
/// server answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The URL does not parse, or is not http(s).
    #[error("'{url}' is not a fieldsync server address; give one like https://hq.example.org:8470")]
    BadUrl {
        /// As given.
        url: String,
    },
    /// No server was named and none is remembered.
    #[error(
        "no server to sync with: give its address (fieldsync sync --db {db} https://HQ:8470) or remember one with `fieldsync peer add --db {db} NAME URL`"
    )]
    NoServer {
        /// The database, as typed after `--db`.
        db: String,
    },
    /// Several servers are remembered and none was named.
    #[error(
        "several servers are remembered ({names}): name one, e.g. `fieldsync sync --db {db} {first}`"
    )]
    WhichServer {
        /// Their names.
        names: String,
        /// The first of them.
        first: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// A name that is neither a remembered peer nor a URL.
    #[error(
        "no address is remembered for '{name}': `fieldsync peer add --db {db} {name} URL` remembers one, or give the URL"
    )]
    NoAddress {
        /// The name given.
        name: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// The server could not be reached (after the retries).
    #[error(
        "could not reach {url}: {reason}; check the address and the link, then run the command again (it resumes)"
    )]
    Unreachable {
        /// The server.
        url: String,
        /// What failed, in one line.
        reason: String,
    },
    /// The server answered with an error.
    #[error("the server at {url} refused: {message}")]
    Refused {
        /// The server.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its one line.
        message: String,
    },
    /// The server is an instance this one does not trust.
    #[error(
        "the server at {url} is '{name}' (key {fingerprint}), which this instance does not trust; if that is your HQ, enrol it with `fieldsync trust --db {db} {name} KEY`"
    )]
    UnknownServer {
        /// The server.
        url: String,
        /// The name it gives.
        name: String,
        /// Its signing key's fingerprint.
        fingerprint: String,
        /// The database, as typed after `--db`.
        db: String,
    },
    /// The server answered something that is not fieldsync's protocol.
    #[error("the server at {url} answered something fieldsync does not understand: {problem}")]
    Protocol {
        /// The server.
        url: String,
        /// What was wrong.
        problem: String,
    },
    /// The server cannot start.
    #[error("cannot serve on {listen}: {reason}")]
    Listen {
        /// The address.
        listen: String,
        /// Why.
        reason: String,
    },
    /// The TLS certificate or key cannot be used.
    #[error(
        "TLS: {problem}; give a PEM certificate chain with --tls-cert and its PEM private key with --tls-key"
    )]
    Tls {
        /// What was wrong.
        problem: String,
    },
    /// The server's TLS certificate is not trusted here.
    #[error(
        "the certificate of {url} is not trusted here ({detail}); if HQ uses a CA of its own, give its certificate with --ca-cert FILE"
    )]
    Untrusted {
        /// The server.
        url: String,
        /// What TLS said.
        detail: String,
    },
    /// Another `sync` of this database is under way.
    #[error(
        "another sync of {db} is under way; wait for it to end (a run that was killed releases it at once)"
    )]
    Busy {
        /// The database, as typed after `--db`.
        db: String,
    },
    /// A peer name given to `peer add` is not usable.
    #[error("'{name}' cannot name a server: use letters, digits, '-', '_' or '.'")]
    BadPeerName {
        /// As given.
        name: String,
    },
}

/// Any fieldsync error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or initialising.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// Tracking tables.
    #[error(transparent)]
    Track(#[from] TrackError),
    /// The bundle format.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Exporting.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Importing.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Setting up from a full bundle.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Who may send a bundle.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The clock.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The consistency check found problems.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The directory a file is to be written in does not exist.
    #[error("directory {} does not exist", dir.display())]
    NoSuchDirectory {
        /// The missing directory.
        dir: PathBuf,
    },
    /// Another program held the write lock for too long.
    #[error(
        "the database is busy: another program kept it locked for more than {seconds} s; try again when it is idle"
    )]
    Busy {
        /// How long fieldsync waited.
        seconds: u64,
    },
    /// An SQLite error not covered above.
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
    /// An I/O error not covered above.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Encrypted bundles.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Network sync.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The HQ console (spec/console.md).
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// Errors of the HQ console (spec/console.md).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The administrator password could not be hashed, or a stored hash
    /// is not a PHC string argon2 reads.
    #[error("the console password: {detail}")]
    Password {
        /// What went wrong.
        detail: String,
    },
    /// The password given is empty (a file with nothing in it, an empty
    /// variable): the console stays off rather than take any password.
    #[error("the console password is empty")]
    EmptyPassword,
    /// A database task of the console did not finish (it panicked or was
    /// cancelled).
    #[error("a console task failed: {detail}")]
    Task {
        /// What the runtime said.
        detail: String,
    },
}

impl Error {
    /// If this error refuses a bundle (the bundle's own content, signer or
    /// claims are at fault, not this computer), the kind of refusal the
    /// journal of refused bundles records, `family: variant` in words
    /// (`bundle: signature invalid`, `trust: key changed`, `import: too
    /// many held`); `None` for conditions of this computer or database
    /// (busy, I/O, SQLite, a damaged database, an interrupted import) and
    /// for errors of other commands. A family is classified as a whole, so
    /// a refusal added to it later is journaled without more ado.
    pub fn refusal_reason(&self) -> Option<String> {
        let family = match self {
            // A decrypting or decompressing reader reports damaged content
            // as I/O of these kinds: the bundle is at fault, not the disk.
            Error::Bundle(BundleError::Io(e)) | Error::Envelope(EnvelopeError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                "bundle"
            }
            Error::Bundle(BundleError::Io(_)) | Error::Envelope(EnvelopeError::Io(_)) => {
                return None;
            }
            Error::Bundle(_) => "bundle",
            Error::Trust(_) => "trust",
            Error::Import(ImportError::TrackedChanged { .. } | ImportError::NotHeld { .. }) => {
                return None;
            }
            Error::Import(_) => "import",
            Error::Envelope(
                EnvelopeError::NoRecipient { .. }
                | EnvelopeError::FullWithoutRecipients
                | EnvelopeError::TooManyRecipients { .. }
                | EnvelopeError::EncryptedSetup { .. },
            ) => return None,
            Error::Envelope(_) => "envelope",
            Error::Site(_)
            | Error::Track(_)
            | Error::Export(_)
            | Error::Setup(_)
            | Error::Clock(_)
            | Error::Check(_)
            | Error::NoSuchDirectory { .. }
            | Error::Busy { .. }
            | Error::Net(_)
            | Error::Sqlite(_)
            | Error::Io(_)
            | Error::Console(_) => return None,
        };
        Some(format!("{family}: {}", variant_words(self)))
    }
}

/// The name of the innermost variant of `e` in lower-case words
/// (`KeyChanged` → `key changed`), read from its derived `Debug` form
/// (`Trust(KeyChanged { .. })`), which names every variant, new ones too.
fn variant_words(e: &Error) -> String {
    let debug = format!("{e:?}");
    let inner = debug
        .split_once('(')
        .map_or(debug.as_str(), |(_, rest)| rest);
    let name: String = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// A count and its noun, singular for exactly one (`1 change`,
/// `2 changes`), for the sentences errors and warnings print.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How long fieldsync waits for another program's write lock.
pub const BUSY_TIMEOUT_SECS: u64 = 30;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) {
                return Error::Busy {
                    seconds: BUSY_TIMEOUT_SECS,
                };
            }
        }
        Error::Sqlite(e)
    }
}

impl From<rusqlite::types::FromSqlError> for Error {
    /// A value of the wrong type in fieldsync's own tables.
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        SiteError::Damaged {
            detail: e.to_string(),
        }
        .into()
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_by_family_and_named_by_variant() {
        let e: Error = TrustError::KeyChanged {
            sender: "hq".into(),
            found: String::new(),
            found_fingerprint: String::new(),
            pinned: String::new(),
        }
        .into();
        assert_eq!(e.refusal_reason().as_deref(), Some("trust: key changed"));
        let e: Error = BundleError::SignatureInvalid.into();
        assert_eq!(
            e.refusal_reason().as_deref(),
            Some("bundle: signature invalid")
        );
        let e: Error = ImportError::FromSelf { name: "hq".into() }.into();
        assert_eq!(e.refusal_reason().as_deref(), Some("import: from self"));
        // Conditions of this computer are not refusals of the bundle.
        assert_eq!(Error::Busy { seconds: 30 }.refusal_reason(), None);
        let io = || io::Error::other("disk");
        assert_eq!(Error::Io(io()).refusal_reason(), None);
        assert_eq!(Error::from(BundleError::Io(io())).refusal_reason(), None);
    }
}
