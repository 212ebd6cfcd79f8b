# Shared by the benchmark scripts (sourced right after `cd` to the project).

# Exit 2 naming the first tool (a command or a path) that is missing.
need() { # tool...
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || [ -x "$tool" ] || { echo "needs $tool" >&2; exit 2; }
  done
}

# Make $work (a scratch directory) and $pids (processes to stop); both go
# when the script exits, however it exits.
bench_workdir() { # name
  work=$(mktemp -d "/var/tmp/ferry-$1-bench.XXXXXX")
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
}

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Start Debian's docker-registry on a free loopback port, in this shell
# (never in a command substitution), so the caller's cleanup trap knows
# every pid. Sets $host. BENCH_REGISTRY_LOG_LEVEL sets its log level (default
# info; `error` keeps per-request log lines out of throughput figures). Not
# REGISTRY_*: docker-registry reads those as config overrides.
start_registry() { # name
  local name=$1 port level=${BENCH_REGISTRY_LOG_LEVEL:-info}
  port=$(free_port)
  mkdir -p "$work/$name"
  printf 'version: 0.1\nlog: {level: %s, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s, secret: bench}\n' \
    "$level" "$work/$name/data" "$port" > "$work/$name/config.yml"
  docker-registry serve "$work/$name/config.yml" > "$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  host="127.0.0.1:$port"
}

# Fill $src with REPOS repositories bench/r<N>/app of TAGS small tags each.
seed_repositories() { # repos tags
  local t
  for t in $(seq "$2"); do
    target/release/examples/seed_image --store "$work/seed" --name "$src/seed/app:1.$t.0" --layers 2 --layer-size 20000 --seed "$t" >/dev/null
    "$ferry" --store "$work/seed" -q push "$src/seed/app:1.$t.0" >/dev/null
  done
  seq "$1" | xargs -P 4 -I{} "$ferry" --store "$work/unused" -q copy -a "$src/seed/app" "$src/bench/r{}/app" >/dev/null
}

# Start examples/delay_proxy in front of $src, adding DELAY_MS per request.
# Sets $far; the proxy logs each request line to $work/proxy.log.
start_delay_proxy() {
  "$PWD/target/release/examples/delay_proxy" 127.0.0.1:0 "$src" "$DELAY_MS" > "$work/proxy.log" &
  pids+=($!)
  for _ in $(seq 200); do grep -q "listening on" "$work/proxy.log" && break; sleep 0.05; done
  far=$(sed -n 's/^listening on //p' "$work/proxy.log")
}
