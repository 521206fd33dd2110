package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/bangui/bangui_exporter/dashboards"
)

// decodeStrict decodes YAML into v, rejecting fields v does not know.
func decodeStrict(t *testing.T, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir(t), file))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
}

type promConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

type composeFile struct {
	Version  string                    `yaml:"version"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Restart       string            `yaml:"restart"`
	NetworkMode   string            `yaml:"network_mode"`
	CapAdd        []string          `yaml:"cap_add"`
	CapDrop       []string          `yaml:"cap_drop"`
	SecurityOpt   []string          `yaml:"security_opt"`
	User          string            `yaml:"user"`
	ReadOnly      bool              `yaml:"read_only"`
	Command       []string          `yaml:"command"`
	Environment   map[string]string `yaml:"environment"`
	Ports         []string          `yaml:"ports"`
	Volumes       []string          `yaml:"volumes"`
	DependsOn     []string          `yaml:"depends_on"`
	Healthcheck   map[string]any    `yaml:"healthcheck"`
	ContainerName string            `yaml:"container_name"`
}

// mount is one "source:target[:ro]" volume entry.
type mount struct {
	source, target string
	readOnly       bool
	named          bool
}

func parseMount(t *testing.T, spec string) mount {
	t.Helper()
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		t.Fatalf("volume %q is not source:target[:ro]", spec)
	}
	m := mount{source: parts[0], target: parts[1]}
	if len(parts) == 3 {
		if parts[2] != "ro" && parts[2] != "rw" {
			t.Fatalf("volume %q has mode %q", spec, parts[2])
		}
		m.readOnly = parts[2] == "ro"
	}
	m.named = !strings.HasPrefix(m.source, ".") && !strings.HasPrefix(m.source, "/")
	return m
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	decodeStrict(t, "docker-compose.yml", &c)
	return c
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// hostMountOf maps a path inside a service's container to the mount
// holding it.
func mountOf(t *testing.T, svc composeService, containerPath string) (mount, bool) {
	t.Helper()
	best := mount{}
	found := false
	for _, spec := range svc.Volumes {
		m := parseMount(t, spec)
		if containerPath == m.target || strings.HasPrefix(containerPath, m.target+"/") {
			if !found || len(m.target) > len(best.target) {
				best, found = m, true
			}
		}
	}
	return best, found
}

func TestPrometheusConfigs(t *testing.T) {
	tests := []struct {
		file       string
		wantTarget string
	}{
		{"prometheus/prometheus.yml", "localhost:9635"},
		{"compose/prometheus.yml", "bangui_exporter:9635"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var cfg promConfig
			decodeStrict(t, tt.file, &cfg)
			if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "fail2ban" {
				t.Fatalf("want one scrape job named fail2ban (the alert rules use up{job=\"fail2ban\"}), got %+v", cfg.ScrapeConfigs)
			}
			targets := cfg.ScrapeConfigs[0].StaticConfigs[0].Targets
			if !slices.Equal(targets, []string{tt.wantTarget}) {
				t.Errorf("targets = %v, want [%s]", targets, tt.wantTarget)
			}
			if len(cfg.RuleFiles) != 1 || path.Base(cfg.RuleFiles[0]) != filepath.Base(rulesFile) {
				t.Errorf("rule_files = %v, want our rules file", cfg.RuleFiles)
			}
		})
	}
}

// TestPromtoolCheckConfig runs promtool on both Prometheus configs. The
// compose one names its rules by their path inside the container; the test
// maps that back through the compose file's volumes, which also proves the
// volume is right.
func TestPromtoolCheckConfig(t *testing.T) {
	out, err := runPromtool(t, deployDir(t), "check", "config", "prometheus/prometheus.yml")
	if err != nil || !strings.Contains(out, "SUCCESS: 1 rule files found") {
		t.Fatalf("promtool check config prometheus/prometheus.yml: %v\n%s", err, out)
	}

	compose := loadCompose(t)
	prom := compose.Services["prometheus"]
	var cfg promConfig
	decodeStrict(t, "compose/prometheus.yml", &cfg)
	data, err := os.ReadFile(filepath.Join(deployDir(t), "compose/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, rf := range cfg.RuleFiles {
		m, ok := mountOf(t, prom, rf)
		if !ok || m.named {
			t.Fatalf("rule file %s is not inside a bind mount of the prometheus service", rf)
		}
		hostPath := filepath.Join(deployDir(t), m.source, strings.TrimPrefix(rf, m.target))
		text = strings.ReplaceAll(text, rf, hostPath)
	}
	// The config itself must be mounted where --config.file points.
	configPath, _ := flagValue(prom.Command, "config.file")
	if m, ok := mountOf(t, prom, configPath); !ok || filepath.Clean(filepath.Join(deployDir(t), m.source)) != filepath.Join(deployDir(t), "compose/prometheus.yml") {
		t.Errorf("--config.file=%s is not compose/prometheus.yml mounted", configPath)
	}
	tmp := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runPromtool(t, deployDir(t), "check", "config", tmp)
	if err != nil || !strings.Contains(out, "SUCCESS: 1 rule files found") {
		t.Fatalf("promtool check config compose/prometheus.yml: %v\n%s", err, out)
	}
}

type datasourceProvisioning struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name      string `yaml:"name"`
		UID       string `yaml:"uid"`
		Type      string `yaml:"type"`
		Access    string `yaml:"access"`
		URL       string `yaml:"url"`
		IsDefault bool   `yaml:"isDefault"`
		Editable  bool   `yaml:"editable"`
		JSONData  struct {
			HTTPMethod   string `yaml:"httpMethod"`
			TimeInterval string `yaml:"timeInterval"`
		} `yaml:"jsonData"`
	} `yaml:"datasources"`
}

type dashboardProvisioning struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name                  string `yaml:"name"`
		Folder                string `yaml:"folder"`
		FolderUID             string `yaml:"folderUid"`
		Type                  string `yaml:"type"`
		DisableDeletion       bool   `yaml:"disableDeletion"`
		AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
		UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `yaml:"path"`
			FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds datasourceProvisioning
	decodeStrict(t, "grafana/provisioning/datasources/bangui_exporter.yml", &ds)
	var dp dashboardProvisioning
	decodeStrict(t, "grafana/provisioning/dashboards/bangui_exporter.yml", &dp)
	var prom promConfig
	decodeStrict(t, "prometheus/prometheus.yml", &prom)
	compose := loadCompose(t)
	grafana := compose.Services["grafana"]

	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("want apiVersion 1 and one datasource, got %+v", ds)
	}
	d := ds.Datasources[0]
	if d.Type != "prometheus" || d.Access != "proxy" || d.JSONData.HTTPMethod != "POST" {
		t.Errorf("datasource must be a prometheus datasource, access proxy, POST: %+v", d)
	}
	// Next to the user's own datasources: never the default (two
	// provisioned defaults stop Grafana), a name and uid of our own (a
	// provisioned datasource takes over an existing one of that name/uid).
	if d.IsDefault || d.UID != dashboards.DefaultDatasourceUID || d.Name == "Prometheus" || !strings.Contains(d.Name, "bangui_exporter") {
		t.Errorf("datasource must not be the default and have its own name and uid: %+v", d)
	}
	// The dashboards reach it through their datasource variable, never a
	// fixed uid of someone else's datasource.
	for _, def := range dashboards.All() {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "dashboards", def.File))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"uid":\s*"([^"]*)"`).FindAllStringSubmatch(string(data), -1) {
			if strings.Contains(m[0], "prometheus") && m[1] != d.UID {
				t.Errorf("%s refers to datasource uid %q", def.File, m[1])
			}
		}
		if !strings.Contains(string(data), `"uid": "${datasource}"`) {
			t.Errorf("%s does not use the datasource variable", def.File)
		}
		// The variable starts on the provisioned datasource (Grafana
		// falls back to the default one where no datasource has its uid).
		var dash struct {
			Templating struct {
				List []struct {
					Name    string `json:"name"`
					Current struct {
						Value any `json:"value"`
					} `json:"current"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(data, &dash); err != nil {
			t.Fatalf("%s: %v", def.File, err)
		}
		found := false
		for _, v := range dash.Templating.List {
			if v.Name == dashboards.DatasourceVariable {
				found = true
				if v.Current.Value != d.UID {
					t.Errorf("%s: the datasource variable starts on %v, want the provisioned uid %s", def.File, v.Current.Value, d.UID)
				}
			}
		}
		if !found {
			t.Errorf("%s has no %s variable", def.File, dashboards.DatasourceVariable)
		}
	}
	if d.JSONData.TimeInterval != prom.Global.ScrapeInterval {
		t.Errorf("datasource timeInterval %s differs from the scrape interval %s", d.JSONData.TimeInterval, prom.Global.ScrapeInterval)
	}
	envVar := regexp.MustCompile(`^\$\{([A-Z_]+)\}$`).FindStringSubmatch(d.URL)
	if envVar == nil {
		t.Fatalf("datasource url %q is not ${VAR}", d.URL)
	}
	composeURL := grafana.Environment[envVar[1]]
	promPort := ""
	for _, p := range compose.Services["prometheus"].Ports {
		promPort = p[strings.LastIndex(p, ":")+1:]
	}
	if composeURL != "http://prometheus:"+promPort {
		t.Errorf("compose sets %s=%q, want http://prometheus:%s", envVar[1], composeURL, promPort)
	}

	if dp.APIVersion != 1 || len(dp.Providers) != 1 {
		t.Fatalf("want apiVersion 1 and one provider, got %+v", dp)
	}
	p := dp.Providers[0]
	if p.Type != "file" || p.Options.Path == "" || p.Folder == "" {
		t.Errorf("provider must be of type file with a path and a folder: %+v", p)
	}
	// A folder of our own, not the General folder or a generic name.
	if p.Folder != "bangui_exporter" || p.FolderUID != "bangui-exporter" {
		t.Errorf("dashboards must be provisioned into their own folder: folder %q, uid %q", p.Folder, p.FolderUID)
	}
	// Compose mounts both provisioning folders and the dashboards where
	// the provider looks.
	for _, dir := range []string{"datasources", "dashboards"} {
		m, ok := mountOf(t, grafana, "/etc/grafana/provisioning/"+dir)
		if !ok || filepath.Clean(m.source) != filepath.Join("grafana/provisioning", dir) {
			t.Errorf("grafana does not mount grafana/provisioning/%s at /etc/grafana/provisioning/%s", dir, dir)
		}
	}
	m, ok := mountOf(t, grafana, p.Options.Path)
	if !ok || m.named {
		t.Fatalf("the provider path %s is not a bind mount in the grafana service", p.Options.Path)
	}
	mounted := filepath.Join(deployDir(t), m.source)
	for _, def := range dashboards.All() {
		if _, err := os.Stat(filepath.Join(mounted, def.File)); err != nil {
			t.Errorf("dashboard %s is not in the mounted folder %s: %v", def.File, mounted, err)
		}
	}
}

// dockerfile is a parsed Dockerfile: instruction → arguments, in order.
type dockerInstruction struct{ cmd, args string }

func parseDockerfile(t *testing.T, file string) []dockerInstruction {
	t.Helper()
	f, err := os.Open(filepath.Join(deployDir(t), file))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose on close
	var out []dockerInstruction
	var pending string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			pending += cont + " "
			continue
		}
		line = pending + line
		pending = ""
		cmd, args, _ := strings.Cut(line, " ")
		out = append(out, dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if pending != "" {
		t.Fatalf("%s ends in a continuation line", file)
	}
	return out
}

func instruction(list []dockerInstruction, cmd string) []string {
	var out []string
	for _, i := range list {
		if i.cmd == cmd {
			out = append(out, i.args)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	known := map[string]bool{"ARG": true, "FROM": true, "LABEL": true, "COPY": true, "RUN": true, "VOLUME": true,
		"EXPOSE": true, "USER": true, "HEALTHCHECK": true, "ENTRYPOINT": true, "CMD": true}
	for _, i := range ins {
		if !known[i.cmd] {
			t.Errorf("unknown instruction %s", i.cmd)
		}
	}
	// The base is a build argument whose default is the Prometheus
	// busybox base of the platform.
	if from := instruction(ins, "FROM"); !slices.Equal(from, []string{"${BASE}"}) {
		t.Errorf("FROM %v: want the BASE build argument", from)
	}
	if !slices.ContainsFunc(instruction(ins, "ARG"), regexp.MustCompile(`^BASE="[^"]*/prometheus/busybox-\$\{OS\}-\$\{ARCH\}:latest"$`).MatchString) {
		t.Errorf("ARG %v: want BASE defaulting to the Prometheus busybox base per OS/ARCH", instruction(ins, "ARG"))
	}
	// No RUN: the image builds for every platform without emulation.
	if run := instruction(ins, "RUN"); len(run) != 0 {
		t.Errorf("RUN %v: an image of another platform cannot run it without emulation", run)
	}
	copyArgs := instruction(ins, "COPY")
	if len(copyArgs) == 0 || copyArgs[0] != ".build/${OS}-${ARCH}/bangui_exporter /bin/bangui_exporter" {
		t.Errorf("COPY %v: want the binary from .build/${OS}-${ARCH}/bangui_exporter first", copyArgs)
	}
	if e := instruction(ins, "EXPOSE"); !slices.Equal(e, []string{"9635"}) {
		t.Errorf("EXPOSE %v, want 9635", e)
	}
	if u := instruction(ins, "USER"); !slices.Equal(u, []string{"nobody"}) {
		t.Errorf("USER %v, want nobody (non-root by default)", u)
	}
	checkDataDirWritable(t, copyArgs)
	// The health check is the exporter's own subcommand, reading the
	// server's flags: no wget (busybox bases differ), no fixed URL.
	hc := instruction(ins, "HEALTHCHECK")
	if len(hc) != 1 || !strings.HasSuffix(hc[0], `CMD ["/bin/bangui_exporter", "healthcheck", "--server-pid=1"]`) ||
		strings.Contains(hc[0], "wget") || strings.Contains(hc[0], "http") {
		t.Errorf("HEALTHCHECK %v: want the healthcheck subcommand", hc)
	}
	if ep := instruction(ins, "ENTRYPOINT"); !slices.Equal(ep, []string{`["/bin/bangui_exporter"]`}) {
		t.Errorf("ENTRYPOINT %v", ep)
	}
	// promu's config, when the lead's .promu.yml is there, builds the same binary name.
	if data, err := os.ReadFile(filepath.Join(repoRoot(t), ".promu.yml")); err == nil {
		var promu struct {
			Build struct {
				Binaries []struct {
					Name string `yaml:"name"`
				} `yaml:"binaries"`
			} `yaml:"build"`
		}
		if err := yaml.Unmarshal(data, &promu); err != nil {
			t.Fatalf(".promu.yml: %v", err)
		}
		names := []string{}
		for _, b := range promu.Build.Binaries {
			names = append(names, b.Name)
		}
		if len(names) > 0 && !slices.Contains(names, "bangui_exporter") {
			t.Errorf(".promu.yml builds %v, the Dockerfile copies bangui_exporter", names)
		}
	}

	fb := parseDockerfile(t, "compose/fail2ban/Dockerfile")
	for _, c := range instruction(fb, "COPY") {
		src := strings.Fields(c)[0]
		if _, err := os.Stat(filepath.Join(deployDir(t), "compose/fail2ban", src)); err != nil {
			t.Errorf("fail2ban image copies %s, which does not exist: %v", src, err)
		}
	}
}

