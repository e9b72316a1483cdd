//! The savepoint guard: writes that must vanish together if what they belong
//! to is refused (one received change, a joint pass, the `ON DELETE` actions
//! of a held delete, one table of `track --all`).
//!
//! Like rusqlite's `Savepoint`, it rolls back when dropped without
//! [`Savepoint::commit`]: every exit, a refusal or a `?`, undoes what was
//! written since it opened and closes it. rusqlite's own needs a
//! `&mut Connection` (or `&mut Transaction`); the import shares one
//! `&Transaction` with everything it calls, and nests savepoints (a
//! change's inside a joint pass's or a cascade's), so this one borrows the
//! transaction shared. Taking a [`Transaction`] says that a savepoint here
//! is always part of the caller's write transaction, never one of its own.

use rusqlite::{Connection, Transaction};

/// An open savepoint that rolls back unless committed.
#[must_use = "dropping a savepoint rolls back what was written in it"]
pub(crate) struct Savepoint<'t> {
    conn: &'t Connection,
    name: &'static str,
    open: bool,
}

impl<'t> Savepoint<'t> {
    /// Open the savepoint `name` in `tx`.
    pub(crate) fn open(
        tx: &'t Transaction<'_>,
        name: &'static str,
    ) -> Result<Savepoint<'t>, rusqlite::Error> {
        let conn: &'t Connection = tx;
        // Cached: a savepoint may open for every change of an import.
        conn.prepare_cached(&format!("SAVEPOINT {name}"))?
            .execute([])?;
        Ok(Savepoint {
            conn,
            name,
            open: true,
        })
    }

    /// Keep what was written: the savepoint's writes join the enclosing
    /// transaction (or savepoint).
    pub(crate) fn commit(mut self) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached(&format!("RELEASE {}", self.name))?
            .execute([])?;
        self.open = false;
        Ok(())
    }

    /// Undo what was written and close the savepoint, reporting a failure
    /// (dropping does the same but cannot report one).
    pub(crate) fn rollback(mut self) -> Result<(), rusqlite::Error> {
        self.open = false;
        self.undo()
    }

    fn undo(&self) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached(&format!("ROLLBACK TO {}", self.name))?
            .execute([])?;
        self.conn
            .prepare_cached(&format!("RELEASE {}", self.name))?
            .execute([])?;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if self.open {
            // A drop cannot report a failure; one here is the database's own
            // trouble, which fails the import and rolls the transaction back.
            let _ = self.undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t(x)")?;
        Ok(conn)
    }

    fn count(conn: &Connection) -> Result<i64, rusqlite::Error> {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
    }

    /// What a committed savepoint wrote stays; a dropped one's is gone, and
    /// neither is left open (releasing it again fails).
    #[test]
    fn a_dropped_savepoint_rolls_back_and_closes() -> Result<(), rusqlite::Error> {
        let conn = setup()?;
        let tx = conn.unchecked_transaction()?;
        let kept = Savepoint::open(&tx, "kept")?;
        tx.execute("INSERT INTO t VALUES (1)", [])?;
        kept.commit()?;
        {
            let _dropped = Savepoint::open(&tx, "dropped")?;
            tx.execute("INSERT INTO t VALUES (2)", [])?;
        }
        assert!(tx.execute_batch("RELEASE dropped").is_err());
        assert!(tx.execute_batch("RELEASE kept").is_err());
        tx.commit()?;
        assert_eq!(count(&conn)?, 1);
        Ok(())
    }

    /// Nested savepoints: the inner one rolled back, the outer one kept.
    #[test]
    fn a_savepoint_rolls_back_inside_another() -> Result<(), rusqlite::Error> {
        let conn = setup()?;
        let tx = conn.unchecked_transaction()?;
        let outer = Savepoint::open(&tx, "outer")?;
        tx.execute("INSERT INTO t VALUES (1)", [])?;
        let inner = Savepoint::open(&tx, "inner")?;
        tx.execute("INSERT INTO t VALUES (2)", [])?;
        inner.rollback()?;
        outer.commit()?;
        tx.commit()?;
        assert_eq!(count(&conn)?, 1);
        Ok(())
    }
}
