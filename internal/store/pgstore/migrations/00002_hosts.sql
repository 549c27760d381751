-- +goose Up
-- A node's host, so that a host's desired state is read by host.
ALTER TABLE records ADD COLUMN host text NOT NULL DEFAULT '';
UPDATE records SET host = COALESCE(data->>'host', '') WHERE kind = 'node';
CREATE INDEX records_kind_host ON records (kind, host, seq);

-- host_revisions: each host's desired-state revision, the global
-- revision of the last change that affected it; host '*' is the last
-- change that affected every host. A host's revision is the greater of
-- its row and '*'. Rows with a revision above one a server has read are
-- the change feed that wakes only the affected hosts' long polls.
CREATE TABLE host_revisions (
	host     text   PRIMARY KEY,
	revision bigint NOT NULL
);
CREATE INDEX host_revisions_revision ON host_revisions (revision);
INSERT INTO host_revisions (host, revision)
	SELECT '*', convert_from(value, 'UTF8')::bigint FROM meta WHERE key = 'revision';

-- +goose Down
DROP TABLE host_revisions;
DROP INDEX records_kind_host;
ALTER TABLE records DROP COLUMN host;
