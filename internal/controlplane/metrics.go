package controlplane

import (
	"crypto/x509"

	"github.com/moatdb/moat/internal/metrics"
)

// observeCerts records when the API's certificate and the internal CA
// expire (project CAs and nodes' certificates: the reconciler's passes).
func (cp *ControlPlane) observeCerts() {
	if len(cp.tlsCfg.Certificates) > 0 && len(cp.tlsCfg.Certificates[0].Certificate) > 0 {
		if c, err := x509.ParseCertificate(cp.tlsCfg.Certificates[0].Certificate[0]); err == nil {
			cp.Metrics.CertExpiry(metrics.CertAPI, "", "", c.NotAfter)
		}
	}
	cp.Metrics.CertExpiry(metrics.CertInternalCA, "", "", cp.InternalCA.Cert.NotAfter)
}
