PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE fieldsync_meta(
  key TEXT PRIMARY KEY,  -- schema, site_id, name, clock, seq, lost
  value
);
INSERT INTO fieldsync_meta VALUES('schema',9);
INSERT INTO fieldsync_meta VALUES('site_id',X'2b4d4468902f4b3490d347a265e41647');
INSERT INTO fieldsync_meta VALUES('name','field-1');
INSERT INTO fieldsync_meta VALUES('clock',385561037383925760);
INSERT INTO fieldsync_meta VALUES('seq',7);
INSERT INTO fieldsync_meta VALUES('anchor','self');
INSERT INTO fieldsync_meta VALUES('schema_cookie',61);
INSERT INTO fieldsync_meta VALUES('followed_schema',61);
INSERT INTO fieldsync_meta VALUES('lost','');
INSERT INTO fieldsync_meta VALUES('waiting_schema',61);
INSERT INTO fieldsync_meta VALUES('held_mark',0);
INSERT INTO fieldsync_meta VALUES('held_schema',61);
CREATE TABLE fieldsync_sites(
  id INTEGER PRIMARY KEY,           -- local number, used in fieldsync_log.origin
  site_id BLOB NOT NULL UNIQUE,     -- 16-byte uuid of the instance
  name TEXT NOT NULL
);
INSERT INTO fieldsync_sites VALUES(1,X'2b4d4468902f4b3490d347a265e41647','field-1');
INSERT INTO fieldsync_sites VALUES(2,X'509951ec497b4f89823ae647c8f61274','hq');
CREATE TABLE fieldsync_tables(
  id INTEGER PRIMARY KEY,           -- used in fieldsync_log.tbl and fieldsync_pending.t
  name TEXT NOT NULL UNIQUE,
  identity TEXT                     -- how rows are recognised: key, column, origin, content
);
INSERT INTO fieldsync_tables VALUES(1,'person','key');
INSERT INTO fieldsync_tables VALUES(2,'visit','key');
INSERT INTO fieldsync_tables VALUES(3,'tag','key');
INSERT INTO fieldsync_tables VALUES(4,'place','origin');
INSERT INTO fieldsync_tables VALUES(5,'opt','content');
CREATE TABLE fieldsync_columns(
  tbl INTEGER NOT NULL,
  role TEXT NOT NULL,               -- 'key', 'cell' or 'local' (the app's local number, not replicated)
  pos INTEGER NOT NULL,             -- key: position in the replicated key; cell: bit (1, 2, ...)
  name TEXT NOT NULL,
  PRIMARY KEY(tbl, role, pos)
) WITHOUT ROWID;
INSERT INTO fieldsync_columns VALUES(1,'cell',1,'name');
INSERT INTO fieldsync_columns VALUES(1,'cell',2,'status');
INSERT INTO fieldsync_columns VALUES(1,'cell',3,'code');
INSERT INTO fieldsync_columns VALUES(1,'cell',4,'age');
INSERT INTO fieldsync_columns VALUES(1,'key',0,'id');
INSERT INTO fieldsync_columns VALUES(2,'cell',1,'note');
INSERT INTO fieldsync_columns VALUES(2,'cell',2,'score');
INSERT INTO fieldsync_columns VALUES(2,'key',0,'person');
INSERT INTO fieldsync_columns VALUES(2,'key',1,'day');
INSERT INTO fieldsync_columns VALUES(3,'cell',1,'v');
INSERT INTO fieldsync_columns VALUES(3,'key',0,'k');
INSERT INTO fieldsync_columns VALUES(4,'cell',1,'name');
INSERT INTO fieldsync_columns VALUES(4,'cell',2,'parent');
INSERT INTO fieldsync_columns VALUES(4,'cell',3,'person');
INSERT INTO fieldsync_columns VALUES(4,'local',0,'id');
INSERT INTO fieldsync_columns VALUES(5,'cell',1,'field');
INSERT INTO fieldsync_columns VALUES(5,'cell',2,'code');
INSERT INTO fieldsync_columns VALUES(5,'cell',3,'label');
INSERT INTO fieldsync_columns VALUES(5,'local',0,'rowid');
CREATE TABLE fieldsync_pending(
  id INTEGER PRIMARY KEY,
  t INTEGER NOT NULL,               -- fieldsync_tables.id
  op INTEGER NOT NULL,              -- 1 insert, 2 update, 3 delete
  at REAL NOT NULL,                 -- julianday('now') of the write
  m0 INTEGER,                       -- update: bits of the cells that changed
  k0                                -- first primary key column
, k1);
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
INSERT INTO fieldsync_log VALUES(1,X'91a27031',1,1,1,385561037354565633,X'04');
INSERT INTO fieldsync_log VALUES(1,X'91a27031',2,1,1,385561037237125120,X'1b');
INSERT INTO fieldsync_log VALUES(1,X'91a27032',1,2,2,385561037358759936,X'01');
INSERT INTO fieldsync_log VALUES(1,X'91a27033',2,3,1,385561037237125122,X'1f');
INSERT INTO fieldsync_log VALUES(1,X'91a27034',2,4,1,385561037237125123,X'1f');
INSERT INTO fieldsync_log VALUES(1,X'91a27035',2,5,1,385561037237125124,X'1f');
INSERT INTO fieldsync_log VALUES(1,X'91a27036',2,6,1,385561037237125125,X'1f');
INSERT INTO fieldsync_log VALUES(1,X'91a27037',1,3,1,385561037362954240,X'1f');
INSERT INTO fieldsync_log VALUES(2,X'92a2703101',1,4,1,385561037362954241,X'02');
INSERT INTO fieldsync_log VALUES(2,X'92a2703101',2,7,1,385561037237125126,X'05');
INSERT INTO fieldsync_log VALUES(2,X'92a2703102',2,8,1,385561037237125127,X'07');
INSERT INTO fieldsync_log VALUES(2,X'92a2703301',2,9,1,385561037237125128,X'07');
INSERT INTO fieldsync_log VALUES(2,X'92a2703503',2,10,1,385561037237125129,X'07');
INSERT INTO fieldsync_log VALUES(3,X'9101',2,11,1,385561037241319424,X'03');
INSERT INTO fieldsync_log VALUES(3,X'9103',1,5,1,385561037367148544,X'03');
INSERT INTO fieldsync_log VALUES(3,X'91a178',2,12,1,385561037241319425,X'03');
INSERT INTO fieldsync_log VALUES(3,X'91c402beef',2,13,1,385561037241319426,X'03');
INSERT INTO fieldsync_log VALUES(3,X'91cb4004000000000000',2,14,1,385561037241319427,X'03');
INSERT INTO fieldsync_log VALUES(4,X'91c4182b4d4468902f4b3490d347a265e416470000000000000006',1,6,1,385561037371342848,X'0f');
INSERT INTO fieldsync_log VALUES(4,X'91c418509951ec497b4f89823ae647c8f61274000000000000000f',2,15,1,385561037241319428,X'0f');
INSERT INTO fieldsync_log VALUES(4,X'91c418509951ec497b4f89823ae647c8f612740000000000000010',2,16,1,385561037241319429,X'0f');
INSERT INTO fieldsync_log VALUES(4,X'91c418509951ec497b4f89823ae647c8f612740000000000000011',2,17,1,385561037241319430,X'0f');
INSERT INTO fieldsync_log VALUES(5,X'91c41403f4a3ce39d396ae2d5ccad248ac98f200000000',1,7,1,385561037371342849,X'08');
INSERT INTO fieldsync_log VALUES(5,X'91c41403f4a3ce39d396ae2d5ccad248ac98f200000000',2,19,1,385561037241319432,X'07');
INSERT INTO fieldsync_log VALUES(5,X'91c41403f4a3ce39d396ae2d5ccad248ac98f200000001',2,20,1,385561037241319433,X'0f');
INSERT INTO fieldsync_log VALUES(5,X'91c414a9909fb63adb299a4995475ce44e2e3800000000',2,18,1,385561037241319431,X'0f');
CREATE TABLE fieldsync_ids(
  tbl INTEGER NOT NULL,
  gid BLOB NOT NULL,                -- the row's identity, encoded as fieldsync_log.pk
  local NOT NULL,                   -- its number in this database
  sig BLOB,                         -- tables without a key: hash of the row's content
  PRIMARY KEY(tbl, gid)
) WITHOUT ROWID;
INSERT INTO fieldsync_ids VALUES(4,X'91c4182b4d4468902f4b3490d347a265e416470000000000000006',4,NULL);
INSERT INTO fieldsync_ids VALUES(4,X'91c418509951ec497b4f89823ae647c8f61274000000000000000f',1,NULL);
INSERT INTO fieldsync_ids VALUES(4,X'91c418509951ec497b4f89823ae647c8f612740000000000000010',2,NULL);
INSERT INTO fieldsync_ids VALUES(4,X'91c418509951ec497b4f89823ae647c8f612740000000000000011',3,NULL);
INSERT INTO fieldsync_ids VALUES(5,X'91c41403f4a3ce39d396ae2d5ccad248ac98f200000000',2,X'd452c11fbf92be265d02ef213933fa30');
INSERT INTO fieldsync_ids VALUES(5,X'91c41403f4a3ce39d396ae2d5ccad248ac98f200000001',3,X'03f4a3ce39d396ae2d5ccad248ac98f2');
INSERT INTO fieldsync_ids VALUES(5,X'91c414a9909fb63adb299a4995475ce44e2e3800000000',1,X'a9909fb63adb299a4995475ce44e2e38');
CREATE TABLE fieldsync_have(
  origin INTEGER PRIMARY KEY,
  seqs TEXT NOT NULL                -- ranges, e.g. '1-500,520-610'
);
INSERT INTO fieldsync_have VALUES(2,'1-20');
CREATE TABLE fieldsync_peers(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  site INTEGER UNIQUE,              -- fieldsync_sites.id, once a bundle from it was imported
  last_import INTEGER,              -- unix ms
  last_export INTEGER,              -- unix ms
  acked_at INTEGER,                 -- HLC of the bundle its acknowledgements come from
  lost TEXT NOT NULL DEFAULT ''     -- its own change numbers it said it lost
);
INSERT INTO fieldsync_peers VALUES(1,'hq',2,1795992114682,1795992114691,385561037253902336,'');
CREATE TABLE fieldsync_peer_seqs(
  peer INTEGER NOT NULL,
  origin INTEGER NOT NULL,
  acked TEXT NOT NULL DEFAULT '',   -- what the peer said it has (its seen vector)
  sent TEXT NOT NULL DEFAULT '',    -- what was exported to it
  lacks TEXT NOT NULL DEFAULT '',   -- of what was sent, what it reported missing, not yet sent again
  PRIMARY KEY(peer, origin)
) WITHOUT ROWID;
INSERT INTO fieldsync_peer_seqs VALUES(1,1,'','1-7','');
INSERT INTO fieldsync_peer_seqs VALUES(1,2,'1-20','','');
CREATE TABLE fieldsync_assumed(
  peer INTEGER NOT NULL,            -- fieldsync_peers.id
  origin INTEGER NOT NULL,          -- fieldsync_sites.id
  seqs TEXT NOT NULL,               -- ranges, e.g. '1-500'
  PRIMARY KEY(peer, origin)
) WITHOUT ROWID;
CREATE TABLE fieldsync_lacks(
  origin INTEGER PRIMARY KEY,
  seqs TEXT NOT NULL
);
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
  record BLOB NOT NULL,             -- the change as received (MessagePack)
  seqs BLOB                         -- its change numbers: 16-byte site id + 8-byte number, each
);
CREATE TABLE fieldsync_quarantine_waits(
  tbl TEXT NOT NULL,                -- the app table, lower case; '*' for any change
  pk BLOB NOT NULL,                 -- the row's canonical key; X'' for any row of tbl
  entry INTEGER NOT NULL,           -- fieldsync_quarantine.id
  PRIMARY KEY(tbl, pk, entry)
) WITHOUT ROWID;
CREATE TABLE fieldsync_discarded(
  id INTEGER PRIMARY KEY,
  entry INTEGER NOT NULL,           -- its number in the quarantine (fieldsync_quarantine.id)
  discarded_at INTEGER NOT NULL,    -- unix ms
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,                -- SQL literals
  reason TEXT NOT NULL,             -- why it was held
  detail TEXT NOT NULL,
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  first_at INTEGER NOT NULL,        -- unix ms it was first held
  changes TEXT NOT NULL,            -- its change numbers, e.g. 'field-1#3, field-1#7'
  vals TEXT NOT NULL                -- the values it carried, e.g. 'name = NULL, note = ''x'''
);
CREATE TABLE fieldsync_waiting(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL COLLATE NOCASE, -- the app table, as the bundle names it
  pk BLOB NOT NULL,                 -- canonical encoding of the row's key
  key TEXT NOT NULL,                -- the key as SQL literals
  identity TEXT NOT NULL,           -- how the sender identifies the table's rows
  waits TEXT NOT NULL,              -- the columns waited for, comma-separated; '' for the table
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  first_at INTEGER NOT NULL,        -- unix ms
  record BLOB NOT NULL,             -- the values with their changes, by column name (MessagePack)
  seqs BLOB NOT NULL,               -- its change numbers: 16-byte site id + 8-byte number, each
  UNIQUE(tbl, pk)
);
CREATE TABLE fieldsync_peer_schema(
  peer INTEGER NOT NULL,            -- fieldsync_peers.id
  tbl TEXT NOT NULL COLLATE NOCASE, -- the app table
  version TEXT NOT NULL,            -- 16 hex digits
  reported INTEGER NOT NULL,        -- 1: the peer said so; 0: assumed from what was sent
  PRIMARY KEY(peer, tbl)
) WITHOUT ROWID;
INSERT INTO fieldsync_peer_schema VALUES(1,'opt','e69e5baba4d6459b',1);
INSERT INTO fieldsync_peer_schema VALUES(1,'person','b36e25c2ef2f68dc',1);
INSERT INTO fieldsync_peer_schema VALUES(1,'place','55f0395c0609e067',1);
INSERT INTO fieldsync_peer_schema VALUES(1,'tag','22cd5c6bb8270aad',1);
INSERT INTO fieldsync_peer_schema VALUES(1,'visit','003ecd1c52e73b1e',1);
CREATE TABLE fieldsync_schema_held(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL COLLATE NOCASE, -- the app table
  stmts TEXT NOT NULL,              -- the statements it would run (JSON array)
  status TEXT NOT NULL,             -- held, failed, refused, not applied
  why TEXT NOT NULL,                -- in words
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  at INTEGER NOT NULL,              -- unix ms it arrived
  def BLOB NOT NULL                 -- the table as the bundle described it (MessagePack)
);
CREATE TABLE fieldsync_keys(
  purpose TEXT PRIMARY KEY,         -- 'sign' (Ed25519) or 'encrypt' (age X25519)
  public TEXT NOT NULL,             -- base64 of the 32-byte key (sign), or the age recipient 'age1...'
  secret TEXT NOT NULL,             -- base64 of the 32-byte seed (sign), or 'AGE-SECRET-KEY-1...'
  created_at INTEGER NOT NULL       -- unix ms
);
INSERT INTO fieldsync_keys VALUES('sign','0milBd7SuyQpoYkwqsrcmE8d3qfKjTiJKGPv9BezvLs=','ilJ5IlaMlsdCSx2dlWgJuw3BE2TNnFQQ53coONG08Qc=',1795992114663);
INSERT INTO fieldsync_keys VALUES('encrypt','age1d8z7uhftz4e3vrd9e8haeuhxm80tahq9w0u6d4m5t73gcerklqnqphmdf8','AGE-SECRET-KEY-1S5C8NMFZ9JJ2Z0KS36HVFKCKHYWGQ9QTCQ2F7GF229V4FKWP0RXS55XRQ2',1795992114663);
CREATE TABLE fieldsync_pins(
  public_key BLOB PRIMARY KEY,      -- its 32-byte Ed25519 public key
  site_id BLOB UNIQUE,              -- its 16-byte site id; NULL until its first bundle (enrolled by name and key)
  name TEXT NOT NULL,               -- its name (compared without regard to case)
  recipient TEXT,                   -- its age recipient 'age1...', once known
  role TEXT NOT NULL,               -- 'anchor', 'enrolled' or 'first use'
  first_seen INTEGER NOT NULL,      -- unix ms it was enrolled or pinned here
  revoked_at INTEGER,               -- unix ms of its revocation, if revoked
  keep_through INTEGER,             -- revoked: its changes numbered above this are refused
  serial INTEGER,                   -- the anchor's record of it: serial, ...
  record BLOB,                      -- ... MessagePack ...
  signature BLOB                    -- ... and the anchor's signature, relayed to others
);
INSERT INTO fieldsync_pins VALUES(X'53e3de524f9ea26568405f5b8c7139ccd8b106edd159f460a9c08a2d686c7f43',X'509951ec497b4f89823ae647c8f61274','hq','age1p2gznt2q06dvle2wxdpr4zvyd68ve2gjyv8l9feveymfx0lx0ueqs6rrur','enrolled',1795992114669,NULL,NULL,1,X'88a46b696e64a5656e726f6ca673657269616c01aa7075626c69635f6b6579c42053e3de524f9ea26568405f5b8c7139ccd8b106edd159f460a9c08a2d686c7f43a7736974655f6964c410509951ec497b4f89823ae647c8f61274a46e616d65a26871a9726563697069656e74d93e616765317032677a6e743271303664766c65327778647072347a7679643638766532676a7976386c3966657665796d6678306c7830756571733672727572a26174cf000001a22978d5edac6b6565705f7468726f756768c0',X'a3927d46f2a3f55f7fa54f71733af68e2054e377c134abd052ad440068d83bdf68a2d007077faeca689fa474be083b9201c6fd8fb68e713cd71d2209f7f1940f');
INSERT INTO fieldsync_pins VALUES(X'480f16e706a668f142516d6a5ee4184ca85b27ec1d66449010c9ec206d286247',X'306d7f0d33854e9f91438ef8b77f46d7','field-2','age1pvuy6pg3s6a3q6l60lmtwj2j7uelwykw5fd4jthx68agfp4vygfqy88a2a','enrolled',1795992114703,NULL,NULL,2,X'88a46b696e64a5656e726f6ca673657269616c02aa7075626c69635f6b6579c420480f16e706a668f142516d6a5ee4184ca85b27ec1d66449010c9ec206d286247a7736974655f6964c410306d7f0d33854e9f91438ef8b77f46d7a46e616d65a76669656c642d32a9726563697069656e74d93e6167653170767579367067337336613371366c36306c6d74776a326a3775656c77796b77356664346a746878363861676670347679676671793838613261a26174cf000001a22978d60fac6b6565705f7468726f756768c0',X'433d1b2bec5f684df09e53be3f3304922da4e3d2854dbb40d8e7b4a119d67e9d7f2aacf1a5560291dc6cf53a2157c5e863bad5881c6b4088a99c093c6b32a80f');
CREATE TABLE fieldsync_statements(
  site_id BLOB PRIMARY KEY,         -- 16-byte site id of the origin
  top INTEGER NOT NULL,             -- the highest change number it stated
  hlc INTEGER NOT NULL,             -- its clock when it signed
  statement BLOB NOT NULL,          -- the statement's bytes, as signed
  signature BLOB NOT NULL           -- its Ed25519 signature by the origin's key
);
INSERT INTO fieldsync_statements VALUES(X'509951ec497b4f89823ae647c8f61274',20,385561037253902336,X'509951ec497b4f89823ae647c8f6127400000000000000140559c9b878c0000053e3de524f9ea26568405f5b8c7139ccd8b106edd159f460a9c08a2d686c7f436871',X'8d659998f2d6e8439008755af5835da3661cc52b301bc49af0826f6b284583fadd10e6f54b58f89d5009a446dcddca4fcaf047fbf6fe88cde83cd7d0c3344a05');
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
CREATE TABLE fieldsync_clocks(
  site INTEGER PRIMARY KEY,         -- fieldsync_sites.id of the origin
  newest INTEGER NOT NULL,          -- the newest HLC it showed (a change's, or a bundle's `created`)
  seen_at INTEGER NOT NULL          -- unix ms of the import that showed it
);
INSERT INTO fieldsync_clocks VALUES(2,385561037253902336,1795992114682);
CREATE TABLE fieldsync_refused(
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,              -- unix ms of the refusal
  file TEXT,                        -- the file as given to import
  size INTEGER,                     -- bytes
  blake3 TEXT,                      -- BLAKE3 of the whole file, hex
  signer_fingerprint TEXT,          -- of the key in its trailer, checked or not
  claimed_sender TEXT,              -- the sender its header names, if its signature held
  reason TEXT NOT NULL,             -- the kind of refusal, e.g. 'bundle: signature invalid'
  message TEXT NOT NULL             -- the error line
);
CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT,
                    code TEXT UNIQUE, age INTEGER CHECK (age IS NULL OR age >= 0));
