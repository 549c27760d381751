//go:build !amd64

package volume

const (
	useAESNI = false
	useVAES  = false
)

func xtsEncAESNI(xk, dst, src, tweak, scratch *byte, n int) { panic("unreachable") }
func xtsDecAESNI(xk, dst, src, tweak, scratch *byte, n int) { panic("unreachable") }
func xtsEncVAES(yk, dst, src, tw, nt *byte, n int)          { panic("unreachable") }
func xtsDecVAES(yk, dst, src, tw, nt *byte, n int)          { panic("unreachable") }
