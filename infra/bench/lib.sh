# Shared by the benchmark scripts: a release `strata serve` on a fresh data directory and free ports, wrk
# runs that fail loudly on any error, and medians with ratios against the same-run /health baseline.
# The server and the load generator share the machine's cores: figures are for that setup.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONNECTIONS=${CONNECTIONS:-20}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# STRATA=path/to/strata uses that binary instead of building the release one.
build_strata() {
  if [[ -z ${STRATA:-} ]]; then
    cargo build --release -q -p strata --manifest-path "$root/Cargo.toml"
    STRATA="$root/target/release/strata"
  fi
}

start_server() {
  build_strata
  DATA=$(mktemp -d)
  local port line_port
  port=$(free_port)
  line_port=$(free_port)
  "$STRATA" serve --listen "127.0.0.1:$port" --line-listen "127.0.0.1:$line_port" --data-dir "$DATA" "$@" \
    >"$DATA.log" 2>&1 &
  SERVER=$!
  trap stop_server EXIT
  URL="http://127.0.0.1:$port"
  LINE_PORT=$line_port
  until curl -sf "$URL/health" >/dev/null; do sleep 0.1; done
}

stop_server() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$DATA" "$DATA.log"
}

wrk_rate() { # prints requests/s; fails on any non-2xx or socket error
  local out
  command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "$@")
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "wrk reported errors:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

declare -A RESULTS
record() { RESULTS[$1]+="$2 "; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

report() { # report TITLE baseline workload...
  local title=$1 base
  shift
  base=$(median "${RESULTS[$1]}")
  printf '%-30s %12s %8s   %s\n' "$title (c=$CONNECTIONS)" "median req/s" "x first" "all rounds"
  for w in "$@"; do
    local m
    m=$(median "${RESULTS[$w]}")
    printf '%-30s %12.0f %8.2f   %s\n' "$w" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {print a / b}')" "${RESULTS[$w]}"
  done
}