INSERT INTO person VALUES('p1','Amal Perera','found','A1',34);
INSERT INTO person VALUES('p3','Chen Wei','found',NULL,7);
INSERT INTO person VALUES('p4','Dara Ncube','missing','D4',61);
INSERT INTO person VALUES('p5','Eli Sato',NULL,'E5',25);
INSERT INTO person VALUES('p6','Fatma Ali','found','F6',40);
INSERT INTO person VALUES('p7','Gita Rao','missing','G7',19);
CREATE TABLE visit(person TEXT, day INTEGER, note, score REAL,
                   PRIMARY KEY(person, day)) WITHOUT ROWID;
INSERT INTO visit VALUES('p1',1,'seen at camp',2.5);
INSERT INTO visit VALUES('p1',2,42,NULL);
INSERT INTO visit VALUES('p3',1,X'00ff10',-1.25);
INSERT INTO visit VALUES('p5',3,NULL,1.0000000000000000047e+300);
CREATE TABLE tag(k PRIMARY KEY, v);
INSERT INTO tag VALUES(1,'one');
INSERT INTO tag VALUES('x',2.0);
INSERT INTO tag VALUES(X'beef',NULL);
INSERT INTO tag VALUES(2.5,'two and a half');
INSERT INTO tag VALUES(3,'three');
CREATE TABLE place(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT,
                   parent INTEGER REFERENCES place(id), person TEXT REFERENCES person(id));
