#!/usr/bin/env bash
# The README's test command: install the peers the tests talk to (Debian
# packages, with apt-get, as root or through sudo; Garage built from
# crates.io and cached) when any is missing, then run the whole suite.
# Extra arguments go to `cargo test`.
#
#   tests/run.sh                 # everything
#   tests/run.sh serve::         # one module
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v tar >/dev/null || need+=(tar)
command -v podman >/dev/null || need+=(podman uidmap)
command -v dockerd >/dev/null || need+=(docker.io)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing test peers: ${need[*]}" >&2
  sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "tests/run.sh: installing ${need[*]} needs root (run as root, or install sudo)" >&2
      exit 2
    }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Garage (the S3-compatible object store the object-storage tests run as a
# three-node cluster) comes from crates.io: built once (~8 minutes on two
# cores) into ~/.cache/ferry-peers/garage and reused by every later run.
garage_root="${FERRY_GARAGE_ROOT:-$HOME/.cache/ferry-peers/garage}"
if ! command -v garage >/dev/null && [ ! -x "$garage_root/bin/garage" ]; then
  echo "==> building garage once into $garage_root (cached for later runs)" >&2
  cargo install --locked --quiet garage --version 2.5.0 --root "$garage_root"
fi
export PATH="$PATH:$garage_root/bin"

exec cargo test --locked -- "$@"
