#!/usr/bin/env bash
# One wildcard sync job split over 4 workers (`ferry run --shard I/4`,
# split = "repositories") against one worker, first sync of REPOS
# repositories x TAGS tags through a proxy adding DELAY_MS per request (a
# registry far away). Each worker has its own store (job state), as pods do.
#
#   benches/shards.sh                         # 200 x 2, 50 ms
#   REPOS=50 TAGS=2 benches/shards.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=${REPOS:-200}
TAGS=${TAGS:-2}
DELAY_MS=${DELAY_MS:-50}
source "$PWD/benches/lib.sh"
need docker-registry curl python3
cargo build --release --quiet --bin ferry --example seed_image --example delay_proxy
ferry=$PWD/target/release/ferry
bench_workdir shard

# As measured: the registries log errors only.
export BENCH_REGISTRY_LOG_LEVEL=error

start_registry source; src=$host
echo "== seeding $REPOS repositories x $TAGS tags"
seed_repositories "$REPOS" "$TAGS"
start_delay_proxy

config() { # target-host -> config file path
  printf 'version = 1\n[[sync]]\nname = "scale"\nsource = "%s/bench/**"\ntarget = "%s/mirror"\nsplit = "repositories"\n' "$far" "$1" > "$work/ferry-$2.toml"
  echo "$work/ferry-$2.toml"
}

echo "== one worker"
start_registry one; conf=$(config "$host" one)
start=$(date +%s.%N)
FERRY_CONFIG=$conf "$ferry" --store "$work/w-one" -q run
one=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")

echo "== four workers (--shard I/4), at once"
start_registry four; conf=$(config "$host" four)
start=$(date +%s.%N)
workers=()
for i in 0 1 2 3; do
  FERRY_CONFIG=$conf "$ferry" --store "$work/w-$i" -q run --shard "$i/4" &
  workers+=($!)
done
wait "${workers[@]}"
four=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")

echo
echo "$REPOS repositories x $TAGS tags, +${DELAY_MS} ms per request, first sync"
echo "one worker:   ${one}s"
echo "four shards:  ${four}s  (speed-up $(python3 -c "print(f'{$one/$four:.2f}')"))"
