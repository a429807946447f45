#!/usr/bin/env bash
# Builds the container image infergate:$TAG the same way on every machine,
# with no image registry: the server is compiled here, then a root file
# system holding only what it needs is assembled and built FROM scratch
# (deploy/Dockerfile):
#   - /usr/local/bin/infergate (stripped of debug information);
#   - /opt/onnxruntime/libonnxruntime.so.1.31.1 (scripts/setup.sh fetches it);
#   - every library `ldd` resolves for the two, at the same paths (glibc,
#     libstdc++, libgcc_s, the loader): the image runs what was tested here;
#   - /models: the default repository (digits, tiny);
#   - /etc/passwd and /etc/group with the user infergate (65532), /tmp.
#
#   bash scripts/image.sh                    # infergate:latest, release build
#   TAG=2 PROFILE=debug bash scripts/image.sh
#   BIN=path/to/infergate bash scripts/image.sh  # a binary built already
#   DOCKER_HOST=unix:///path/docker.sock ...  # a Docker engine of your choice
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-latest}
PROFILE=${PROFILE:-release}
DOCKER=${DOCKER:-docker}
ORT=.ort/libonnxruntime.so.1.31.1

bash scripts/setup.sh >/dev/null
if [ -n "${BIN:-}" ]; then
    : # a binary built already (the tests pass the one they run)
elif [ "$PROFILE" = release ]; then
    cargo build --release --locked --bin infergate
    BIN=target/release/infergate
else
    cargo build --locked --bin infergate
    BIN=target/debug/infergate
fi

ctx=target/image
rm -rf "$ctx"
root=$ctx/root
mkdir -p "$root"/usr/local/bin "$root"/opt/onnxruntime "$root"/models "$root"/etc "$root"/tmp
objcopy --strip-debug "$BIN" "$root/usr/local/bin/infergate"
chmod 0755 "$root/usr/local/bin/infergate"
cp "$ORT" "$root/opt/onnxruntime/"
# The libraries as the loader finds them here ("name => /path (addr)"), and
# the loader itself ("/lib64/ld-linux-x86-64.so.2 (addr)").
for lib in $( (ldd "$BIN"; ldd "$ORT") | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
for model in digits tiny; do
    cp -r "models/$model" "$root/models/"
done
echo 'infergate:x:65532:65532:infergate:/nonexistent:/sbin/nologin' >"$root/etc/passwd"
echo 'infergate:x:65532:' >"$root/etc/group"
chmod 1777 "$root/tmp"

"$DOCKER" build --quiet -f deploy/Dockerfile -t "infergate:$TAG" "$ctx" >/dev/null
echo "image infergate:$TAG ($("$DOCKER" image inspect -f '{{.Size}}' "infergate:$TAG") bytes, from $BIN)"
