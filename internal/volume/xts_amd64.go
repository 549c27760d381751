package volume

//go:generate go run gen_xts_amd64.go

import "golang.org/x/sys/cpu"

var (
	useAESNI = cpu.X86.HasAES && cpu.X86.HasSSE41
	useVAES  = useAESNI && cpu.X86.HasAVX2 && cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ
)

// xtsEncAESNI computes dst[i] = E(src[i] ^ T[i]) ^ T[i] for n 16-byte
// blocks (n a multiple of 8) with the 15 AES-256 round keys at xk, where
// T[0] is the 16 bytes at tweak and T[i+1] = T[i]·α. scratch is 128 bytes
// the function uses for the tweaks of eight blocks in flight.
//
// xts_amd64.s is written by gen_xts_amd64.go.
//
//go:noescape
func xtsEncAESNI(xk, dst, src, tweak, scratch *byte, n int)

// xtsDecAESNI is xtsEncAESNI with decryption (xk: the inverse-cipher keys).
//
//go:noescape
func xtsDecAESNI(xk, dst, src, tweak, scratch *byte, n int)

// xtsEncVAES is xtsEncAESNI sixteen blocks at a time (n a multiple of
// 16) with VAES on YMM registers: yk holds each round key twice, tw the
// first sixteen tweaks; nt is 256 bytes of scratch.
//
//go:noescape
func xtsEncVAES(yk, dst, src, tw, nt *byte, n int)

// xtsDecVAES is xtsEncVAES with decryption.
//
//go:noescape
func xtsDecVAES(yk, dst, src, tw, nt *byte, n int)
