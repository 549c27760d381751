//go:build !unix

package objstore

// Elsewhere (the tenant CLI on Windows, which reads backup files offline
// and never serves a store) the flags do not exist; os.Root still refuses
// links that leave the root.
const (
	oNoFollow  = 0
	oDirectory = 0
)
