#!/usr/bin/env bash
# Archives to and from object storage: one Garage node on loopback (the
# binary tests/run.sh builds), an image of LAYERS x LAYER_MB MiB of random
# data in a store. Measures, with time and peak memory (benches/measure.py):
#   save -o FILE (local disk) | save -o s3:// | curl PUT of the same file (the floor)
#   load -i FILE              | load -i s3:// | curl GET of the same object (the floor)
#
#   benches/object_store.sh                   # 4 x 64 MiB
#   LAYERS=8 LAYER_MB=128 benches/object_store.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-4}
LAYER_MB=${LAYER_MB:-64}
garage=$(command -v garage || echo "$HOME/.cache/ferry-peers/garage/bin/garage")
source "$PWD/benches/lib.sh"
need "$garage" curl python3 openssl  # tests/run.sh builds garage
cargo build --release --quiet --bin ferry --example seed_image
ferry=$PWD/target/release/ferry
bench_workdir s3
s3=$(free_port); rpc=$(free_port); admin=$(free_port)
cat > "$work/garage.toml" <<TOML
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
api_bind_addr = "127.0.0.1:$s3"
s3_region = "garage"
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "bench"
TOML
G=("$garage" -c "$work/garage.toml")
RUST_LOG=warn "${G[@]}" server > "$work/garage.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do "${G[@]}" status >/dev/null 2>&1 && break; sleep 0.05; done
id=$("${G[@]}" node id -q | cut -d@ -f1)
"${G[@]}" layout assign -z dc1 -c 1G "$id" >/dev/null
"${G[@]}" layout apply --version 1 >/dev/null
key=GK00112233445566778899aabb; secret=$(openssl rand -hex 32)
"${G[@]}" key import --yes -n bench "$key" "$secret" >/dev/null
"${G[@]}" bucket create bench >/dev/null
"${G[@]}" bucket allow --read --write --owner bench --key bench >/dev/null
export AWS_ENDPOINT=http://127.0.0.1:$s3 AWS_ALLOW_HTTP=true AWS_REGION=garage AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret

target/release/examples/seed_image --store "$work/store" --name bench/big:1 --layers "$LAYERS" --layer-size $((LAYER_MB << 20)) --seed 7 >/dev/null
size=$((LAYERS * LAYER_MB))
measure() { python3 benches/measure.py "$@" 2>&1 | tail -1; }
sigv4=(--aws-sigv4 "aws:amz:garage:s3" --user "$key:$secret")
echo "== $size MiB image"
echo "save -o FILE:      $(measure "$ferry" --store "$work/store" -q save -o "$work/big.tar" bench/big:1)"
echo "save -o s3://:     $(measure "$ferry" --store "$work/store" -q save -o s3://bench/big.tar bench/big:1)"
sha=$(sha256sum "$work/big.tar" | cut -d' ' -f1)
echo "curl PUT (floor):  $(measure curl -fsS "${sigv4[@]}" -H "x-amz-content-sha256: $sha" -T "$work/big.tar" "$AWS_ENDPOINT/bench/curl.tar")"
echo "load -i FILE:      $(measure "$ferry" --store "$work/s1" -q load -i "$work/big.tar")"
echo "load -i s3://:     $(measure "$ferry" --store "$work/s2" -q load -i s3://bench/big.tar)"
empty=$(printf '' | sha256sum | cut -d' ' -f1)
echo "curl GET (floor):  $(measure curl -fsS "${sigv4[@]}" -H "x-amz-content-sha256: $empty" -o "$work/got.tar" "$AWS_ENDPOINT/bench/curl.tar")"
echo "(columns: seconds, peak RSS MiB)"
