package main

// The /metrics handler. A scrape in the Prometheus text format writes the
// large families of fail2ban's collector (collector.EncodedFamilies: one
// series per jail and country) as they were encoded at their last change,
// and gathers and encodes only the rest (go_, process_, the exporter's own
// metrics). With gzip, those families are kept compressed too: each is a
// raw DEFLATE stream ended by a sync flush, the rest is compressed per
// scrape the same way, and one gzip member frames them all. Other formats
// (protobuf, which Prometheus asks for with native histograms) and name[]
// filters go to promhttp, over the same collectors.

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/bangui/bangui_exporter/collector"
)

// metricsHandler serves /metrics.
type metricsHandler struct {
	// rest gathers every metric but the cached families; its fail2ban
	// collector (collector.Exporter.Uncached) refreshes the engine.
	rest prometheus.Gatherer
	// cached returns the cached families of the refresh rest made.
	cached func() []cachedText
	// fallback is promhttp over rest and the cached families as metrics.
	fallback http.Handler

	errCnt      *prometheus.CounterVec
	errorLog    promhttp.Logger
	inFlight    chan struct{}
	maxInFlight int

	// flaters and bufs are reused between scrapes.
	flaters sync.Pool // *flate.Writer
	bufs    sync.Pool // *bytes.Buffer
}

