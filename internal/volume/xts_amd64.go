package volume

import "golang.org/x/sys/cpu"

var useAESNI = cpu.X86.HasAES && cpu.X86.HasSSE41

// xtsEncAESNI computes dst[i] = E(src[i] ^ tw[i]) ^ tw[i] for n 16-byte
// blocks (n a multiple of 8) with the 15 AES-256 round keys at xk.
//
//go:noescape
func xtsEncAESNI(xk, dst, src, tw *byte, n int)

// xtsDecAESNI is xtsEncAESNI with decryption (xk: the inverse-cipher keys).
//
//go:noescape
func xtsDecAESNI(xk, dst, src, tw *byte, n int)
