package f2bgen

import (
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"
)

var (
	sshUsers  = []string{"root", "admin", "test", "user", "ubuntu", "oracle", "postgres", "git", "ftpuser", "pi", "guest", "deploy"}
	botPaths  = []string{"/wp-login.php", "/xmlrpc.php", "/.env", "/phpmyadmin/index.php", "/admin/config.php", "/cgi-bin/luci", "/.git/config", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php"}
	mailUsers = []string{"info", "admin", "support", "sales", "contact", "webmaster", "test", "office"}
	hostNames = []string{"web1", "mail", "vps", "srv01"}
)

// appendBanData appends the data column of a ban as fail2ban stores it:
// json.dumps(ticket data, ensure_ascii=False) encoded as UTF-8, with the
// keys matches, failures and the address group (ip4 or ip6).
func appendBanData(buf []byte, spec *Spec, jail *Jail, ipText string, is6 bool, ev *event) []byte {
	if ev.manual {
		return append(buf, `{"matches": [], "failures": 0}`...)
	}
	// Details depend only on the event, so a row can be rebuilt anywhere.
	rng := rand.New(rand.NewPCG(spec.Seed^uint64(ev.pair)<<20, uint64(ev.timeofban)))
	failures := jail.MaxRetry + rng.IntN(2)
	nMatches := min(failures, spec.MatchesPerBan)
	buf = append(buf, `{"matches": [`...)
	host := hostNames[int(spec.Seed%uint64(len(hostNames)))]
	for i := range nMatches {
		if i > 0 {
			buf = append(buf, ", "...)
		}
		// The last match is the failure that triggered the ban at timeofban.
		at := time.Unix(ev.timeofban-int64(3*(nMatches-1-i)), 0).UTC()
		prefix, date, rest := logLine(rng, jail, host, ipText, at)
		buf = append(buf, '[')
		buf = appendJSONString(buf, prefix)
		buf = append(buf, ", "...)
		buf = appendJSONString(buf, date)
		buf = append(buf, ", "...)
		buf = appendJSONString(buf, rest)
		buf = append(buf, ']')
	}
	buf = append(buf, `], "failures": `...)
	buf = strconv.AppendInt(buf, int64(failures), 10)
	if is6 {
		buf = append(buf, `, "ip6": `...)
	} else {
		buf = append(buf, `, "ip4": `...)
	}
	buf = appendJSONString(buf, ipText)
	return append(buf, '}')
}

// logLine returns one log match split as fail2ban stores it: the text before
// the date, the date as written in the log, and the rest of the line.
func logLine(rng *rand.Rand, jail *Jail, host, ip string, at time.Time) (prefix, date, rest string) {
	syslogDate := at.Format(time.Stamp)
	pid := strconv.Itoa(1000 + rng.IntN(60000))
	port := strconv.Itoa(1024 + rng.IntN(64000))
	switch jail.Filter {
	case FilterNginxBots:
		return ip + ` - - [`, at.Format("02/Jan/2006:15:04:05 -0700"),
			`] "GET ` + botPaths[rng.IntN(len(botPaths))] + ` HTTP/1.1" 404 153 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"`
	case FilterNginxAuth:
		return "", at.Format("2006/01/02 15:04:05"),
			` [error] ` + pid + `#` + pid + `: *` + port + ` user "` + sshUsers[rng.IntN(len(sshUsers))] +
				`" was not found in "/etc/nginx/.htpasswd", client: ` + ip + `, server: example.org, request: "GET /admin/ HTTP/1.1", host: "example.org"`
	case FilterPostfix:
		return "", syslogDate, ` ` + host + ` postfix/smtpd[` + pid + `]: warning: unknown[` + ip + `]: SASL LOGIN authentication failed: UGFzc3dvcmQ6`
	case FilterDovecot:
		return "", syslogDate, ` ` + host + ` dovecot: auth-worker(` + pid + `): pam(` + mailUsers[rng.IntN(len(mailUsers))] + `,` + ip + `): unknown user`
	case FilterRecidive:
		return "", at.Format("2006-01-02 15:04:05,000"), ` fail2ban.actions        [` + pid + `]: NOTICE  [sshd] Ban ` + ip
	default:
		return "", syslogDate, ` ` + host + ` sshd[` + pid + `]: Failed password for ` + sshUsers[rng.IntN(len(sshUsers))] + ` from ` + ip + ` port ` + port + ` ssh2`
	}
}

// appendJSONString appends s as Python's json.dumps(ensure_ascii=False)
// writes it: quotes, backslash and control characters escaped, everything
// else verbatim.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			buf = utf8.AppendRune(buf, r)
			i += size
			continue
		}
		switch c {
		case '"':
			buf = append(buf, '\\', '"')
		case '\\':
			buf = append(buf, '\\', '\\')
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		case '\b':
			buf = append(buf, '\\', 'b')
		case '\f':
			buf = append(buf, '\\', 'f')
		default:
			if c < 0x20 {
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				buf = append(buf, c)
			}
		}
		i++
	}
	return append(buf, '"')
}
