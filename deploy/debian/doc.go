// Package debian holds the Debian package of bangui_exporter (nfpm.yaml,
// maintainer scripts, /etc/default file, lintian overrides; built by
// build.sh and `make package`) and its real-host test: a Debian bookworm
// rootfs booted with systemd-nspawn, the package installed with dpkg beside
// Debian's fail2ban, checked from the host. It has no Go code of its own.
package debian
