#!/usr/bin/env bash
# Keep N cores busy with plain CPU work, to run the test suite the way a loaded CI
# machine runs it (docs/contributing.md, "The suite under load").
#
#   tools/busy.sh 2 -- make test     # both cores busy while `make test` runs
#   tools/busy.sh 2 &                # busy until killed (Ctrl-C, or kill %1)
#
# Each busy process is a shell loop at normal priority: it competes for the cores like
# any other job (a neighbour's build, another suite), takes no memory and no I/O.
set -euo pipefail

count=${1:-$(nproc)}
shift || true
if ! [[ $count =~ ^[0-9]+$ ]] || [ "$count" -lt 1 ]; then
	echo "usage: tools/busy.sh [CORES] [-- COMMAND ...]  (CORES: a whole number >= 1)" >&2
	exit 2
fi

pids=()
stop() {
	if [ ${#pids[@]} -gt 0 ]; then
		kill "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
}
trap stop EXIT
trap 'exit 130' INT TERM

for _ in $(seq "$count"); do
	bash -c 'while :; do :; done' &
	pids+=($!)
done
echo "busy.sh: $count busy loop(s): ${pids[*]}" >&2

if [ "${1:-}" = "--" ]; then
	shift
	[ $# -gt 0 ] || { echo "busy.sh: nothing to run after --" >&2; exit 2; }
	set +e
	"$@"
	status=$?
	set -e
	exit "$status"
fi
wait