// newMetricsHandler returns the /metrics handler over reg, in which
// f2b.Uncached() is registered (not f2b itself), with promhttp's
// behaviour under the options main used to give it: errors of a collector
// are logged to errorLog, counted in promhttp_metric_handler_errors_total
// (registered in reg) and the rest is served; at most maxRequests scrapes
// run at once (0: no limit), further ones get 503.
func newMetricsHandler(reg *prometheus.Registry, f2b *collector.Exporter, maxRequests int, errorLog promhttp.Logger) (http.Handler, error) {
	errCnt := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "promhttp_metric_handler_errors_total",
		Help: "Total number of internal errors encountered by the promhttp metric handler.",
	}, []string{"cause"})
	errCnt.WithLabelValues("gathering")
	errCnt.WithLabelValues("encoding")
	if err := reg.Register(errCnt); err != nil {
		return nil, fmt.Errorf("register promhttp_metric_handler_errors_total: %w", err)
	}
	cachedReg := prometheus.NewRegistry()
	if err := cachedReg.Register(f2b.CachedCollector()); err != nil {
		return nil, fmt.Errorf("register fail2ban's cached families: %w", err)
	}
	h := &metricsHandler{
		rest: reg,
		cached: func() []cachedText {
			fams := f2b.EncodedFamilies()
			out := make([]cachedText, len(fams))
			for i, f := range fams {
				out[i] = f
			}
			return out
		},
		// reg first: its fail2ban collector refreshes, then cachedReg
		// exposes that refresh. promhttp finds errCnt registered and
		// counts into it; the in-flight limit is this handler's.
		fallback: promhttp.HandlerFor(prometheus.Gatherers{reg, cachedReg}, promhttp.HandlerOpts{
			ErrorLog:      errorLog,
			ErrorHandling: promhttp.ContinueOnError,
			Registry:      reg,
		}),
		errCnt:      errCnt,
		errorLog:    errorLog,
		maxInFlight: maxRequests,
	}
	if maxRequests > 0 {
		h.inFlight = make(chan struct{}, maxRequests)
	}
	return h, nil
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.inFlight != nil {
		select {
		case h.inFlight <- struct{}{}:
			defer func() { <-h.inFlight }()
		default:
			http.Error(w, fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", h.maxInFlight),
				http.StatusServiceUnavailable)
			return
		}
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	if format.FormatType() != expfmt.TypeTextPlain || hasNameFilter(r) {
		h.fallback.ServeHTTP(w, r)
		return
	}

	mfs, err := h.rest.Gather()
	if err != nil {
		h.logError("error gathering metrics:", err)
		h.errCnt.WithLabelValues("gathering").Inc()
	}
	fams := h.cached()
	if err != nil && len(mfs) == 0 && len(fams) == 0 {
		httpError(w, err)
		return
	}

	dyn := h.getBuf()
	defer h.bufs.Put(dyn)
	parts := h.encode(dyn, format, mfs, fams)

	w.Header().Add("Vary", "Accept")
	w.Header().Add("Vary", "Accept-Encoding")
	w.Header().Set("Content-Type", string(format))
	if !acceptsGzip(r) {
		n := 0
		for _, p := range parts {
			n += len(p.text)
		}
		w.Header().Set("Content-Length", fmt.Sprint(n))
		for _, p := range parts {
			if _, err := w.Write(p.text); err != nil {
				return // the client is gone
			}
		}
		return
	}
	z := h.getBuf()
	defer h.bufs.Put(z)
	body := h.gzip(z, parts)
	w.Header().Set("Content-Encoding", "gzip")
	n := 0
	for _, b := range body {
		n += len(b)
	}
	w.Header().Set("Content-Length", fmt.Sprint(n))
	for _, b := range body {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
}

// cachedText is a family encoded ahead (collector.EncodedFamily).
type cachedText interface {
	Name() string
	// Text is the family in the text format.
	Text() []byte
	// Deflate is Text as a raw DEFLATE stream ended by a sync flush.
	Deflate() []byte
}

// part is a piece of the exposition: the text of a cached family (fam set)
// or of a run of gathered families encoded for this scrape.
type part struct {
	text []byte
	fam  cachedText
}

// encode lays out the exposition in family name order, as promhttp writes
// it: the gathered families (sorted by the registry) encoded into dyn,
// merged with the cached families (sorted, and never among the gathered).
func (h *metricsHandler) encode(dyn *bytes.Buffer, format expfmt.Format, mfs []*dto.MetricFamily, fams []cachedText) []part {
	enc := expfmt.NewEncoder(dyn, format)
	type span struct{ from, to int }
	var spans []span // of dyn, per run of gathered families
	var order []int  // per part: index into spans, or -1-i for fams[i]
	i, j := 0, 0
	for i < len(mfs) || j < len(fams) {
		if j < len(fams) && (i == len(mfs) || fams[j].Name() < mfs[i].GetName()) {
			order = append(order, -1-j)
			j++
			continue
		}
		from := dyn.Len()
		for i < len(mfs) && (j == len(fams) || mfs[i].GetName() < fams[j].Name()) {
			if err := enc.Encode(mfs[i]); err != nil {
				h.logError("error encoding and sending metric family:", err)
				h.errCnt.WithLabelValues("encoding").Inc()
			}
			i++
		}
		if dyn.Len() > from {
			order = append(order, len(spans))
			spans = append(spans, span{from, dyn.Len()})
		}
	}
	// dyn is complete: its bytes no longer move.
	parts := make([]part, 0, len(order))
	for _, o := range order {
		if o < 0 {
			f := fams[-1-o]
			parts = append(parts, part{text: f.Text(), fam: f})
			continue
		}
		parts = append(parts, part{text: dyn.Bytes()[spans[o].from:spans[o].to]})
	}
	return parts
}

// gzipHeader is a gzip member's header (RFC 1952) without optional fields
// or a modification time, as compress/gzip writes it; the OS is unknown.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

// finalBlock ends a DEFLATE stream that stopped at a sync flush: an empty
// final block with fixed Huffman codes (BFINAL 1, BTYPE 01, end-of-block).
var finalBlock = []byte{0x03, 0x00}

// gzip returns the gzip member of parts as a list of byte slices to write
// in order: the header; for each part its DEFLATE stream ended by a sync
// flush (a cached family's kept one, the others compressed into z now);
// an empty final block; the CRC-32 and the length of the whole text. A
// stream ended by a sync flush is byte-aligned and refers to nothing
// before it, so the streams concatenate into one DEFLATE stream, and the
// member is a single one, which every gzip reader takes.
func (h *metricsHandler) gzip(z *bytes.Buffer, parts []part) [][]byte {
	type span struct{ from, to int }
	zspans := make([]span, len(parts))
	var crc, size uint32
	zw := h.getFlater()
	defer h.flaters.Put(zw)
	for k, p := range parts {
		crc = crc32.Update(crc, crc32.IEEETable, p.text)
		size += uint32(len(p.text)) // ISIZE is the length modulo 2^32
		if p.fam != nil {
			continue
		}
		from := z.Len()
		zw.Reset(z)
		// Writes to a bytes.Buffer do not fail.
		_, _ = zw.Write(p.text)
		_ = zw.Flush()
		zspans[k] = span{from, z.Len()}
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[0:4], crc)
	binary.LittleEndian.PutUint32(trailer[4:8], size)
	body := make([][]byte, 0, len(parts)+3)
	body = append(body, gzipHeader)
	for k, p := range parts {
		if p.fam != nil {
			body = append(body, p.fam.Deflate())
			continue
		}
		body = append(body, z.Bytes()[zspans[k].from:zspans[k].to])
	}
	return append(body, finalBlock, trailer[:])
}

func (h *metricsHandler) getBuf() *bytes.Buffer {
	if b, ok := h.bufs.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

func (h *metricsHandler) getFlater() *flate.Writer {
	if zw, ok := h.flaters.Get().(*flate.Writer); ok {
		return zw
	}
	zw, err := flate.NewWriter(nil, collector.DeflateLevel)
	if err != nil {
		panic(fmt.Sprintf("flate level %d: %v", collector.DeflateLevel, err)) // a constant, valid level
	}
	return zw
}

func (h *metricsHandler) logError(msg string, err error) {
	if h.errorLog != nil {
		h.errorLog.Println(msg, err)
	}
}

// httpError answers 500 with err, as promhttp does when nothing was
// gathered.
func httpError(w http.ResponseWriter, err error) {
	w.Header().Del("Content-Encoding")
	http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
}

// hasNameFilter reports whether the request selects families by name[]
// (promhttp's filter), which the fallback serves.
func hasNameFilter(r *http.Request) bool {
	return r.URL != nil && strings.Contains(r.URL.RawQuery, "name") && len(r.URL.Query()["name[]"]) > 0
}

// acceptsGzip decides the response's encoding as promhttp does with its
// default offers (identity, then gzip): the offer of the highest quality
// in Accept-Encoding, identity on a tie, an exact (case-sensitive) match or
// "*"; identity when nothing matches or the best match has quality 0.
func acceptsGzip(r *http.Request) bool {
	best, bestQ := "identity", -1.0
	specs := parseAcceptEncoding(r.Header.Values("Accept-Encoding"))
	for _, offer := range []string{"identity", "gzip"} {
		for _, s := range specs {
			if s.q > bestQ && (s.value == "*" || s.value == offer) {
				best, bestQ = offer, s.q
			}
		}
	}
	return best == "gzip" && bestQ != 0
}

// httpSpace is what the header parser skips between elements.
const httpSpace = " \t\r\n"

type acceptSpec struct {
	value string
	q     float64
}

// parseAcceptEncoding parses Accept-Encoding values as promhttp's header
// parser (from golang/gddo) does: a value that does not parse ends its
// header line; a parameter other than q ends it too.
func parseAcceptEncoding(values []string) []acceptSpec {
	var specs []acceptSpec
	for _, s := range values {
		for {
			var spec acceptSpec
			spec.value, s = cutToken(s)
			if spec.value == "" {
				break
			}
			spec.q = 1
			s = strings.TrimLeft(s, httpSpace)
			if strings.HasPrefix(s, ";") {
				s = strings.TrimLeft(s[1:], httpSpace)
				if !strings.HasPrefix(s, "q=") {
					break
				}
				spec.q, s = cutQuality(s[2:])
				if spec.q < 0 {
					break
				}
			}
			specs = append(specs, spec)
			s = strings.TrimLeft(s, httpSpace)
			if !strings.HasPrefix(s, ",") {
				break
			}
			s = strings.TrimLeft(s[1:], httpSpace)
		}
	}
	return specs
}

// cutToken splits off the leading token (RFC 7230 tchar, or '/').
func cutToken(s string) (token, rest string) {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; !isTokenChar(c) && c != '/' {
			break
		}
	}
	return s[:i], s[i:]
}

func isTokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
}

// cutQuality parses a quality value: "0" or "1", optionally followed by
// '.' and digits; -1 when it does not start with one of them.
func cutQuality(s string) (q float64, rest string) {
	switch {
	case s == "":
		return -1, ""
	case s[0] == '0':
		q = 0
	case s[0] == '1':
		q = 1
	default:
		return -1, ""
	}
	s = s[1:]
	if !strings.HasPrefix(s, ".") {
		return q, s
	}
	s = s[1:]
	n, d, i := 0, 1, 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
		d *= 10
	}
	return q + float64(n)/float64(d), s[i:]
}
