#!/usr/bin/env bash
# Builds here everything benches/gpu_check.sh needs on a GPU machine that can fetch nothing, into
# one carry folder (.gpu/, ignored by git through .git/info/exclude):
#   .gpu/unleash.xz      the headless binary (--no-default-features --features wgpu), stripped, xz
#   .gpu/debs/*.deb      the Vulkan/EGL/GL loaders (the device tool's recipe: dpkg -x to /, ldconfig)
#   .gpu/tools/*.deb     vulkan-tools (vulkaninfo), unpacked elsewhere, never to /
# The sample data and the scripts travel with the working tree. Then, with a device loan, one call:
#   run(carry=[".gpu"], timeout_s=600, command="bash benches/gpu_check.sh --device gpu")
# Usage (repository root, Debian/Ubuntu x86-64 with apt): benches/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unleash-ci-target}"
C=.gpu
mkdir -p "$C/debs" "$C/tools"
if [ -d .git ] && ! grep -qx '/.gpu/' .git/info/exclude 2>/dev/null; then
  mkdir -p .git/info && echo '/.gpu/' >> .git/info/exclude
fi

# The binary. Its own feature set, so cargo keeps it beside the default (GUI) build's artifacts in
# the same target folder: switching back costs a relink of target/release/unleash, not a rebuild.
cargo build --release --no-default-features --features wgpu --bin unleash
BIN="$CARGO_TARGET_DIR/release/unleash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$BIN" "$tmp/unleash"
strip "$tmp/unleash"
xz -9 -T0 -c "$tmp/unleash" > "$C/unleash.xz.part" && mv "$C/unleash.xz.part" "$C/unleash.xz"
echo "binary: $(stat -c %s "$tmp/unleash") bytes stripped, $(stat -c %s "$C/unleash.xz") bytes as $C/unleash.xz"
# Record which sources it was built from, so a stale carry is visible in the device's log.
{ echo "built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+uncommitted changes')"; "$tmp/unleash" --version 2>/dev/null || true; } > "$C/BUILD_INFO"

# The .debs (amd64 whatever this machine is, as the device tool's README does it).
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-lists)
mkdir -p /tmp/amd64-lists/partial
apt-get "${o[@]}" update -qq
rm -f "$C"/debs/*.deb "$C"/tools/*.deb
(cd "$C/debs" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
(cd "$C/tools" && apt-get "${o[@]}" download vulkan-tools)
du -sh "$C"; ls -l "$C" "$C/debs" "$C/tools"
echo "carry folder ready: $C ($(du -sm "$C" | cut -f1) MiB of the device call's 64 MiB)"
