-- A database tracked by fieldsync at commit 19d144b, whose capture triggers
-- carry the names that version gave them (fieldsync_<table>_insert,
-- fieldsync_<table>_update_<column>, _rekey, _delete); read by
-- tests/trigger_names.rs. Made with that commit's binary and the sqlite3
-- shell, then `sqlite3 old.db .dump`:
--
--   sqlite3 old.db "
--   CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT COLLATE NOCASE);
--   CREATE TABLE place(id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, name TEXT);
--   CREATE TABLE \"visit \"\"log\"\"\"(person TEXT, day INTEGER, \"the note\", PRIMARY KEY(person, day)) WITHOUT ROWID;
--   CREATE TABLE option(label TEXT, value TEXT);
--   CREATE TABLE audit(at TEXT, what TEXT);
--   CREATE TRIGGER audit_person AFTER UPDATE ON person BEGIN INSERT INTO audit VALUES (datetime(), 'person ' || NEW.id); END;
--   INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Nimali', NULL);
--   INSERT INTO place(uuid, name) VALUES ('u-1', 'Galle');
--   INSERT INTO \"visit \"\"log\"\"\" VALUES ('p1', 1, 'first');
--   INSERT INTO option VALUES ('status', 'missing');"
--   fieldsync init --db old.db --name field-1
--   fieldsync track --db old.db --all --except audit --identity uuid
--   fieldsync compact --db old.db
--   sqlite3 old.db "UPDATE person SET status = 'found' WHERE id = 'p1';
--                   INSERT INTO place(uuid, name) VALUES ('u-2', 'Ampara');"
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT COLLATE NOCASE);
INSERT INTO person VALUES('p1','Amal','found');
INSERT INTO person VALUES('p2','Nimali',NULL);
CREATE TABLE place(id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, name TEXT);
INSERT INTO place VALUES(1,'u-1','Galle');
INSERT INTO place VALUES(2,'u-2','Ampara');
CREATE TABLE IF NOT EXISTS "visit ""log"""(person TEXT, day INTEGER, "the note", PRIMARY KEY(person, day)) WITHOUT ROWID;
INSERT INTO "visit ""log""" VALUES('p1',1,'first');
CREATE TABLE option(label TEXT, value TEXT);
INSERT INTO option VALUES('status','missing');
CREATE TABLE audit(at TEXT, what TEXT);
INSERT INTO audit VALUES('2026-11-29 14:05:29','person p1');
CREATE TABLE fieldsync_meta(
  key TEXT PRIMARY KEY,  -- schema, site_id, name, clock, seq, lost
  value
);
INSERT INTO fieldsync_meta VALUES('schema',3);
INSERT INTO fieldsync_meta VALUES('site_id',X'5a03c1039bf448ff88360d48a79118f9');
INSERT INTO fieldsync_meta VALUES('name','field-1');
INSERT INTO fieldsync_meta VALUES('clock',385431077482659841);
INSERT INTO fieldsync_meta VALUES('seq',5);
INSERT INTO fieldsync_meta VALUES('schema_cookie',39);
INSERT INTO fieldsync_meta VALUES('lost','');
CREATE TABLE fieldsync_sites(
  id INTEGER PRIMARY KEY,           -- local number, used in fieldsync_log.origin
  site_id BLOB NOT NULL UNIQUE,     -- 16-byte uuid of the instance
  name TEXT NOT NULL
);
INSERT INTO fieldsync_sites VALUES(1,X'5a03c1039bf448ff88360d48a79118f9','field-1');
CREATE TABLE fieldsync_tables(
  id INTEGER PRIMARY KEY,           -- used in fieldsync_log.tbl and fieldsync_pending.t
  name TEXT NOT NULL UNIQUE,
  identity TEXT                     -- how rows are recognised: key, column, origin, content
);
INSERT INTO fieldsync_tables VALUES(1,'person','key');
INSERT INTO fieldsync_tables VALUES(2,'place','column');
INSERT INTO fieldsync_tables VALUES(3,'visit "log"','key');
INSERT INTO fieldsync_tables VALUES(4,'option','content');
CREATE TABLE fieldsync_columns(
  tbl INTEGER NOT NULL,
  role TEXT NOT NULL,               -- 'key', 'cell' or 'local' (the app's local number, not replicated)
  pos INTEGER NOT NULL,             -- key: position in the replicated key; cell: bit (1, 2, ...)
  name TEXT NOT NULL,
  PRIMARY KEY(tbl, role, pos)
) WITHOUT ROWID;
INSERT INTO fieldsync_columns VALUES(1,'cell',1,'name');
INSERT INTO fieldsync_columns VALUES(1,'cell',2,'status');
INSERT INTO fieldsync_columns VALUES(1,'key',0,'id');
INSERT INTO fieldsync_columns VALUES(2,'cell',1,'name');
INSERT INTO fieldsync_columns VALUES(2,'key',0,'uuid');
INSERT INTO fieldsync_columns VALUES(2,'local',0,'id');
INSERT INTO fieldsync_columns VALUES(3,'cell',1,'the note');
INSERT INTO fieldsync_columns VALUES(3,'key',0,'person');
INSERT INTO fieldsync_columns VALUES(3,'key',1,'day');
INSERT INTO fieldsync_columns VALUES(4,'cell',1,'label');
INSERT INTO fieldsync_columns VALUES(4,'cell',2,'value');
INSERT INTO fieldsync_columns VALUES(4,'local',0,'rowid');
CREATE TABLE fieldsync_pending(
  id INTEGER PRIMARY KEY,
  t INTEGER NOT NULL,               -- fieldsync_tables.id
  op INTEGER NOT NULL,              -- 1 insert, 2 update, 3 delete
  at REAL NOT NULL,                 -- julianday('now') of the write
  m0 INTEGER,                       -- update: bits of the cells that changed
  k0                                -- first primary key column
, k1);
INSERT INTO fieldsync_pending VALUES(1,1,2,2461374.0871513308957,4,'p1',NULL);
INSERT INTO fieldsync_pending VALUES(2,2,1,2461374.087151597254,NULL,'u-2',NULL);
CREATE TABLE fieldsync_log(
  tbl INTEGER NOT NULL,
  pk BLOB NOT NULL,                 -- canonical encoding of the primary key
  origin INTEGER NOT NULL,          -- fieldsync_sites.id of the instance that made the change
  seq INTEGER NOT NULL,             -- its number at that instance
  cl INTEGER NOT NULL,              -- causal length: odd live, even deleted
  hlc INTEGER NOT NULL,             -- hybrid logical clock
  cols BLOB NOT NULL,               -- cells it still wins (bit 0: the row itself)
  PRIMARY KEY(tbl, pk, origin, seq)
) WITHOUT ROWID;
INSERT INTO fieldsync_log VALUES(1,X'91a27031',1,1,1,385431077478465536,X'07');
INSERT INTO fieldsync_log VALUES(1,X'91a27032',1,2,1,385431077478465537,X'07');
INSERT INTO fieldsync_log VALUES(2,X'91a3752d31',1,3,1,385431077478465538,X'03');
INSERT INTO fieldsync_log VALUES(3,X'92a2703101',1,4,1,385431077482659840,X'03');
INSERT INTO fieldsync_log VALUES(4,X'91c41428bcff8386f2a738b16db0e32e4f951a00000000',1,5,1,385431077482659841,X'07');
CREATE TABLE fieldsync_ids(
  tbl INTEGER NOT NULL,
  gid BLOB NOT NULL,                -- the row's identity, encoded as fieldsync_log.pk
  local NOT NULL,                   -- its number in this database
  sig BLOB,                         -- tables without a key: hash of the row's content
  PRIMARY KEY(tbl, gid)
) WITHOUT ROWID;
INSERT INTO fieldsync_ids VALUES(4,X'91c41428bcff8386f2a738b16db0e32e4f951a00000000',1,X'28bcff8386f2a738b16db0e32e4f951a');
CREATE TABLE fieldsync_have(
  origin INTEGER PRIMARY KEY,
  seqs TEXT NOT NULL                -- ranges, e.g. '1-500,520-610'
);
CREATE TABLE fieldsync_peers(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  site INTEGER UNIQUE,              -- fieldsync_sites.id, once a bundle from it was imported
  last_import INTEGER,              -- unix ms
  last_export INTEGER,              -- unix ms
  acked_at INTEGER,                 -- HLC of the bundle its acknowledgements come from
  lost TEXT NOT NULL DEFAULT ''     -- its own change numbers it said it lost
);
CREATE TABLE fieldsync_peer_seqs(
  peer INTEGER NOT NULL,
  origin INTEGER NOT NULL,
  acked TEXT NOT NULL DEFAULT '',   -- what the peer said it has (its seen vector)
  sent TEXT NOT NULL DEFAULT '',    -- what was exported to it
  PRIMARY KEY(peer, origin)
) WITHOUT ROWID;
CREATE TABLE fieldsync_quarantine(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL,                -- the app table
  key TEXT NOT NULL,                -- the row's key as SQL literals
  pk BLOB NOT NULL,                 -- canonical encoding of the key
  reason TEXT NOT NULL,             -- missing parent, still referenced, unique, not null, check
  detail TEXT NOT NULL,             -- what exactly, in words
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  first_at INTEGER NOT NULL,        -- unix ms
  last_at INTEGER NOT NULL,         -- unix ms of the last retry
  tries INTEGER NOT NULL DEFAULT 1,
  record BLOB NOT NULL              -- the change as received (MessagePack)
);
CREATE TABLE fieldsync_conflicts(
  id INTEGER PRIMARY KEY,
  noticed_at INTEGER NOT NULL,      -- unix ms of the import
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,                -- SQL literals
  col TEXT NOT NULL,                -- column, or '' for the row itself
  lost_value,                       -- the value that was overwritten
  lost_site TEXT NOT NULL,          -- instance that wrote it
  lost_at INTEGER NOT NULL,         -- when (unix ms, from its clock)
  won_value,
  won_site TEXT NOT NULL,
  won_at INTEGER NOT NULL,
  reason TEXT NOT NULL              -- later edit, row deleted, row re-created
);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('place',2);
CREATE TRIGGER audit_person AFTER UPDATE ON person BEGIN INSERT INTO audit VALUES (datetime(), 'person ' || NEW.id); END;
CREATE UNIQUE INDEX fieldsync_log_by_origin ON fieldsync_log(origin, seq);
CREATE UNIQUE INDEX fieldsync_ids_local ON fieldsync_ids(tbl, local);
CREATE INDEX fieldsync_quarantine_row ON fieldsync_quarantine(tbl, pk);
CREATE TRIGGER "fieldsync_person_insert" AFTER INSERT ON "person" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 1, julianday(), NEW."id"); END;
CREATE TRIGGER "fieldsync_person_update_name" AFTER UPDATE OF "name" ON "person" WHEN OLD."name" IS NOT NEW."name" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (1, 2, julianday(), NEW."id", 2); END;
CREATE TRIGGER "fieldsync_person_update_status" AFTER UPDATE OF "status" ON "person" WHEN OLD."status" IS NOT NEW."status" COLLATE BINARY BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (1, 2, julianday(), NEW."id", 4); END;
CREATE TRIGGER "fieldsync_person_rekey" AFTER UPDATE OF "id" ON "person" WHEN NEW."id" IS NOT OLD."id" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 3, julianday(), OLD."id"); INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 1, julianday(), NEW."id"); END;
CREATE TRIGGER "fieldsync_person_delete" AFTER DELETE ON "person" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 3, julianday(), OLD."id"); END;
CREATE TRIGGER "fieldsync_place_insert" AFTER INSERT ON "place" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (2, 1, julianday(), NEW."uuid"); END;
CREATE TRIGGER "fieldsync_place_update_name" AFTER UPDATE OF "name" ON "place" WHEN OLD."name" IS NOT NEW."name" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (2, 2, julianday(), NEW."uuid", 2); END;
CREATE TRIGGER "fieldsync_place_rekey" AFTER UPDATE OF "uuid" ON "place" WHEN NEW."uuid" IS NOT OLD."uuid" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (2, 3, julianday(), OLD."uuid"); INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (2, 1, julianday(), NEW."uuid"); END;
CREATE TRIGGER "fieldsync_place_delete" AFTER DELETE ON "place" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (2, 3, julianday(), OLD."uuid"); END;
CREATE TRIGGER "fieldsync_visit ""log""_insert" AFTER INSERT ON "visit ""log""" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (3, 1, julianday(), NEW."person", NEW."day"); END;
CREATE TRIGGER "fieldsync_visit ""log""_update_the note" AFTER UPDATE OF "the note" ON "visit ""log""" WHEN OLD."the note" IS NOT NEW."the note" OR typeof(OLD."the note") <> typeof(NEW."the note") OR (NEW."the note" = 0 AND typeof(NEW."the note") = 'real') BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1, m0) VALUES (3, 2, julianday(), NEW."person", NEW."day", 2); END;
CREATE TRIGGER "fieldsync_visit ""log""_rekey" AFTER UPDATE OF "person", "day" ON "visit ""log""" WHEN NEW."person" IS NOT OLD."person" OR NEW."day" IS NOT OLD."day" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (3, 3, julianday(), OLD."person", OLD."day"); INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (3, 1, julianday(), NEW."person", NEW."day"); END;
CREATE TRIGGER "fieldsync_visit ""log""_delete" AFTER DELETE ON "visit ""log""" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (3, 3, julianday(), OLD."person", OLD."day"); END;
CREATE TRIGGER "fieldsync_option_insert" AFTER INSERT ON "option" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (4, 1, julianday(), NEW."rowid"); END;
CREATE TRIGGER "fieldsync_option_update_label" AFTER UPDATE OF "label" ON "option" WHEN OLD."label" IS NOT NEW."label" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (4, 2, julianday(), NEW."rowid", 2); END;
CREATE TRIGGER "fieldsync_option_update_value" AFTER UPDATE OF "value" ON "option" WHEN OLD."value" IS NOT NEW."value" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (4, 2, julianday(), NEW."rowid", 4); END;
CREATE TRIGGER "fieldsync_option_delete" AFTER DELETE ON "option" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (4, 3, julianday(), OLD."rowid"); END;
COMMIT;