func TestDockerCompose(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"fail2ban", "bangui_exporter", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("service %s missing", name)
		}
	}
	for name, svc := range c.Services {
		if (svc.Image == "") == (svc.Build == nil) {
			t.Errorf("service %s needs exactly one of image and build", name)
		}
		if svc.Build != nil {
			ctx := filepath.Join(deployDir(t), svc.Build.Context)
			dockerfile := svc.Build.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if _, err := os.Stat(filepath.Join(ctx, dockerfile)); err != nil {
				t.Errorf("service %s: build file %s missing in %s", name, dockerfile, ctx)
			}
		}
		for _, dep := range svc.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
		for _, spec := range svc.Volumes {
			m := parseMount(t, spec)
			if m.named {
				if _, ok := c.Volumes[m.source]; !ok {
					t.Errorf("service %s uses undeclared volume %s", name, m.source)
				}
				continue
			}
			if strings.HasPrefix(m.source, "/") {
				continue // host paths such as /var/log
			}
			if _, err := os.Stat(filepath.Join(deployDir(t), m.source)); err != nil {
				t.Errorf("service %s mounts %s, which does not exist: %v", name, m.source, err)
			}
		}
		for _, p := range svc.Ports {
			if _, _, err := publishedPort(p); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
		}
	}

	exporter := c.Services["bangui_exporter"]
	fail2ban := c.Services["fail2ban"]
	listen, _ := flagValue(exporter.Command, "web.listen-address")
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("exporter --web.listen-address=%q: %v", listen, err)
	}
	if len(exporter.Ports) != 1 {
		t.Fatalf("exporter publishes %v, want one port", exporter.Ports)
	}
	if _, container, _ := publishedPort(exporter.Ports[0]); container != port {
		t.Errorf("exporter listens on %s but publishes %v", port, exporter.Ports)
	}
	// The exporter's image is the one make docker builds for the host's
	// architecture (no build here, so no ARCH to get wrong); the
	// Makefile's comment and docs/deploy.md name the same tag.
	if exporter.Build != nil || !strings.Contains(exporter.Image, "bangui_exporter:latest") {
		t.Errorf("exporter image %q: want make docker's bangui_exporter:latest", exporter.Image)
	}
	var cfg promConfig
	decodeStrict(t, "compose/prometheus.yml", &cfg)
	if target := cfg.ScrapeConfigs[0].StaticConfigs[0].Targets[0]; target != "bangui_exporter:"+port {
		t.Errorf("compose Prometheus scrapes %s, the exporter service is bangui_exporter:%s", target, port)
	}

	// fail2ban's database and socket are shared through volumes mounted at
	// the same paths in both containers; the exporter's mounts are read-only.
	for _, tt := range []struct {
		flag     string
		readOnly bool
	}{{"fail2ban.db", true}, {"fail2ban.socket", true}} {
		p, ok := flagValue(exporter.Command, tt.flag)
		if !ok {
			p = exporterDefaults[tt.flag]
		}
		em, ok := mountOf(t, exporter, p)
		if !ok || !em.named {
			t.Errorf("--%s=%s is not on a shared volume", tt.flag, p)
			continue
		}
		fm, ok := mountOf(t, fail2ban, p)
		if !ok || fm.source != em.source {
			t.Errorf("--%s=%s: fail2ban does not mount volume %s at the same path", tt.flag, p, em.source)
		}
		if tt.readOnly && !em.readOnly {
			t.Errorf("the exporter must mount --%s's directory read-only", tt.flag)
		}
	}
	storage, _ := flagValue(exporter.Command, "storage.path")
	if m, ok := mountOf(t, exporter, storage); !ok || !m.named || m.readOnly {
		t.Errorf("--storage.path=%s must be on a writable named volume", storage)
	}
	if !exporter.ReadOnly || !slices.Contains(exporter.CapDrop, "ALL") || !slices.Contains(exporter.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("exporter must run with a read-only root, no capabilities and no-new-privileges")
	}
	// The fail2ban image is Debian's package: its default paths.
	if !strings.HasPrefix(mustFlag(t, exporter.Command, "fail2ban.db"), "/var/lib/fail2ban/") {
		t.Errorf("exporter paths differ from Debian fail2ban's defaults")
	}
}

