//go:build unix

package objstore

import "syscall"

// Open flags that refuse a link in the last path element and a non-directory.
const (
	oNoFollow  = syscall.O_NOFOLLOW
	oDirectory = syscall.O_DIRECTORY
)
