package socket

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
)

// BenchmarkScrape measures one scrape of the socket collector against a
// real fail2ban with 3 and 50 jails (10 bans each): warm (settings cached,
// connection open), cold (new client: connect, version, dbpurgeage and
// three settings per jail), and, as the baseline, what a shell-based
// exporter does: one fail2ban-client process per jail.
func BenchmarkScrape(b *testing.B) {
	for _, jails := range []int{3, 50} {
		var extra []f2bsandbox.Jail
		for i := 3; i < jails; i++ {
			extra = append(extra, f2bsandbox.Jail{Name: fmt.Sprintf("j%02d", i), Bantime: "1h"})
		}
		sb := f2bsandbox.StartT(b, f2bsandbox.Options{ExtraJails: extra})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		ips := f2bsandbox.SampleIPs(10)
		for _, jail := range sb.Jails() {
			if err := sb.BanIP(ctx, jail, ips...); err != nil {
				b.Fatal(err)
			}
		}
		gather := func(b *testing.B, coll *Collector) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(coll)
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == "fail2ban_server_up" && mf.GetMetric()[0].GetGauge().GetValue() != 1 {
					b.Fatal("fail2ban_server_up 0")
				}
			}
		}
		b.Run(fmt.Sprintf("jails=%d/warm", jails), func(b *testing.B) {
			client := New(Options{Path: sb.Socket()})
			defer func() { _ = client.Close() }()
			coll := NewCollector(client, CollectorOptions{SettingsTTL: time.Hour})
			gather(b, coll)
			for b.Loop() {
				gather(b, coll)
			}
		})
		b.Run(fmt.Sprintf("jails=%d/cold", jails), func(b *testing.B) {
			for b.Loop() {
				client := New(Options{Path: sb.Socket()})
				gather(b, NewCollector(client, CollectorOptions{}))
				_ = client.Close()
			}
		})
		b.Run(fmt.Sprintf("jails=%d/baseline-fail2ban-client", jails), func(b *testing.B) {
			for b.Loop() {
				for _, jail := range sb.Jails() {
					if out, err := exec.Command(f2bsandbox.ClientBinary, "-c", sb.ConfigDir(), "status", jail).CombinedOutput(); err != nil {
						b.Fatalf("%v: %s", err, out)
					}
				}
			}
		})
		cancel()
	}
}
