// Command nft measures how long internal/nft takes to apply a firewall
// against `nft -f` of the same Render() text, in the same run, in a
// throwaway network namespace. It needs root and the nft command.
//
//	go run ./bench/nft [-runs 5]
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/nft"
	"github.com/vishvananda/netns"
)

func main() {
	runs := flag.Int("runs", 5, "measurements per case (the median is printed)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to `file`")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/nft: error:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench/nft: error:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*runs); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/nft: error:", err)
		os.Exit(1)
	}
}

func policy(n, offset int) nft.Policy {
	p := nft.Policy{Port: 5432}
	for i := range n {
		v := uint32(10<<24) + uint32(2*(i+offset))
		p.AllowV4 = append(p.AllowV4, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32))
	}
	return p
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

func run(runs int) error {
	name := fmt.Sprintf("moat-bench-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %w: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	ns, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer ns.Close()

	fmt.Println("| prefixes | nft -f | Apply (write + read back) | ratio |")
	fmt.Println("|---:|---:|---:|---:|")
	for _, n := range []int{8_000, 100_000} {
		var tNft, tApply []time.Duration
		for i := range runs {
			// Alternate the policy so every run replaces a full table.
			p := policy(n, i%2)
			text, err := nft.Render(p)
			if err != nil {
				return err
			}
			start := time.Now()
			cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
			cmd.Stdin = strings.NewReader(text)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nft -f: %w: %s", err, out)
			}
			tNft = append(tNft, time.Since(start))

			p = policy(n, 1-i%2)
			start = time.Now()
			if err := nft.Apply(ns, p); err != nil {
				return err
			}
			tApply = append(tApply, time.Since(start))

		}
		mn, ma := median(tNft), median(tApply)
		fmt.Printf("| %d | %v | %v | %.2f× |\n", n, mn.Round(time.Millisecond), ma.Round(time.Millisecond), float64(ma)/float64(mn))
	}

	// One entry changed on a 100,000-entry set, through Firewall.
	fw := nft.New(ns)
	p := policy(100_000, 0)
	if err := fw.Apply(p); err != nil {
		return err
	}
	var tOne []time.Duration
	for i := range runs * 4 {
		p.AllowV4[1234] = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)
		start := time.Now()
		if err := fw.Apply(p); err != nil {
			return err
		}
		tOne = append(tOne, time.Since(start))
	}
	fmt.Printf("\none entry changed on a 100,000-entry set (Firewall.Apply, incremental, verified): median %v over %d runs\n",
		median(tOne).Round(100*time.Microsecond), len(tOne))
	return nil
}
