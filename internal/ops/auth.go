package ops

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/domain"
)

// Reasons of refusals, in Event.Reason. Stable: audit readers filter on them.
const (
	// Authentication.
	ReasonPassword            = "password"
	ReasonKeyboardInteractive = "keyboard_interactive"
	ReasonPlainKey            = "plain_key"
	ReasonNotUserCert         = "not_user_certificate"
	ReasonUnknownCA           = "unknown_ca"
	ReasonBadSignature        = "bad_signature"
	ReasonWrongPrincipal      = "wrong_principal"
	ReasonUnsupportedOption   = "unsupported_option"
	ReasonNotYetValid         = "not_yet_valid"
	ReasonExpired             = "expired"
	ReasonValidityTooLong     = "validity_too_long"
	ReasonSourceAddress       = "source_address"
	ReasonUnknownGrant        = "unknown_grant"
	ReasonRevoked             = "revoked"
	ReasonInvalidCert         = "invalid_certificate"
	// ReasonHandshake is a connection that ended before authenticating
	// without offering anything refused above.
	ReasonHandshake = "handshake"

	// Requests of an authenticated session.
	ReasonPortForwarding  = "port_forwarding"
	ReasonAgentForwarding = "agent_forwarding"
	ReasonX11Forwarding   = "x11_forwarding"
	ReasonSubsystem       = "subsystem"
	ReasonChannelType     = "channel_type"
	ReasonPTYNotPermitted = "pty_not_permitted"
	ReasonRecording       = "recording_unavailable"
)

// refusal is an authentication refusal: the reason for the audit log and
// the detail for a reader.
type refusal struct {
	reason, detail string
	// grantID and serial are set once the certificate's signature is
	// verified (before that they are only claims).
	grantID string
	serial  uint64
}

func (r *refusal) Error() string { return "ssh: refused (" + r.reason + "): " + r.detail }

func refuse(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, detail: fmt.Sprintf(format, args...)}
}

// checkCert decides whether key may log in as user from remote at now,
// trusting userCA. It checks what the certificate itself says; revocation
// and the grant's liveness are the server's.
func checkCert(key ssh.PublicKey, user string, remote net.Addr, now time.Time, userCA ssh.PublicKey) (*ssh.Certificate, *refusal) {
	c, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, refuse(ReasonPlainKey, "a plain %s key, not a certificate", key.Type())
	}
	if c.CertType != ssh.UserCert {
		return nil, refuse(ReasonNotUserCert, "certificate type %d", c.CertType)
	}
	if !bytes.Equal(c.SignatureKey.Marshal(), userCA.Marshal()) {
		return nil, refuse(ReasonUnknownCA, "signed by %s, not the operators' CA", ssh.FingerprintSHA256(c.SignatureKey))
	}
	if err := c.SignatureKey.Verify(certBytesForSigning(c), c.Signature); err != nil {
		return nil, refuse(ReasonBadSignature, "serial %d: signature does not verify", c.Serial)
	}
	who := fmt.Sprintf("serial %d key id %q", c.Serial, c.KeyId)
	if r := checkSignedCert(c, user, remote, now, userCA, who); r != nil {
		r.grantID, r.serial = c.KeyId, c.Serial
		return nil, r
	}
	return c, nil
}

// checkSignedCert is checkCert for a certificate whose signature verified.
func checkSignedCert(c *ssh.Certificate, user string, remote net.Addr, now time.Time, userCA ssh.PublicKey, who string) *refusal {
	if user != domain.OpsPrincipal {
		return refuse(ReasonWrongPrincipal, "%s: login as %q, only %q is allowed", who, user, domain.OpsPrincipal)
	}
	hasPrincipal := false
	for _, p := range c.ValidPrincipals {
		hasPrincipal = hasPrincipal || p == domain.OpsPrincipal
	}
	if !hasPrincipal {
		return refuse(ReasonWrongPrincipal, "%s: principals %q do not include %q", who, c.ValidPrincipals, domain.OpsPrincipal)
	}
	for opt := range c.CriticalOptions {
		if opt != sourceAddressOption {
			return refuse(ReasonUnsupportedOption, "%s: critical option %q", who, opt)
		}
	}
	for ext := range c.Extensions {
		if _, ok := OpsExtensions[ext]; !ok {
			return refuse(ReasonUnsupportedOption, "%s: extension %q", who, ext)
		}
	}
	unix := now.Unix()
	switch {
	case int64(c.ValidAfter) < 0 || unix < int64(c.ValidAfter):
		return refuse(ReasonNotYetValid, "%s: valid after %s", who, time.Unix(int64(c.ValidAfter), 0).UTC().Format(time.RFC3339))
	case int64(c.ValidBefore) < 0 || unix >= int64(c.ValidBefore):
		return refuse(ReasonExpired, "%s: expired at %s", who, time.Unix(int64(c.ValidBefore), 0).UTC().Format(time.RFC3339))
	case time.Duration(c.ValidBefore-c.ValidAfter)*time.Second > domain.MaxOpsTTL+domain.OpsClockSkew:
		return refuse(ReasonValidityTooLong, "%s: valid for %s", who, time.Duration(c.ValidBefore-c.ValidAfter)*time.Second)
	}
	src, ok := c.CriticalOptions[sourceAddressOption]
	if !ok {
		return refuse(ReasonSourceAddress, "%s: no source-address restriction", who)
	}
	prefixes, err := parseSourceAddress(src)
	if err != nil {
		return refuse(ReasonSourceAddress, "%s: %v", who, err)
	}
	from, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return refuse(ReasonSourceAddress, "%s: remote address %s: %v", who, remote, err)
	}
	allowed := false
	for _, p := range prefixes {
		allowed = allowed || p.Contains(from.Addr().Unmap())
	}
	if !allowed {
		return refuse(ReasonSourceAddress, "%s: %s is not in %s", who, from.Addr(), src)
	}
	if !domain.ValidID(domain.PrefixOpsGrant, c.KeyId) {
		return refuse(ReasonUnknownGrant, "%s: key id is not a grant", who)
	}
	// The library's own check, as a second opinion on everything above.
	checker := ssh.CertChecker{
		SupportedCriticalOptions: []string{sourceAddressOption},
		IsUserAuthority:          func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), userCA.Marshal()) },
		Clock:                    func() time.Time { return now },
	}
	if err := checker.CheckCert(user, c); err != nil {
		return refuse(ReasonInvalidCert, "%s: %v", who, err)
	}
	return nil
}

// certBytesForSigning is what a certificate's signature covers: the
// certificate without its signature (x/crypto/ssh's unexported
// bytesForSigning).
func certBytesForSigning(c *ssh.Certificate) []byte {
	c2 := *c
	c2.Signature = nil
	out := c2.Marshal()
	return out[:len(out)-4] // the empty signature's length
}
