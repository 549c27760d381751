// Package backup implements Moat's encrypted backup file formats as plain
// io.Writer and io.Reader streams.
//
// Two formats are supported:
//
//   - moat1, the format Moat writes. A fresh random AES-256 key, a 512-bit
//     HMAC key and a nonce prefix are wrapped with the service's RSA public key
//     (RSA-OAEP-SHA256) in an authenticated header. The body is split into
//     segments of [SegmentSize] plaintext bytes, each encrypted with
//     AES-256-CTR in its own counter space and followed by an HMAC-SHA256 tag
//     that binds the header, the segment index and whether the segment is the
//     last. The reader releases no byte of a segment before its tag verifies,
//     and a stream that ends before its final segment is an error
//     ([ErrTruncated]). Optional zstd compression happens before encryption.
//
//   - pghoa1, the older single-MAC format of pghoard/rohmu, read so existing
//     backups can be imported and written only on request. It is weaker: the
//     whole file has one MAC, so a reader must see the entire file before it
//     may release any plaintext (see [NewPghoa1Reader]).
//
// Both formats are public-key encryption without sender authentication:
// anyone holding a service's public key can produce a valid file. The
// formats protect confidentiality and detect modification of a file; they do
// not prove who wrote it. Package archive does, with records MACed under
// [AuthKey] that pin a moat1 file by its header ([HeaderDigest],
// [NewPinnedReader]).
//
// Who may import it: package archive (WAL and base backups written on a
// node, which holds only the public key, and read back by a restore, with
// the private key), the reconcilers (the services' key pairs), the CLI
// (moat backup inspect, encrypt, decrypt, with keys the user holds) and the
// benchmarks. It does no I/O of its own besides the optional temp
// file used to spool pghoa1 input; storage is package objstore's job.
package backup
