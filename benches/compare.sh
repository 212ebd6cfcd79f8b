#!/usr/bin/env bash
# ferry vs skopeo in one run, on fresh local registries (no internet):
#   copy  registry -> registry : ferry copy  vs skopeo copy docker:// docker://
#   pull  registry -> disk     : ferry pull  vs skopeo copy docker:// dir:
#   save, archive -> registry (ferry copy archive:) and registry -> archive
#   (ferry copy IMAGE archive:) against skopeo's docker-archive transport
# plus the floors: the same blobs uploaded from disk by parallel curl, and
# downloaded + hashed by parallel curl. Prints each ratio and ferry's peak RSS.
#
#   benches/compare.sh                  # 4 layers x 256 MiB (1 GiB)
#   LAYERS=6 LAYER_MB=200 benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-4}
LAYER_MB=${LAYER_MB:-256}
source "$PWD/benches/lib.sh"
need docker-registry skopeo curl python3
cargo build --release --quiet --bin ferry --example seed_image
ferry=$PWD/target/release/ferry
measure="python3 $PWD/benches/measure.py"
bench_workdir compare


echo "== building a $LAYERS x $LAYER_MB MiB image"
start_registry source; src=$host
name="$src/bench/app:1"
target/release/examples/seed_image --store "$work/seed" --name "$name" --layers "$LAYERS" --layer-size $((LAYER_MB * 1024 * 1024)) >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/seed:$name" "docker://$name"
blobs=$(python3 - "$work/seed" "$name" <<'PY'
import json, sys
store, name = sys.argv[1], sys.argv[2]
index = json.load(open(f"{store}/index.json"))
entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == name)
manifest = json.load(open(f"{store}/blobs/sha256/{entry['digest'][7:]}"))
print(" ".join(d["digest"] for d in [manifest["config"]] + manifest["layers"]))
PY
)
echo "   $(du -sh "$work/seed/blobs" | cut -f1) of blobs"

run() { # label, command... -> prints "label seconds rss"
  local label=$1; shift
  local result
  sync # earlier steps' dirty pages must not be flushed during this one
  result=$($measure "$@" | tail -1)
  echo "$label $result"
}

echo "== copy: registry -> registry"
start_registry ferry-copy; d1=$host; start_registry skopeo-copy; d2=$host; start_registry curl-copy; d3=$host
read -r _ ferry_copy ferry_copy_rss < <(run ferry "$ferry" --store "$work/unused" -q copy "$name" "$d1/bench/app:1")
read -r _ skopeo_copy _ < <(run skopeo skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$name" "docker://$d2/bench/app:1")
upload_all() {
  for digest in $blobs; do
    (
      location=$(curl -s -D - -o /dev/null -X POST "http://$d3/v2/bench/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
      case "$location" in http*) ;; *) location="http://$d3$location";; esac
      sep='?'; case "$location" in *\?*) sep='&';; esac
      curl -s -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$work/seed/blobs/sha256/${digest#sha256:}" "$location${sep}digest=$digest"
    ) &
  done
  wait
}
export -f upload_all; export blobs d3 work
read -r _ curl_copy _ < <(run curl bash -c upload_all)

echo "== pull: registry -> disk"
read -r _ ferry_pull ferry_pull_rss < <(run ferry "$ferry" --store "$work/ferry-store" -q pull "$name")
read -r _ skopeo_pull _ < <(run skopeo skopeo copy -q --src-tls-verify=false "docker://$name" "dir:$work/skopeo-dir")
download_all() {
  for digest in $blobs; do
    (curl -s "http://$src/v2/bench/app/blobs/$digest" | sha256sum > /dev/null) &
  done
  wait
}
export -f download_all; export src
read -r _ curl_pull _ < <(run curl bash -c download_all)

echo "== archives: save, and archive -> registry"
read -r _ ferry_save ferry_save_rss < <(run ferry "$ferry" --store "$work/ferry-store" -q save -o "$work/ferry.tar" "$name")
read -r _ skopeo_save _ < <(run skopeo skopeo copy -q "oci:$work/ferry-store:$name" "docker-archive:$work/skopeo.tar:$name")
docker_save=n/a
if command -v dockerd >/dev/null && [ "$(id -u)" -eq 0 ]; then
  mkdir -p "$work/docker"
  dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs --data-root "$work/docker/root" \
    --exec-root "$work/docker/exec" --pidfile "$work/docker/pid" -H "unix://$work/docker/sock" > "$work/docker/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do grep -q "API listen on" "$work/docker/log" && break; sleep 0.05; done
  DOCKER_HOST="unix://$work/docker/sock" docker load -q -i "$work/ferry.tar" > /dev/null
  read -r _ docker_save _ < <(run docker env DOCKER_HOST="unix://$work/docker/sock" docker save -o "$work/docker.tar" "$name")
fi
start_registry ferry-restore; d4=$host; start_registry skopeo-restore; d5=$host
read -r _ ferry_restore ferry_restore_rss < <(run ferry "$ferry" --store "$work/unused" -q copy "archive:$work/ferry.tar" "$d4")
read -r _ skopeo_restore _ < <(run skopeo skopeo copy -q --dest-tls-verify=false "docker-archive:$work/skopeo.tar" "docker://$d5/bench/app:1")

echo "== registry -> archive"
read -r _ ferry_backup ferry_backup_rss < <(run ferry "$ferry" --store "$work/unused" -q copy "$name" "archive:$work/ferry-remote.tar")
read -r _ skopeo_backup _ < <(run skopeo skopeo copy -q --src-tls-verify=false "docker://$name" "docker-archive:$work/skopeo-remote.tar:$name")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo
printf '%-34s %8s %8s %8s %10s\n' "" ferry skopeo curl "ferry/skopeo"
printf '%-34s %7.2fs %7.2fs %7.2fs %10s\n' "copy registry->registry" "$ferry_copy" "$skopeo_copy" "$curl_copy" "$(ratio "$ferry_copy" "$skopeo_copy")"
printf '%-34s %7.2fs %7.2fs %7.2fs %10s\n' "pull registry->disk" "$ferry_pull" "$skopeo_pull" "$curl_pull" "$(ratio "$ferry_pull" "$skopeo_pull")"
echo "floor/skopeo: copy $(ratio "$curl_copy" "$skopeo_copy"), pull $(ratio "$curl_pull" "$skopeo_pull")"
printf '%-34s %7.2fs %7.2fs %8s %10s\n' "save store->archive" "$ferry_save" "$skopeo_save" "docker $docker_save" "$(ratio "$ferry_save" "$skopeo_save")"
printf '%-34s %7.2fs %7.2fs %8s %10s\n' "archive->registry (copy archive:)" "$ferry_restore" "$skopeo_restore" "" "$(ratio "$ferry_restore" "$skopeo_restore")"
printf '%-34s %7.2fs %7.2fs %8s %10s\n' "registry->archive (copy archive:)" "$ferry_backup" "$skopeo_backup" "" "$(ratio "$ferry_backup" "$skopeo_backup")"
echo "ferry/floor: copy $(ratio "$ferry_copy" "$curl_copy") (target <= 1.1), pull $(ratio "$ferry_pull" "$curl_pull") (target <= 1.3), archive->registry $(ratio "$ferry_restore" "$curl_copy") (target <= 1.2)"
echo "ferry peak RSS: copy ${ferry_copy_rss} MB, pull ${ferry_pull_rss} MB, save ${ferry_save_rss} MB, archive->registry ${ferry_restore_rss} MB, registry->archive ${ferry_backup_rss} MB (target <= 32)"
