package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/moatdb/moat/internal/domain"
)

// DefaultProbeTimeout is how long Verify waits for a SYN to be answered.
const DefaultProbeTimeout = time.Second

// Source describes addr as the simulated cloud knows it, for
// domain.Explain: a simulated host's address (its network, routes and
// egress rules), a customer VPC's NAT address (on the internet), or
// neither (the address alone).
func (s *Sim) Source(ctx context.Context, addr netip.Addr) (domain.Source, error) {
	addr = addr.Unmap()
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return domain.Source{}, fmt.Errorf("simulated hosts: %w", err)
	}
	for _, h := range hosts {
		if h.Addr == addr {
			return s.hostSource(ctx, h)
		}
	}
	vpcs, err := s.ListVPCs(ctx)
	if err != nil {
		return domain.Source{}, fmt.Errorf("customer VPCs: %w", err)
	}
	for _, v := range vpcs {
		if v.NATAddr == addr {
			return domain.Source{Addr: addr, Internet: true}, nil
		}
	}
	return domain.Source{Addr: addr}, nil
}

// hostSource describes simulated host h: on the internet, or in a customer
// VPC with its routes and h's egress rules.
func (s *Sim) hostSource(ctx context.Context, h Host) (domain.Source, error) {
	src := domain.Source{Addr: h.Addr}
	if h.Network == NetworkInternet {
		src.Internet = true
		return src, nil
	}
	v, err := s.VPC(ctx, h.Network)
	if err != nil {
		return domain.Source{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	cv := &domain.CustomerVPC{ID: v.ID, CIDR: v.CIDR, NAT: v.NATAddr}
	routes, err := s.ListRoutes(ctx, v.ID)
	if err != nil {
		return domain.Source{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	for _, r := range routes {
		cv.Routes = append(cv.Routes, domain.CustomerRoute{Destination: r.Destination, PeeringCloudID: r.Target, Active: r.State == RouteActive})
	}
	rules, err := s.ListEgress(ctx, h.Name)
	if err != nil {
		return domain.Source{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	for _, r := range rules {
		cv.Egress = append(cv.Egress, domain.EgressRule{Proto: r.Protocol, Port: r.Port, CIDR: r.CIDR})
	}
	src.CustomerVPC = cv
	return src, nil
}

// Verify explains in's service from every simulated host with an address
// and probes it from there for real (a TCP connection to the primary's
// ServicePort from the host's namespace, all hosts in parallel, each
// waiting at most timeout, DefaultProbeTimeout when 0), returning a check
// per host by name. It is moat verify without the printing.
func (s *Sim) Verify(ctx context.Context, in domain.ExplainInput, timeout time.Duration) ([]domain.Check, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("simulated hosts: %w", err)
	}
	var checks []domain.Check
	var probed []Host
	for _, h := range hosts {
		if !h.Addr.IsValid() {
			continue
		}
		src, err := s.hostSource(ctx, h)
		if err != nil {
			return nil, err
		}
		in.Source = src
		checks = append(checks, domain.Check{Host: h.Name, Address: h.Addr, Explain: domain.Explain(in)})
		probed = append(probed, h)
	}
	target := in.Target()
	if !target.IsValid() {
		for i := range checks {
			checks[i] = checks[i].Compare(domain.Probe{Err: domain.ProbeNoTarget})
		}
		return checks, nil
	}
	dst := netip.AddrPortFrom(target, domain.ServicePort)
	var wg sync.WaitGroup
	for i, h := range probed {
		wg.Go(func() {
			p := domain.Probe{Reachable: true}
			if err := s.probe(h.NS, dst, timeout); err != nil {
				p = domain.Probe{Err: err.Error()}
			}
			checks[i] = checks[i].Compare(p)
		})
	}
	wg.Wait()
	return checks, nil
}

// probe opens a TCP connection from namespace ns to dst: nil when the SYN
// is answered. A reset is an answer too (the path is open, nothing
// listens): every filter on the way drops, none rejects.
func (s *Sim) probe(ns string, dst netip.AddrPort, timeout time.Duration) error {
	var conn net.Conn
	err := s.cloud.Do(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", dst.String(), timeout)
		return err
	})
	if conn != nil {
		conn.Close()
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}
