#!/usr/bin/env bash
# ferry quick start: builds ferry, starts `ferry serve` as a throwaway local
# registry seeded with generated images, and runs the quick-start config's
# jobs against it (sync, retag, backup, prune). Needs only the Rust
# toolchain: no internet, no other registry, no packages.
#
#   examples/quickstart.sh            # everything in a temp dir, removed at the end
#   KEEP=1 examples/quickstart.sh     # keep the temp dir to look around
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "quickstart needs the Rust toolchain (https://rustup.rs)" >&2
  exit 2
fi

echo "==> building ferry (release)"
cargo build --release --quiet --bin ferry --example seed_image
ferry=$PWD/target/release/ferry
seed=$PWD/target/release/examples/seed_image
examples=$PWD/examples

work=$(mktemp -d)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

# The registry is ferry itself, serving a store of its own (any free port;
# pushes without a login are fine on loopback for a demo).
"$ferry" --store "$work/registry" serve --addr 127.0.0.1:0 --allow-anonymous-push \
  >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  grep -q "Serving" "$work/registry.log" && break
  sleep 0.1
done
host=$(sed -n 's|.*http://\([^ ]*\) .*|\1|p' "$work/registry.log" | head -n 1)
[ -n "$host" ] || { cat "$work/registry.log"; exit 1; }
echo "==> ferry serve is the local registry on $host"

cd "$work"
export FERRY_STORE=$work/store DOCKER_CONFIG=$work/docker

echo "==> seeding $host/demo/app with generated images (1.0.0 1.1.0 1.2.0 2.0.0)"
seed_number=1
for tag in 1.0.0 1.1.0 1.2.0 2.0.0; do
  "$seed" --store "$work/seed" --name "$host/demo/app:$tag" --layers 2 --layer-size 2000000 --seed $seed_number >/dev/null
  "$ferry" --store "$work/seed" -q push "$host/demo/app:$tag" >/dev/null
  seed_number=$((seed_number + 1))
done

sed "s/127.0.0.1:5000/$host/g" "$examples/quickstart.toml" > "$work/ferry.toml"
export FERRY_CONFIG=$work/ferry.toml

echo "==> ferry config check"
"$ferry" config check
echo "==> ferry run (sync, retag, backup, prune)"
"$ferry" run
echo "==> ferry run again: the mirror is up to date (checked with HEADs only); backup writes its next archive and rotates"
"$ferry" run
echo "==> the result"
"$ferry" tags "$host/mirror/app"
"$ferry" jobs
ls -l backups
"$ferry" images
"$ferry" verify --read-data
echo "==> what the registry (ferry serve) holds"
"$ferry" --store "$work/registry" images
echo "==> quick start finished"
