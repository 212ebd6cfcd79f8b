#!/usr/bin/env bash
# Air-gapped transfer: back images up on the connected side, carry the
# archive across, restore on the isolated side. Digests survive the trip, so
# pinned deployments (image@sha256:...) and signatures stay valid.
set -euo pipefail

case "${1:-}" in
  export)   # connected side
    ferry pull --all-platforms docker.io/library/nginx:1.25
    ferry pull --all-platforms registry.internal:5000/team/app:2.1.10
    # One tar, each shared layer once; `ferry verify` checks it before it travels.
    ferry save -o transfer.tar docker.io/library/nginx:1.25 registry.internal:5000/team/app:2.1.10
    ferry verify transfer.tar
    # Next time, ship only what changed: a delta against the last archive.
    # ferry save --since transfer.tar -o transfer-2.tar ...
    ;;
  import)   # isolated side
    ferry verify transfer.tar
    ferry load -i transfer.tar
    # Either push into the site's registry ...
    # ferry push docker.io/library/nginx:1.25 airgap-registry.local:5000/library/nginx:1.25
    # ... or let ferry be the registry: nodes pull HOST:5000/library/nginx:1.25
    # and HOST:5000/team/app:2.1.10 (signatures and SBOMs included), and the
    # next archive loaded is served at once.
    exec ferry serve --addr 0.0.0.0:5000 --name airgap-registry.local:5000 --read-only \
      --tls-cert /etc/ferry/tls/cert.pem --tls-key /etc/ferry/tls/key.pem
    ;;
  *)
    echo "usage: $0 export|import" >&2
    exit 2
    ;;
esac
