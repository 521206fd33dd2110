// Package deploy holds bangui_exporter's deploy kit — Prometheus scrape
// config and rules, Grafana provisioning, a hardened systemd unit, a
// Dockerfile and a docker-compose stack — and the Go tests that check it:
// promtool on the rules and the config, static checks of every file, an
// end-to-end test that runs every dashboard and rule query against a real
// Prometheus scraping the real exporter on a sandboxed fail2ban, and a
// real-engine test that builds the image and runs it and the compose stack
// on a private Docker engine (docker_test.go).
package deploy
