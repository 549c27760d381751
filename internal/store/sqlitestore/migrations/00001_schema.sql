-- +goose Up
-- records: every domain object, as JSON, with the fields the store indexes.
-- seq is the creation order (the rowid); id is the object's stable ID.
CREATE TABLE records (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	id         TEXT    NOT NULL UNIQUE,
	kind       TEXT    NOT NULL,
	project_id TEXT    NOT NULL DEFAULT '',
	parent     TEXT    NOT NULL DEFAULT '',
	name       TEXT    NOT NULL DEFAULT '',
	state      TEXT    NOT NULL DEFAULT '',
	revision   INTEGER NOT NULL,
	data       TEXT    NOT NULL
);
CREATE INDEX records_kind_seq ON records (kind, seq);
CREATE INDEX records_kind_project ON records (kind, project_id, seq);
CREATE INDEX records_kind_parent ON records (kind, parent, seq);

-- audit: the hash-chained audit log, one column per field so that a row
-- edited by hand no longer matches its hash.
CREATE TABLE audit (
	seq        INTEGER PRIMARY KEY,
	time       TEXT NOT NULL, -- UTC, RFC 3339 with nanoseconds
	actor      TEXT NOT NULL,
	project_id TEXT NOT NULL DEFAULT '',
	action     TEXT NOT NULL,
	target     TEXT NOT NULL DEFAULT '',
	request_id TEXT NOT NULL DEFAULT '',
	source     TEXT NOT NULL DEFAULT '',
	outcome    TEXT NOT NULL,
	detail     TEXT NOT NULL DEFAULT '',
	prev_hash  TEXT NOT NULL,
	hash       TEXT NOT NULL
);
CREATE INDEX audit_project ON audit (project_id, seq);

CREATE TABLE checkpoints (
	seq       INTEGER PRIMARY KEY,
	hash      TEXT NOT NULL,
	time      TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	signature TEXT NOT NULL
);

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', CAST('0' AS BLOB));

CREATE TABLE idempotency (
	key          TEXT PRIMARY KEY,
	request_hash TEXT    NOT NULL,
	status       INTEGER NOT NULL,
	body         BLOB    NOT NULL,
	created_at   INTEGER NOT NULL
);

-- +goose Down
DROP TABLE idempotency;
DROP TABLE meta;
DROP TABLE checkpoints;
DROP TABLE audit;
DROP TABLE records;
