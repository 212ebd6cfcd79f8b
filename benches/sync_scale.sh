#!/usr/bin/env bash
# A sync job over many repositories, in one run: a local registry holding
# REPOS repositories x TAGS tags (small images) is mirrored by a wildcard
# job (first sync), then re-synced unchanged with parallel_images 1 and 8
# through a proxy that adds DELAY_MS to every request (a registry far away).
# Prints times, the ratio, the GETs the unchanged re-syncs made, peak RSS.
#
#   benches/sync_scale.sh                      # 300 x 5, 50 ms
#   REPOS=50 TAGS=3 DELAY_MS=50 benches/sync_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=${REPOS:-300}
TAGS=${TAGS:-5}
DELAY_MS=${DELAY_MS:-50}
source "$PWD/benches/lib.sh"
need docker-registry curl python3
cargo build --release --quiet --bin ferry --example seed_image --example delay_proxy
ferry=$PWD/target/release/ferry
measure="python3 $PWD/benches/measure.py"
bench_workdir sync

# As measured: the registries log errors only.
export BENCH_REGISTRY_LOG_LEVEL=error

start_registry source; src=$host
start_registry target; dst=$host
echo "== seeding $REPOS repositories x $TAGS tags"
seed_repositories "$REPOS" "$TAGS"

start_delay_proxy

job() { # source-host -> writes the config
  printf 'version = 1\n[[sync]]\nname = "scale"\nsource = "%s/bench/**"\ntarget = "%s/mirror"\n' "$1" "$dst" > "$work/ferry.toml"
}
run() { # label parallel -> "seconds rss"
  FERRY_CONFIG=$work/ferry.toml $measure "$ferry" --store "$work/state" -q run --parallel-images "$2" | tail -1
}

echo "== first sync (no delay), parallel_images 8"
job "$src"
read -r first first_rss < <(run first 8)
echo "== unchanged re-syncs through the ${DELAY_MS} ms proxy"
job "$far"
# The job's state is keyed by source name: one run through the proxy's
# address first, so the measured runs are true unchanged re-syncs.
run warm 8 >/dev/null
: > "$work/proxy.log"
read -r one one_rss < <(run one 1)
gets_one=$(grep -c '^GET .*/\(manifests\|blobs\)/' "$work/proxy.log" || true)
heads_one=$(grep -c '^HEAD ' "$work/proxy.log" || true)
: > "$work/proxy.log"
read -r eight eight_rss < <(run eight 8)
gets_eight=$(grep -c '^GET .*/\(manifests\|blobs\)/' "$work/proxy.log" || true)
echo "== unchanged re-sync, no delay, parallel_images 8"
job "$src"
read -r near near_rss < <(run near 8)

images=$((REPOS * TAGS))
echo
echo "$REPOS repositories x $TAGS tags = $images images"
printf '%-52s %8.2fs  (RSS %s MB)\n' "first sync, parallel 8, no delay" "$first" "$first_rss"
printf '%-52s %8.2fs  (RSS %s MB)\n' "unchanged re-sync, parallel 8, no delay" "$near" "$near_rss"
printf '%-52s %8.2fs  (RSS %s MB, %s HEADs, %s manifest/blob GETs)\n' "unchanged re-sync, parallel 1, +${DELAY_MS} ms" "$one" "$one_rss" "$heads_one" "$gets_one"
printf '%-52s %8.2fs  (RSS %s MB, %s manifest/blob GETs)\n' "unchanged re-sync, parallel 8, +${DELAY_MS} ms" "$eight" "$eight_rss" "$gets_eight"
echo "speed-up 8 vs 1 under the delay: $(python3 -c "print(f'{$one/$eight:.2f}')") (target >= 5); GETs target 0; RSS target <= 64 MB"
