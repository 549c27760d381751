// Package volume is a node's encrypted volume: a sparse file holding a LUKS2
// container (aes-xts-plain64, 512-bit key, sha256 digest, 4096-byte
// sectors) whose header has the key's digest and no keyslot, so nothing on
// disk can unlock it. The 64-byte key is random, made for one volume, and
// lives only in the memory of the process that serves the volume (and in the
// kernel, where dm-crypt holds it).
//
// Two ways serve the same bytes. Where device-mapper exists, cryptsetup
// opens the container (the key through a pipe). Elsewhere (containers, CI)
// the userspace engine in this package decrypts the data area, FUSE exposes
// it as one file, a loop device with 4096-byte blocks sits on that file, and
// ext4 on the loop device is mounted where the node keeps its data.
//
// Serve is the body of the long-lived volume server (one process per
// volume, outliving the agent); Format, Unmount, Destroy and Stat are what
// the agent calls. Only the agent, its CLI entry point and bench/volume
// import this package. docs/design/0011-encrypted-volumes.md has the why.
package volume
