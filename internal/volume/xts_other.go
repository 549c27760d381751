//go:build !amd64

package volume

const useAESNI = false

func xtsEncAESNI(xk, dst, src, tw *byte, n int) { panic("unreachable") }
func xtsDecAESNI(xk, dst, src, tw *byte, n int) { panic("unreachable") }