INSERT INTO place VALUES(1,'Sri Lanka',NULL,NULL);
INSERT INTO place VALUES(2,'Galle',1,'p1');
INSERT INTO place VALUES(3,'Nowhere',NULL,'p9');
INSERT INTO place VALUES(4,'Unawatuna',2,'p7');
CREATE TABLE opt(field TEXT, code TEXT, label TEXT);
INSERT INTO opt VALUES('status','mis','Missing');
INSERT INTO opt VALUES('status','fnd','Found alive');
INSERT INTO opt VALUES('status','fnd','Found');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('place',4);
CREATE UNIQUE INDEX fieldsync_log_by_origin ON fieldsync_log(origin, seq);
CREATE UNIQUE INDEX fieldsync_ids_local ON fieldsync_ids(tbl, local);
CREATE INDEX fieldsync_quarantine_row ON fieldsync_quarantine(tbl, pk);
CREATE INDEX fieldsync_quarantine_waits_entry ON fieldsync_quarantine_waits(entry);
CREATE TRIGGER "fieldsync_insert_1" AFTER INSERT ON "person" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 1, julianday(), NEW."id"); END;
CREATE TRIGGER "fieldsync_update_1_1" AFTER UPDATE OF "name" ON "person" WHEN OLD."name" IS NOT NEW."name" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (1, 2, julianday(), NEW."id", 2); END;
CREATE TRIGGER "fieldsync_update_1_2" AFTER UPDATE OF "status" ON "person" WHEN OLD."status" IS NOT NEW."status" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (1, 2, julianday(), NEW."id", 4); END;
CREATE TRIGGER "fieldsync_update_1_3" AFTER UPDATE OF "code" ON "person" WHEN OLD."code" IS NOT NEW."code" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (1, 2, julianday(), NEW."id", 8); END;
CREATE TRIGGER "fieldsync_update_1_4" AFTER UPDATE OF "age" ON "person" WHEN OLD."age" IS NOT NEW."age" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (1, 2, julianday(), NEW."id", 16); END;
CREATE TRIGGER "fieldsync_rekey_1" AFTER UPDATE OF "id" ON "person" WHEN NEW."id" IS NOT OLD."id" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 3, julianday(), OLD."id"); INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 1, julianday(), NEW."id"); END;
CREATE TRIGGER "fieldsync_delete_1" AFTER DELETE ON "person" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 3, julianday(), OLD."id"); END;
CREATE TRIGGER "fieldsync_insert_2" AFTER INSERT ON "visit" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (2, 1, julianday(), NEW."person", NEW."day"); END;
CREATE TRIGGER "fieldsync_update_2_1" AFTER UPDATE OF "note" ON "visit" WHEN OLD."note" IS NOT NEW."note" OR typeof(OLD."note") <> typeof(NEW."note") OR (NEW."note" = 0 AND typeof(NEW."note") = 'real') BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1, m0) VALUES (2, 2, julianday(), NEW."person", NEW."day", 2); END;
CREATE TRIGGER "fieldsync_update_2_2" AFTER UPDATE OF "score" ON "visit" WHEN OLD."score" IS NOT NEW."score" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1, m0) VALUES (2, 2, julianday(), NEW."person", NEW."day", 4); END;
CREATE TRIGGER "fieldsync_rekey_2" AFTER UPDATE OF "person", "day" ON "visit" WHEN NEW."person" IS NOT OLD."person" OR NEW."day" IS NOT OLD."day" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (2, 3, julianday(), OLD."person", OLD."day"); INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (2, 1, julianday(), NEW."person", NEW."day"); END;
CREATE TRIGGER "fieldsync_delete_2" AFTER DELETE ON "visit" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, k1) VALUES (2, 3, julianday(), OLD."person", OLD."day"); END;
CREATE TRIGGER "fieldsync_insert_3" AFTER INSERT ON "tag" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (3, 1, julianday(), NEW."k"); END;
CREATE TRIGGER "fieldsync_update_3_1" AFTER UPDATE OF "v" ON "tag" WHEN OLD."v" IS NOT NEW."v" OR typeof(OLD."v") <> typeof(NEW."v") OR (NEW."v" = 0 AND typeof(NEW."v") = 'real') BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (3, 2, julianday(), NEW."k", 2); END;
CREATE TRIGGER "fieldsync_rekey_3" AFTER UPDATE OF "k" ON "tag" WHEN NEW."k" IS NOT OLD."k" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (3, 3, julianday(), OLD."k"); INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (3, 1, julianday(), NEW."k"); END;
CREATE TRIGGER "fieldsync_delete_3" AFTER DELETE ON "tag" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (3, 3, julianday(), OLD."k"); END;
CREATE TRIGGER "fieldsync_insert_4" AFTER INSERT ON "place" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (4, 1, julianday(), NEW."id"); END;
CREATE TRIGGER "fieldsync_update_4_1" AFTER UPDATE OF "name" ON "place" WHEN OLD."name" IS NOT NEW."name" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (4, 2, julianday(), NEW."id", 2); END;
CREATE TRIGGER "fieldsync_update_4_2" AFTER UPDATE OF "parent" ON "place" WHEN OLD."parent" IS NOT NEW."parent" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (4, 2, julianday(), NEW."id", 4); END;
CREATE TRIGGER "fieldsync_update_4_3" AFTER UPDATE OF "person" ON "place" WHEN OLD."person" IS NOT NEW."person" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (4, 2, julianday(), NEW."id", 8); END;
CREATE TRIGGER "fieldsync_rekey_4" AFTER UPDATE OF "id" ON "place" WHEN NEW."id" IS NOT OLD."id" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (4, 3, julianday(), OLD."id"); INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (4, 1, julianday(), NEW."id"); END;
CREATE TRIGGER "fieldsync_delete_4" AFTER DELETE ON "place" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (4, 3, julianday(), OLD."id"); END;
CREATE TRIGGER "fieldsync_insert_5" AFTER INSERT ON "opt" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (5, 1, julianday(), NEW."rowid"); END;
CREATE TRIGGER "fieldsync_update_5_1" AFTER UPDATE OF "field" ON "opt" WHEN OLD."field" IS NOT NEW."field" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (5, 2, julianday(), NEW."rowid", 2); END;
CREATE TRIGGER "fieldsync_update_5_2" AFTER UPDATE OF "code" ON "opt" WHEN OLD."code" IS NOT NEW."code" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (5, 2, julianday(), NEW."rowid", 4); END;
CREATE TRIGGER "fieldsync_update_5_3" AFTER UPDATE OF "label" ON "opt" WHEN OLD."label" IS NOT NEW."label" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0, m0) VALUES (5, 2, julianday(), NEW."rowid", 8); END;
CREATE TRIGGER "fieldsync_delete_5" AFTER DELETE ON "opt" BEGIN INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (5, 3, julianday(), OLD."rowid"); END;
COMMIT;
