// Package ops is operator access to nodes (break-glass SSH, design 0012):
//
//   - CA issues the short-lived user certificate of a grant (principal
//     moat-ops, KeyId the grant, its serial, source-address, permit-pty
//     only, at most an hour) and the nodes' host certificates. Keys are
//     returned as bytes for the control plane to seal.
//   - Server is a node's SSH endpoint: it accepts only those certificates,
//     for live grants, from the certificate's source addresses; refuses and
//     audits passwords, plain keys, foreign CAs, expired, wrong-principal
//     and revoked certificates and every kind of forwarding; runs commands
//     and shells through a Runner (ShellRunner: a shell as the operator
//     account, on a pty when asked); audits sessions and commands; records
//     terminal sessions as asciicast v2 (package ops/asciicast); and ends a
//     session when its grant is revoked or its certificate expires.
//     Event.AuditEntry turns its events into audit log entries.
//   - Client is the CLI's side: a session key made in memory, Go's SSH
//     client, or the files and arguments for Debian's ssh with the host CA
//     pinned through @cert-authority.
//   - Spool is the agent's durable outbox: events and recordings on disk
//     until the control plane has them, numbered so that it takes each
//     event once.
//
// The control plane (grants, sealing, the audit log, storing recordings),
// the agent (running a Server per node on the operator path, with a Spool)
// and the CLI import it.
package ops
