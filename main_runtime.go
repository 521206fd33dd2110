package main

import (
	"html"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// addPprofFlag adds --web.enable-pprof (off: profiles reveal internals and
// cost CPU, so they are served only when asked for).
func addPprofFlag(app *kingpin.Application) *bool {
	return app.Flag("web.enable-pprof",
		"Serve Go's runtime profiles under /debug/pprof/ (heap, CPU profile, goroutines, ...), linked from the landing page. Off by default.").
		Default("false").Bool()
}

// registerPprof mounts net/http/pprof's handlers on mux.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// landingProfiling is the landing page's Profiling setting: its pprof links
// appear only where pprof is served.
func landingProfiling(enabled bool) string {
	if enabled {
		return "true"
	}
	return "false"
}

// registerRuntimeCollectors adds the standard go_* and process_* metrics
// (memory, GC, goroutines, RSS, open file descriptors, CPU time) that every
// exporter exports and users alert on.
func registerRuntimeCollectors(reg prometheus.Registerer) {
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// landingNotesHTML renders notes as escaped paragraphs for the landing page.
func landingNotesHTML(notes []string) string {
	var b strings.Builder
	for _, n := range notes {
		b.WriteString("<p>")
		b.WriteString(html.EscapeString(n))
		b.WriteString("</p>\n")
	}
	return b.String()
}
