# shellcheck shell=bash
# Functions of scripts/demo.sh, in their own file so that a test can source
# them (scripts/demo_test.go).

# has_flag BIN FLAG: whether BIN's --help lists --FLAG=VALUE.
#
# The help text is read whole before it is searched: `BIN --help | grep -q`
# under `set -o pipefail` loses a race whenever grep exits at its first match
# while BIN is still writing — BIN dies of SIGPIPE (status 141), the pipeline
# fails, and the `if` reads that as "no such flag" (17 of 50 runs did).
has_flag() {
	local help
	help=$("$1" --help 2>&1) || true
	[[ $help == *"--$2="* ]]
}
