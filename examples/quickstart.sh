#!/usr/bin/env bash
# ferry quick start: builds ferry, starts a throwaway local registry, and
# runs a real push, pull and copy against it. No internet needed.
#
#   examples/quickstart.sh            # everything in a temp dir, removed at the end
#   KEEP=1 examples/quickstart.sh     # keep the temp dir to look around
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker-registry cargo; do
  if ! command -v "$tool" >/dev/null; then
    echo "quickstart needs $tool (Debian: apt-get install docker-registry; Rust: https://rustup.rs)" >&2
    exit 2
  fi
done

echo "==> building ferry (release)"
cargo build --release --quiet --bin ferry --example seed_image
ferry=$PWD/target/release/ferry
seed=$PWD/target/release/examples/seed_image

work=$(mktemp -d)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $host, secret: quickstart}
YAML
echo "==> starting a local registry on $host"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/registry.log" && break
  sleep 0.1
done
grep -q "listening on" "$work/registry.log" || { cat "$work/registry.log"; exit 1; }

export FERRY_STORE=$work/store
export DOCKER_CONFIG=$work/docker

echo "==> generating a demo image in a seed store"
"$seed" --store "$work/seed" --name "$host/demo/app:1.0" --layers 3 --layer-size 4000000

echo "==> ferry push (seed store -> registry)"
"$ferry" --store "$work/seed" push "$host/demo/app:1.0"

echo "==> ferry pull (registry -> store)"
"$ferry" pull "$host/demo/app:1.0"

echo "==> ferry copy (registry -> registry, digest kept, blobs mounted)"
"$ferry" copy "$host/demo/app:1.0" "$host/mirror/app:1.0"
"$ferry" tags "$host/mirror/app"

echo "==> ferry images / history / df / verify"
"$ferry" tag "$host/demo/app:1.0" demo:latest
"$ferry" images
"$ferry" history demo:latest
"$ferry" df -v
"$ferry" verify --read-data
echo "==> quick start finished"
