-- A relief database shaped like Sahana Eden's, as `fieldsync demo` and the
-- README's walkthrough use it.
--
-- As in Eden (web2py), every table is numbered by the database itself
-- (`id INTEGER PRIMARY KEY AUTOINCREMENT`) and carries a `uuid` that the
-- app gives each record once and never changes; here a DEFAULT stands in
-- for the app's `"urn:uuid:%s" % uuid4()`. References are integer ids, so
-- two laptops that each add a record get the same id for different
-- records: fieldsync is told to know rows by their uuid
-- (`fieldsync track --all --identity uuid`) and writes every reference as
-- the id the parent row has in the database that receives it. Every record
-- has `created_on`, `modified_on` and a `deleted` flag (Eden archives rather
-- than deletes).
--
-- The location hierarchy (L0 country, L1 province, L2 district, L3 village)
-- points at itself through `parent`; people, shelters and requests point at
-- locations, organisations and shelters. Shelter codes are unique, so two
-- officers who give the same code to two shelters on two laptops produce a
-- clash that fieldsync holds in quarantine for an operator.
--
-- `field_options` has no key at all, like the option table of Sahana's PHP
-- version: fieldsync knows its rows by their content.
--
-- The app writes with `PRAGMA foreign_keys = ON` (web2py turns it on for
-- every connection); fieldsync imports rows in any order and keeps a row
-- whose parent has not arrived in quarantine until it has.

CREATE TABLE gis_location(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid TEXT NOT NULL UNIQUE DEFAULT ('urn:uuid:' || lower(hex(randomblob(16)))),
  name TEXT NOT NULL,
  level TEXT CHECK (level IN ('L0', 'L1', 'L2', 'L3')),
  code TEXT UNIQUE,
  parent INTEGER REFERENCES gis_location(id) ON DELETE RESTRICT,
  lat REAL,
  lon REAL,
  created_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  modified_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX gis_location_parent ON gis_location(parent);

CREATE TABLE org_organisation(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid TEXT NOT NULL UNIQUE DEFAULT ('urn:uuid:' || lower(hex(randomblob(16)))),
  name TEXT NOT NULL UNIQUE,
  acronym TEXT,
  organisation_type TEXT,
  created_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  modified_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);

CREATE TABLE pr_person(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid TEXT NOT NULL UNIQUE DEFAULT ('urn:uuid:' || lower(hex(randomblob(16)))),
  first_name TEXT NOT NULL,
  last_name TEXT,
  gender TEXT,
  age INTEGER,
  missing_status TEXT NOT NULL CHECK (missing_status IN ('missing', 'found', 'deceased')),
  location_id INTEGER REFERENCES gis_location(id),
  organisation_id INTEGER REFERENCES org_organisation(id),
  comments TEXT,
  created_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  modified_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX pr_person_location ON pr_person(location_id);

CREATE TABLE cr_shelter(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid TEXT NOT NULL UNIQUE DEFAULT ('urn:uuid:' || lower(hex(randomblob(16)))),
  code TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  location_id INTEGER NOT NULL REFERENCES gis_location(id),
  organisation_id INTEGER REFERENCES org_organisation(id),
  capacity INTEGER NOT NULL CHECK (capacity >= 0),
  population INTEGER NOT NULL DEFAULT 0 CHECK (population >= 0),
  created_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  modified_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX cr_shelter_location ON cr_shelter(location_id);

CREATE TABLE req_req(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid TEXT NOT NULL UNIQUE DEFAULT ('urn:uuid:' || lower(hex(randomblob(16)))),
  shelter_id INTEGER NOT NULL REFERENCES cr_shelter(id),
  item TEXT NOT NULL,
  quantity INTEGER NOT NULL CHECK (quantity > 0),
  priority TEXT CHECK (priority IN ('low', 'medium', 'high')),
  req_status TEXT NOT NULL DEFAULT 'open',
  created_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  modified_on TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX req_req_shelter ON req_req(shelter_id);

-- The choices the app's forms offer, with no key, as in Sahana PHP.
CREATE TABLE field_options(
  field_name TEXT NOT NULL,
  option_code TEXT NOT NULL,
  option_description TEXT
);
INSERT INTO field_options VALUES
  ('missing_status', 'missing', 'Missing'),
  ('missing_status', 'found', 'Found'),
  ('missing_status', 'deceased', 'Deceased'),
  ('priority', 'low', 'Low'),
  ('priority', 'medium', 'Medium'),
  ('priority', 'high', 'High'),
  ('organisation_type', 'ngo', 'Non-governmental organisation'),
  ('organisation_type', 'un', 'UN agency'),
  ('organisation_type', 'gov', 'Government');
