// Package archive is WAL archiving and restore for a node: the
// archive_command and restore_command of PostgreSQL (Push and Fetch,
// behind `moat wal-push` and `moat wal-fetch`; on a Moat node both go
// through the agent's per-node socket, Server, PushVia and FetchVia, so
// that nodes never open the store), and streamed encrypted base backups
// with their listing and retention.
//
// Every file it stores is encrypted by package backup (moat1, zstd) to the
// service's RSA public key; only a restore's configuration names a private
// key. Two kinds of small object are stored in the clear, hold no database
// content, and are MACed with the service's authentication key
// (backup.AuthKey), bound to their object's key (see auth.go):
//
//   - a base backup's manifest (<label>.json: label, start and end LSN,
//     timeline, times, sizes, key fingerprint, the digest of the tar's
//     moat1 header), so that listing and retention need no private key;
//   - beside every archived WAL file, <name>.digest: an HMAC of its
//     plaintext (Push tells an identical re-archive, success, from a
//     different file under the same name, refused, as PostgreSQL
//     requires) and the digest of its moat1 header.
//
// Readers refuse anything the key does not authenticate
// ([ErrUnauthenticated]) and read each object pinned to its header.
//
// Object keys follow objstore.Key: WAL files are stored under the timeline
// their name starts with (00000002.history under 00000002), base backups
// under the configuration's timeline.
//
// Exit codes of the commands built on it (see internal/cli/wal.go) follow
// the PostgreSQL documentation: archive_command and restore_command must
// exit 0 only on success; restore_command is asked for files that are not
// in the archive and must then exit non-zero, which is not an error; an
// exit status above 125 (what a shell returns for "command not found")
// aborts recovery.
//
// Base backups run pg_basebackup with -D - -Ft -X none: the tar of the data
// directory streams from its stdout through the encrypting writer into the
// object store with no local copy. Writing to stdout needs a cluster with a
// single tablespace (pg_basebackup refuses otherwise), and -X none means
// the backup is restorable only with the archived WAL from its start LSN
// on.
//
// Who may import it: internal/cli (the commands), the agent, the API
// server (listing) and the reconciler (retention).
package archive
