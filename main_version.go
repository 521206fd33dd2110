package main

import (
	_ "embed" // the VERSION file
	"runtime/debug"
	"strings"

	"github.com/prometheus/common/version"
)

// embeddedVersion is the VERSION file at build time: a plain `go build`
// names its version too, not only a promu build (which sets it by ldflags).
//
//go:embed VERSION
var embeddedVersion string

// buildVersion is what --version, the log and bangui_exporter_build_info
// report for a build.
type buildVersion struct {
	Version, Revision, BuildDate string
}

// resolveBuildVersion fills what the linker flags left empty: the version
// from the VERSION file, the revision and its date from the VCS stamp Go
// writes into the binary (vcs.revision, vcs.modified, vcs.time). A build
// without a VCS stamp (-buildvcs=false, no repository) keeps "unknown".
func resolveBuildVersion(linked buildVersion, embedded string, info *debug.BuildInfo) buildVersion {
	out := linked
	if out.Version == "" {
		out.Version = strings.TrimSpace(embedded)
	}
	var rev, date string
	modified := false
	if info != nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				date = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if out.Revision == "" || out.Revision == "unknown" {
		out.Revision = "unknown"
		if rev != "" {
			out.Revision = rev
			if modified {
				out.Revision += "-modified"
			}
		}
	}
	if out.BuildDate == "" {
		out.BuildDate = date
	}
	return out
}

// setVersionInfo writes the resolved build version into
// prometheus/common/version, once at start before anything reads it.
func setVersionInfo() {
	info, _ := debug.ReadBuildInfo()
	v := resolveBuildVersion(buildVersion{Version: version.Version, Revision: version.GetRevision(), BuildDate: version.BuildDate}, embeddedVersion, info)
	version.Version, version.Revision, version.BuildDate = v.Version, v.Revision, v.BuildDate
}
