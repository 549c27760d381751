-- +goose Up
-- records: every domain object, as JSON, with the fields the store indexes.
-- seq is the creation order; read-write transactions are serialized, so
-- it is also the commit order.
CREATE TABLE records (
	id         text   PRIMARY KEY,
	seq        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	kind       text   NOT NULL,
	project_id text   NOT NULL DEFAULT '',
	parent     text   NOT NULL DEFAULT '',
	name       text   NOT NULL DEFAULT '',
	state      text   NOT NULL DEFAULT '',
	revision   bigint NOT NULL,
	data       jsonb  NOT NULL
);
CREATE INDEX records_kind_seq ON records (kind, seq);
CREATE INDEX records_kind_project ON records (kind, project_id, seq);
CREATE INDEX records_kind_parent ON records (kind, parent, seq);

-- audit: the hash-chained audit log, one column per field so that a row
-- edited by hand no longer matches its hash. time is text (UTC, RFC 3339
-- with nanoseconds): timestamptz would round the hashed value to
-- microseconds.
CREATE TABLE audit (
	seq        bigint PRIMARY KEY,
	time       text NOT NULL,
	actor      text NOT NULL,
	project_id text NOT NULL DEFAULT '',
	action     text NOT NULL,
	target     text NOT NULL DEFAULT '',
	request_id text NOT NULL DEFAULT '',
	source     text NOT NULL DEFAULT '',
	outcome    text NOT NULL,
	detail     text NOT NULL DEFAULT '',
	prev_hash  text NOT NULL,
	hash       text NOT NULL
);
CREATE INDEX audit_project ON audit (project_id, seq);

CREATE TABLE checkpoints (
	seq       bigint PRIMARY KEY,
	hash      text NOT NULL,
	time      text NOT NULL,
	key_id    text NOT NULL,
	signature text NOT NULL
);

-- meta: small server-wide values. 'revision' is the desired-state
-- revision (decimal); every read-write transaction locks its row first.
CREATE TABLE meta (
	key   text  PRIMARY KEY,
	value bytea NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', convert_to('0', 'UTF8'));

CREATE TABLE idempotency (
	key          text    PRIMARY KEY,
	request_hash text    NOT NULL,
	status       integer NOT NULL,
	body         bytea   NOT NULL,
	created_at   bigint  NOT NULL
);

-- +goose Down
DROP TABLE idempotency;
DROP TABLE meta;
DROP TABLE checkpoints;
DROP TABLE audit;
DROP TABLE records;