// publishedPort checks a compose port entry: bound to loopback
// ("127.0.0.1:${VAR:-PORT}:PORT"), the default host port equal to the
// container port. It returns the host port's default and the container port.
func publishedPort(p string) (host, container string, err error) {
	m := regexp.MustCompile(`^127\.0\.0\.1:(?:\$\{[A-Z_]+:-([0-9]+)\}|([0-9]+)):([0-9]+)$`).FindStringSubmatch(p)
	if m == nil {
		return "", "", fmt.Errorf("publishes %q; want 127.0.0.1:HOST:CONTAINER (loopback by default)", p)
	}
	host = m[1] + m[2]
	if host != m[3] {
		return "", "", fmt.Errorf("publishes %q; want the same port on host and container by default", p)
	}
	return host, m[3], nil
}

// exporterDefaults are the defaults of flags the deploy kit relies on
// without passing them (--fail2ban.socket).
var exporterDefaults = map[string]string{
	"fail2ban.socket": "/var/run/fail2ban/fail2ban.sock",
}

func mustFlag(t *testing.T, args []string, name string) string {
	t.Helper()
	v, ok := flagValue(args, name)
	if !ok {
		t.Fatalf("no --%s in %v", name, args)
	}
	return v
}

// unitDirectives parses a systemd unit: section.key → values.
func unitDirectives(t *testing.T, file string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir(t), file))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	var pending string
	for raw := range strings.SplitSeq(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if pending == "" && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			pending += cont + " "
			continue
		}
		line = pending + line
		pending = ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.Trim(line, "[]")
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", file, line)
		}
		out[section+"."+key] = append(out[section+"."+key], strings.Join(strings.Fields(value), " "))
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	const file = "systemd/bangui_exporter.service"
	u := unitDirectives(t, file)
	for key, want := range map[string]string{
		"Service.NoNewPrivileges":       "yes",
		"Service.ProtectSystem":         "strict",
		"Service.ProtectHome":           "yes",
		"Service.PrivateTmp":            "yes",
		"Service.StateDirectory":        "bangui_exporter",
		"Service.CapabilityBoundingSet": "",
		"Service.TemporaryFileSystem":   "/var/lib:ro",
		"Install.WantedBy":              "multi-user.target",
	} {
		if got := u[key]; !slices.Contains(got, want) {
			t.Errorf("%s = %v, want %q", key, got, want)
		}
	}
	exec := unitExecArgs(t, u)
	if len(exec) == 0 || exec[0] != "/usr/bin/bangui_exporter" {
		t.Fatalf("ExecStart = %v", exec)
	}
	db := mustFlag(t, exec, "fail2ban.db")
	storage := mustFlag(t, exec, "storage.path")
	if filepath.Dir(storage) != "/var/lib/"+u["Service.StateDirectory"][0] {
		t.Errorf("--storage.path=%s is not in the StateDirectory", storage)
	}
	if !slices.Contains(u["Service.BindReadOnlyPaths"], "-"+filepath.Dir(db)) || !slices.Contains(u["Service.ReadOnlyPaths"], "-"+filepath.Dir(db)) {
		t.Errorf("the fail2ban DB's directory %s must be bound read-only into the hidden /var/lib", filepath.Dir(db))
	}
	if !slices.Contains(u["Service.BindPaths"], filepath.Dir(storage)) || !slices.Contains(u["Service.ReadWritePaths"], filepath.Dir(storage)) {
		t.Errorf("the state directory %s must be bound read-write", filepath.Dir(storage))
	}
	// Every path a host may lack is optional ("-"): only the state
	// directory, which systemd creates, may be given without.
	state := "/var/lib/" + u["Service.StateDirectory"][0]
	for _, key := range []string{"Service.BindReadOnlyPaths", "Service.ReadOnlyPaths", "Service.BindPaths", "Service.ReadWritePaths", "Service.EnvironmentFile"} {
		for _, v := range u[key] {
			for p := range strings.FieldsSeq(v) {
				if !strings.HasPrefix(p, "-") && p != state {
					t.Errorf("%s=%s: an optional path must be prefixed with - (a missing one fails the unit with 226/NAMESPACE)", key, p)
				}
			}
		}
	}
	if !slices.Contains(u["Service.BindReadOnlyPaths"], "-/var/lib/GeoIP") {
		t.Errorf("BindReadOnlyPaths = %v: /var/lib/GeoIP (geoipupdate's country databases) is hidden by TemporaryFileSystem=/var/lib:ro", u["Service.BindReadOnlyPaths"])
	}
	listen := mustFlag(t, exec, "web.listen-address")
	var prom promConfig
	decodeStrict(t, "prometheus/prometheus.yml", &prom)
	_, port, _ := net.SplitHostPort(listen)
	if !strings.HasSuffix(prom.ScrapeConfigs[0].StaticConfigs[0].Targets[0], ":"+port) {
		t.Errorf("the unit listens on %s, prometheus.yml scrapes %v", listen, prom.ScrapeConfigs[0].StaticConfigs[0].Targets)
	}

	// systemd itself checks every directive (with ExecStart pointed at an
	// existing binary, since verify also checks that).
	analyze := requireTool(t, "systemd-analyze")
	data, err := os.ReadFile(filepath.Join(deployDir(t), file))
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "bangui_exporter.service")
	if err := os.WriteFile(tmp, bytes.ReplaceAll(data, []byte("/usr/bin/bangui_exporter"), []byte("/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, analyze, "verify", tmp)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = runCommand(t, analyze, "security", "--offline=yes", "--threshold=20", tmp)
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0 or error: %v\n%s", err, out)
	}
}

func runCommand(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	return string(out), err
}

// TestComposeFail2banConfig runs fail2ban's own configuration test on the
// compose stack's jail.local, on top of Debian's fail2ban configuration as
// the image installs it: as shipped (the host's journal, which compose
// mounts with /var/log), and with the auth.log alternative its comment
// describes (the log path pointed at a temporary file).
func TestComposeFail2banConfig(t *testing.T) {
	client := requireTool(t, "fail2ban-client")
	const debianConfig = "/etc/fail2ban"
	if _, err := os.Stat(filepath.Join(debianConfig, "jail.conf")); err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("Debian's fail2ban configuration is missing: %v", err)
		}
		t.Skipf("Debian's fail2ban configuration is missing: %v", err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(debianConfig)); err != nil {
		t.Fatal(err)
	}
	// The image removes Debian's defaults (systemd backend, which a
	// container has no journal for).
	if err := os.Remove(filepath.Join(dir, "jail.d", "defaults-debian.conf")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	jail, err := os.ReadFile(filepath.Join(deployDir(t), "compose/fail2ban/jail.local"))
	if err != nil {
		t.Fatal(err)
	}
	// The journal: where compose mounts the host's /var/log.
	const journalBackend = `backend = systemd[journalpath="/var/log/host/journal"]`
	if !bytes.Contains(jail, []byte("\n"+journalBackend+"\n")) {
		t.Fatal("jail.local does not read the host's journal")
	}
	if m, ok := mountOf(t, loadCompose(t).Services["fail2ban"], "/var/log/host/journal"); !ok || m.source != "/var/log" || !m.readOnly {
		t.Errorf("compose does not mount the host's /var/log read-only at /var/log/host")
	}
	if err := os.WriteFile(filepath.Join(dir, "jail.local"), jail, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, client, "-c", dir, "-t")
	if err != nil || !strings.Contains(out, "OK: configuration test is successful") {
		t.Fatalf("fail2ban-client -t (journal): %v\n%s", err, out)
	}
	// The auth.log alternative, as the comment tells users to write it.
	const fileBackend = "#   backend = polling\n#   logpath = /var/log/host/auth.log\n"
	if !bytes.Contains(jail, []byte(fileBackend)) {
		t.Fatal("jail.local does not say how to read the host's auth.log")
	}
	logPath := filepath.Join(dir, "auth.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	jail = bytes.Replace(jail, []byte(journalBackend+"\n"), []byte("backend = polling\nlogpath = "+logPath+"\n"), 1)
	if err := os.WriteFile(filepath.Join(dir, "jail.local"), jail, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCommand(t, client, "-c", dir, "-t")
	if err != nil || !strings.Contains(out, "OK: configuration test is successful") {
		t.Fatalf("fail2ban-client -t (auth.log): %v\n%s", err, out)
	}
	// And a broken jail is caught.
	if err := os.WriteFile(filepath.Join(dir, "jail.local"), append(jail, []byte("\n[nosuch]\nenabled = true\nfilter = nosuchfilter\nlogpath = "+logPath+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCommand(t, client, "-c", dir, "-t"); err == nil {
		t.Fatalf("fail2ban-client -t accepted a jail with a missing filter:\n%s", out)
	}
}

// checkDataDirWritable checks, with the kernel's permission rules, that
// both ways the docs run the image can create the app database in
// /var/lib/bangui_exporter: as nobody (the image's USER) and as root with
// every capability dropped (docker-compose.yml, docs/deploy.md). Root
// without CAP_DAC_OVERRIDE is judged like any other user: owner, then
// group, then other bits. The directory comes from make's staging
// (.build/docker/var-lib/bangui_exporter, `install -d -m MODE`) copied by
// `COPY --chown=UID:GID`. The real-engine test (docker_test.go) runs both.
func checkDataDirWritable(t *testing.T, copies []string) {
	t.Helper()
	const staged = ".build/docker/var-lib/"
	owner, group := "", ""
	for _, c := range copies {
		f := strings.Fields(c)
		if len(f) == 3 && f[1] == staged && f[2] == "/var/lib/" {
			if ids, ok := strings.CutPrefix(f[0], "--chown="); ok {
				owner, group, _ = strings.Cut(ids, ":")
			}
		}
	}
	if owner == "" {
		t.Fatalf("the Dockerfile does not COPY --chown=UID:GID %s /var/lib/", staged)
	}
	names := map[string]string{"0": "root", "65534": "nobody"}
	owner, group = names[owner], names[group]
	makefile, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`install -d -m (0[0-7]+) ` + regexp.QuoteMeta(staged) + `bangui_exporter`).FindSubmatch(makefile)
	if m == nil {
		t.Fatalf("the Makefile does not stage %sbangui_exporter with install -d -m", staged)
	}
	perm, err := strconv.ParseUint(string(m[1]), 8, 32)
	if err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(perm)
	const dir = "/var/lib/bangui_exporter"
	// uid/gid names in the Prometheus busybox image.
	users := []struct{ name, user, group string }{
		{"USER nobody", "nobody", "nobody"},
		{"--user root --cap-drop ALL", "root", "root"},
	}
	for _, u := range users {
		var bits os.FileMode
		switch {
		case u.user == owner:
			bits = mode >> 6
		case u.group == group:
			bits = mode >> 3
		default:
			bits = mode
		}
		if bits&0o3 != 0o3 { // write and search
			t.Errorf("%s (owner %s:%s, mode %#o): %s cannot create its database there", dir, owner, group, mode, u.name)
		}
	}
}
