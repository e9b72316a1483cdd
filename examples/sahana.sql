-- A Sahana-like relief database, as `fieldsync demo` uses it.
--
-- The location hierarchy (L0 country, L1 province, L2 district, L3
-- village) points to itself through `parent`; people, shelters and requests
-- point to locations, organisations and shelters. Keys are text uuids so
-- that records created on different laptops never collide. Codes are
-- unique, so two officers who register the same shelter code on two
-- laptops produce a clash that fieldsync quarantines for an operator.
--
-- The app writes with `PRAGMA foreign_keys = ON`; fieldsync imports rows in
-- any order and keeps a row whose parent has not arrived in quarantine.

CREATE TABLE location(
  id TEXT PRIMARY KEY,
  parent TEXT REFERENCES location(id),
  level TEXT NOT NULL CHECK (level IN ('L0', 'L1', 'L2', 'L3')),
  name TEXT NOT NULL,
  code TEXT UNIQUE,
  lat REAL,
  lon REAL
);
CREATE INDEX location_parent ON location(parent);

CREATE TABLE organisation(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  acronym TEXT,
  kind TEXT
);

CREATE TABLE person(
  id TEXT PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT,
  gender TEXT,
  age INTEGER,
  status TEXT NOT NULL CHECK (status IN ('missing', 'found', 'deceased')),
  location TEXT REFERENCES location(id),
  reported_by TEXT REFERENCES organisation(id),
  note TEXT
);
CREATE INDEX person_location ON person(location);

CREATE TABLE shelter(
  id TEXT PRIMARY KEY,
  code TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  location TEXT NOT NULL REFERENCES location(id),
  organisation TEXT REFERENCES organisation(id),
  capacity INTEGER NOT NULL CHECK (capacity >= 0),
  population INTEGER NOT NULL DEFAULT 0 CHECK (population >= 0)
);
CREATE INDEX shelter_location ON shelter(location);

CREATE TABLE request(
  id TEXT PRIMARY KEY,
  shelter TEXT NOT NULL REFERENCES shelter(id),
  item TEXT NOT NULL,
  quantity INTEGER NOT NULL CHECK (quantity > 0),
  priority TEXT CHECK (priority IN ('low', 'medium', 'high')),
  status TEXT NOT NULL DEFAULT 'open'
);
CREATE INDEX request_shelter ON request(shelter);
