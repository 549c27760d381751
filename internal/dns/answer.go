package dns

import (
	"strings"

	miekg "github.com/miekg/dns"
)

// maxUDPSize is the largest UDP response we send, whatever the client
// advertises (the DNS flag day 2020 value, safe from fragmentation).
const maxUDPSize = 1232

// SOA timers. Nothing transfers the zone, so only the negative-caching TTL
// (the SOA minimum, set to the record TTL) matters to resolvers.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// respond computes the answer to req from zone z (nil: none loaded yet).
// origin is the server's canonical domain, used when z is nil; ttl is the
// TTL of every record, in seconds; tcp tells whether the response may be
// larger than the client's UDP buffer. It is pure and never returns nil.
func respond(z *Zone, origin string, ttl uint32, req *miekg.Msg, tcp bool) *miekg.Msg {
	m := new(miekg.Msg)
	m.SetReply(req)
	m.Compress = true
	m.RecursionAvailable = false

	// EDNS0 (RFC 6891): at most one OPT; version 0 only; echo DO.
	var opt *miekg.OPT
	nopt := 0
	for _, rr := range req.Extra {
		if o, ok := rr.(*miekg.OPT); ok {
			opt = o
			nopt++
		}
	}
	finish := func(rcode int) *miekg.Msg {
		m.Rcode = rcode
		if opt != nil {
			o := new(miekg.OPT)
			o.Hdr.Name = "."
			o.Hdr.Rrtype = miekg.TypeOPT
			o.SetUDPSize(maxUDPSize)
			o.SetDo(opt.Do())
			m.Extra = append(m.Extra, o)
		}
		if rcode != miekg.RcodeSuccess && rcode != miekg.RcodeNameError {
			m.Answer, m.Ns = nil, nil
			if opt != nil {
				m.Extra = m.Extra[len(m.Extra)-1:]
			} else {
				m.Extra = nil
			}
		}
		if !tcp {
			size := miekg.MinMsgSize
			if opt != nil {
				size = max(size, min(int(opt.UDPSize()), maxUDPSize))
			}
			m.Truncate(size)
		}
		return m
	}

	if nopt > 1 {
		opt = nil
		return finish(miekg.RcodeFormatError)
	}
	if opt != nil && opt.Version() != 0 {
		return finish(miekg.RcodeBadVers)
	}
	if req.Opcode != miekg.OpcodeQuery {
		return finish(miekg.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return finish(miekg.RcodeFormatError)
	}
	q := req.Question[0]
	owner, ok := normalName(q.Name)
	if !ok {
		m.Question = nil // it would not pack
		return finish(miekg.RcodeFormatError)
	}
	m.Question[0].Name = owner
	name := strings.ToLower(owner)
	if q.Qclass != miekg.ClassINET {
		return finish(miekg.RcodeRefused)
	}
	if z == nil {
		if miekg.IsSubDomain(origin, name) {
			return finish(miekg.RcodeServerFailure)
		}
		return finish(miekg.RcodeRefused)
	}
	if !miekg.IsSubDomain(z.origin, name) {
		return finish(miekg.RcodeRefused)
	}
	switch q.Qtype {
	case miekg.TypeAXFR, miekg.TypeIXFR:
		return finish(miekg.RcodeRefused)
	}
	m.Authoritative = true

	hdr := func(owner string, t uint16) miekg.RR_Header {
		return miekg.RR_Header{Name: owner, Rrtype: t, Class: miekg.ClassINET, Ttl: ttl}
	}
	soa := func(owner string) miekg.RR {
		return &miekg.SOA{Hdr: hdr(owner, miekg.TypeSOA), Ns: z.ns[0], Mbox: "hostmaster." + z.origin,
			Serial: z.serial, Refresh: soaRefresh, Retry: soaRetry, Expire: soaExpire, Minttl: ttl}
	}
	noData := func() *miekg.Msg {
		m.Ns = append(m.Ns, soa(z.origin))
		return finish(miekg.RcodeSuccess)
	}
	as := func(owner, name string) []miekg.RR {
		var rrs []miekg.RR
		for _, a := range z.hosts[name] {
			rrs = append(rrs, &miekg.A{Hdr: hdr(owner, miekg.TypeA), A: a.AsSlice()})
		}
		return rrs
	}

	if name == z.origin {
		var nss []miekg.RR
		for _, n := range z.ns {
			nss = append(nss, &miekg.NS{Hdr: hdr(owner, miekg.TypeNS), Ns: n})
		}
		switch q.Qtype {
		case miekg.TypeSOA:
			m.Answer = append(m.Answer, soa(owner))
		case miekg.TypeNS:
			m.Answer = append(m.Answer, nss...)
		case miekg.TypeANY:
			m.Answer = append(m.Answer, soa(owner))
			m.Answer = append(m.Answer, nss...)
		default:
			return noData()
		}
		if q.Qtype != miekg.TypeSOA {
			for _, n := range z.ns {
				m.Extra = append(m.Extra, as(n, n)...)
			}
		}
		return finish(miekg.RcodeSuccess)
	}
	if _, ok := z.hosts[name]; ok {
		switch q.Qtype {
		case miekg.TypeA, miekg.TypeANY:
			m.Answer = append(m.Answer, as(owner, name)...)
			return finish(miekg.RcodeSuccess)
		}
		return noData()
	}
	if z.ents[name] {
		return noData()
	}
	m.Ns = append(m.Ns, soa(z.origin))
	return finish(miekg.RcodeNameError)
}

// normalName returns name fully qualified and in the escaping the wire
// decoder produces (so `\077oat.test.` becomes `Moat.test.`), keeping its
// case; false if it is not a valid domain name.
func normalName(name string) (string, bool) {
	buf := make([]byte, 256)
	n, err := miekg.PackDomainName(miekg.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return "", false
	}
	out, _, err := miekg.UnpackDomainName(buf[:n], 0)
	if err != nil {
		return "", false
	}
	return out, true
}
