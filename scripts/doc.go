// Package scripts holds the shell scripts of the quick start (demo.sh,
// fetch-geoip.sh) and their tests; it has no Go code of its own.
package scripts
