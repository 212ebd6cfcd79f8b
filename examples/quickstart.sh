#!/usr/bin/env bash
# ferry quick start: builds ferry, starts a throwaway local registry seeded
# with generated images, and runs the quick-start config's jobs against it
# (sync, retag, backup, prune) — no internet needed.
#
#   examples/quickstart.sh            # everything in a temp dir, removed at the end
#   KEEP=1 examples/quickstart.sh     # keep the temp dir to look around
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker-registry cargo python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "quickstart needs $tool (Debian: apt-get install docker-registry python3; Rust: https://rustup.rs)" >&2
    exit 2
  fi
done

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
echo "==> quick start finished"
