#!/usr/bin/env bash
# ferry serve vs docker-registry serving the same image, in one run:
#   - skopeo copy of the whole image out of each (docker:// -> dir:)
#   - manifest HEAD and GET requests per second under 32 keep-alive
#     clients (examples/http_load), with p50/p99 latency
#   - ferry serve's peak RSS while 16 clients pull the image's blobs at once
#   - ferry serve's RSS holding 1 000 idle keep-alive connections
#   - FERRY_BASELINE=/path/to/older/ferry: the same figures for that binary,
#     in the same run (throughput before/after a change)
#
#   benches/serve.sh                    # 4 layers x 256 MiB (1 GiB)
#   LAYERS=2 LAYER_MB=64 DURATION=3 benches/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-4}
LAYER_MB=${LAYER_MB:-256}
SECONDS_EACH=${DURATION:-5}
source "$PWD/benches/lib.sh"
ulimit -n 4096 2>/dev/null || true
IDLE=${IDLE:-1000}
need docker-registry skopeo curl python3
cargo build --release --quiet --bin ferry --example seed_image --example http_load
ferry=$PWD/target/release/ferry
load=$PWD/target/release/examples/http_load
measure="python3 $PWD/benches/measure.py"
bench_workdir serve

BENCH_REGISTRY_LOG_LEVEL=error start_registry registry; reg=$host

echo "== building a $LAYERS x $LAYER_MB MiB image, in docker-registry and in ferry's store"
target/release/examples/seed_image --store "$work/seed" --name "$reg/bench/app:1" --layers "$LAYERS" --layer-size $((LAYER_MB * 1024 * 1024)) >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/seed:$reg/bench/app:1" "docker://$reg/bench/app:1"
"$ferry" --store "$work/served" -q pull "$reg/bench/app:1" >/dev/null
"$ferry" --store "$work/served" serve --addr 127.0.0.1:0 > "$work/serve.log" 2>&1 &
serve_pid=$!
pids+=($serve_pid)
for _ in $(seq 200); do grep -q Serving "$work/serve.log" && break; sleep 0.05; done
srv=$(sed -n 's|.*http://\([^ ]*\) .*|\1|p' "$work/serve.log" | head -n 1)

echo "== skopeo copy out of each"
sync
read -r ferry_copy _ < <($measure skopeo copy -q --src-tls-verify=false "docker://$srv/bench/app:1" "dir:$work/out-ferry" | tail -1)
sync
read -r registry_copy _ < <($measure skopeo copy -q --src-tls-verify=false "docker://$reg/bench/app:1" "dir:$work/out-registry" | tail -1)

echo "== manifest requests, 32 clients, ${SECONDS_EACH}s each"
read -r ferry_head ferry_head_p50 ferry_head_p99 < <("$load" "$srv" HEAD /v2/bench/app/manifests/1 32 "$SECONDS_EACH")
read -r reg_head reg_head_p50 reg_head_p99 < <("$load" "$reg" HEAD /v2/bench/app/manifests/1 32 "$SECONDS_EACH")
read -r ferry_get ferry_get_p50 ferry_get_p99 < <("$load" "$srv" GET /v2/bench/app/manifests/1 32 "$SECONDS_EACH")
read -r reg_get reg_get_p50 reg_get_p99 < <("$load" "$reg" GET /v2/bench/app/manifests/1 32 "$SECONDS_EACH")

echo "== 16 concurrent pulls of every blob from ferry serve"
blobs=$(python3 -c 'import json,sys; m=json.load(sys.stdin); print(" ".join(d["digest"] for d in [m["config"]]+m["layers"]))' < "$work/out-ferry/manifest.json")
pullers=()
for _ in $(seq 16); do
  (for digest in $blobs; do curl -s "http://$srv/v2/bench/app/blobs/$digest" -o /dev/null; done) &
  pullers+=($!)
done
wait "${pullers[@]}"
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")

echo "== $IDLE idle keep-alive connections held open"
rss_before_kb=$(awk '/VmRSS/ {print $2}' "/proc/$serve_pid/status")
python3 - "$srv" "$IDLE" "/proc/$serve_pid/status" > "$work/idle.txt" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
held = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: bench\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    held.append(s)
rss = [l.split()[1] for l in open(sys.argv[3]) if l.startswith("VmRSS")][0]
print(rss)
PY
idle_rss_kb=$(cat "$work/idle.txt")

baseline=
if [ -n "${FERRY_BASELINE:-}" ]; then
  echo "== the same manifest requests against the baseline binary $FERRY_BASELINE"
  "$FERRY_BASELINE" --store "$work/served" serve --addr 127.0.0.1:0 > "$work/baseline.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do grep -q Serving "$work/baseline.log" && break; sleep 0.05; done
  base=$(sed -n 's|.*http://\([^ ]*\) .*|\1|p' "$work/baseline.log" | head -n 1)
  read -r base_head _ _ < <("$load" "$base" HEAD /v2/bench/app/manifests/1 32 "$SECONDS_EACH")
  read -r base_get _ _ < <("$load" "$base" GET /v2/bench/app/manifests/1 32 "$SECONDS_EACH")
  sync
  read -r base_copy _ < <($measure skopeo copy -q --src-tls-verify=false "docker://$base/bench/app:1" "dir:$work/out-base" | tail -1)
  # Copies are noisy (the page cache, the disk writing dir:): each side
  # copies twice, alternating, and the faster of its two counts.
  rm -rf "$work/out-ferry2" "$work/out-base2"; sync
  read -r ferry_copy2 _ < <($measure skopeo copy -q --src-tls-verify=false "docker://$srv/bench/app:1" "dir:$work/out-ferry2" | tail -1)
  sync
  read -r base_copy2 _ < <($measure skopeo copy -q --src-tls-verify=false "docker://$base/bench/app:1" "dir:$work/out-base2" | tail -1)
  ferry_best=$(python3 -c "print(min($ferry_copy, $ferry_copy2))")
  base_copy=$(python3 -c "print(min($base_copy, $base_copy2))")
  baseline=1
fi

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo
printf '%-36s %14s %16s %8s\n' "" "ferry serve" "docker-registry" ratio
printf '%-36s %13.2fs %15.2fs %8s\n' "skopeo copy of the image out" "$ferry_copy" "$registry_copy" "$(ratio "$ferry_copy" "$registry_copy")"
printf '%-36s %14s %16s %8s\n' "manifest HEAD req/s (32 clients)" "$ferry_head" "$reg_head" "$(ratio "$ferry_head" "$reg_head")"
printf '%-36s %14s %16s\n' "  HEAD p50 / p99 ms" "$ferry_head_p50 / $ferry_head_p99" "$reg_head_p50 / $reg_head_p99"
printf '%-36s %14s %16s %8s\n' "manifest GET req/s (32 clients)" "$ferry_get" "$reg_get" "$(ratio "$ferry_get" "$reg_get")"
printf '%-36s %14s %16s\n' "  GET p50 / p99 ms" "$ferry_get_p50 / $ferry_get_p99" "$reg_get_p50 / $reg_get_p99"
echo "targets: copy time ratio <= 1.0; req/s ratio >= 2.0"
echo "ferry serve peak RSS after 16 concurrent pulls: $((rss_kb / 1024)) MB (target <= 64)"
echo "ferry serve RSS with $IDLE idle connections: $((idle_rss_kb / 1024)) MB (was $((rss_before_kb / 1024)) MB before them; target <= 64)"
if [ -n "$baseline" ]; then
  echo
  printf '%-36s %14s %16s %8s\n' "" "ferry serve" "baseline" ratio
  printf '%-36s %14s %16s %8s\n' "manifest HEAD req/s (32 clients)" "$ferry_head" "$base_head" "$(ratio "$ferry_head" "$base_head")"
  printf '%-36s %14s %16s %8s\n' "manifest GET req/s (32 clients)" "$ferry_get" "$base_get" "$(ratio "$ferry_get" "$base_get")"
  printf '%-36s %13.2fs %15.2fs %8s\n' "skopeo copy (best of 2)" "$ferry_best" "$base_copy" "$(ratio "$ferry_best" "$base_copy")"
  echo "target: within 10 % of the baseline (req/s ratio >= 0.90, copy ratio <= 1.10)"
fi
