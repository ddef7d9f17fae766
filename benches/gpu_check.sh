#!/usr/bin/env bash
# One prepared device check (issue 21): why Vulkan does or does not work on the machine, then
# unleash on wgpu against unleash on flex (same binary, the machine's CPUs) and against PyTorch
# eager (CUDA on the same card), and a 5-epoch training run on both devices.
#
#   benches/gpu_prepare.sh                         # here, once: builds .gpu/ (binary, .debs)
#   benches/gpu_check.sh [--device gpu|cpu] [--out DIR] [--bin PATH] [--budget SECONDS]
#   benches/gpu_check.sh --prepare                 # the same as benches/gpu_prepare.sh
#
# Device tool: run(carry=[".gpu"], timeout_s=600, command="bash benches/gpu_check.sh --device gpu")
# Everything lands in --out (default $OUT, else /tmp/gpucheck), six files, within the device tool's
# eight: summary.txt, summary.json, results.json, diagnostics.txt, vulkan.txt, log.txt.
# --device cpu runs every step on this machine's CPU, with small sizes, so that the only untried
# part on a device is the GPU itself. A failing step is recorded and the script goes on; steps that
# would not fit the time budget (default 540 s, under the tool's 600 s per command) are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEV=gpu OUT_DIR=${OUT:-/tmp/gpucheck} BIN="" BUDGET=540
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEV=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --prepare) exec bash benches/gpu_prepare.sh ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
case $DEV in gpu|cpu) ;; *) echo "--device must be gpu or cpu"; exit 2 ;; esac
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -f "$OUT_DIR"/{summary.txt,summary.json,results.json,diagnostics.txt,vulkan.txt,log.txt}
W=$(mktemp -d /tmp/gpucheck-work.XXXXXX)
LOG=$OUT_DIR/log.txt DIAG=$OUT_DIR/diagnostics.txt VK=$OUT_DIR/vulkan.txt
exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
echo "gpu_check: --device $DEV, out $OUT_DIR, work $W, budget ${BUDGET}s, started $(date -u +%FT%TZ)"
: > "$W/steps.tsv"
# Headless: no display server; an unset XDG_RUNTIME_DIR only makes the loader's WSI layers chatter.
export XDG_RUNTIME_DIR=$W/xdg; mkdir -m 700 -p "$XDG_RUNTIME_DIR"
# unleash runs in a private working folder: it finds sample_data (and bench --pytorch finds
# benches/) through links there, and cubecl reads the cubecl.toml that tune_log writes there, not
# one in the checkout. cubecl (burn 0.22 without its `persistence` feature, as this crate builds
# it) keeps no autotune cache on disk: every process tunes anew, and the log says for how long.
mkdir -p "$W/cwd"; ln -s "$ROOT/sample_data" "$W/cwd/sample_data"; ln -s "$ROOT/benches" "$W/cwd/benches"
tune_log() {
  printf '[autotune.logger]\nlevel = "full"\nappend = false\nfile = "%s"\n' "$W/autotune_$1.log" > "$W/cwd/cubecl.toml"
}

# step NAME SECONDS_NEEDED TIMEOUT OUTFILE CMD...: runs CMD (stdout to OUTFILE, stderr to the log)
# unless fewer than SECONDS_NEEDED are left; records name, exit status and wall time.
step() {
  local name=$1 need=$2 limit=$3 outfile=$4; shift 4
  if [ "$(left)" -lt "$need" ]; then
    echo "--- $name: SKIPPED, $(left)s left of the budget and it needs about ${need}s"
    printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$W/steps.tsv"
    return 99
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  echo "--- $name (limit ${limit}s): $*"
  local t0 rc secs
  t0=$(date +%s%N)
  timeout --kill-after=5 "$limit" "$@" > "$outfile"
  rc=$?
  secs=$(( ($(date +%s%N) - t0) / 1000000 )); secs=$(printf '%d.%03d' $((secs / 1000)) $((secs % 1000)))
  echo "--- $name: exit $rc in ${secs}s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >> "$W/steps.tsv"
  return $rc
}

# ---- the binary ----------------------------------------------------------------------------
if [ -z "$BIN" ]; then
  if [ -f "$ROOT"/.gpu/unleash.xz ]; then
    xz -dc "$ROOT"/.gpu/unleash.xz > "$W/unleash" && chmod +x "$W/unleash" && BIN=$W/unleash
    echo "binary: .gpu/unleash.xz ($(cat "$ROOT"/.gpu/BUILD_INFO 2>/dev/null | head -1))"
  else
    for b in "${CARGO_TARGET_DIR:-$HOME/.cache/unleash-ci-target}/release/unleash" target/release/unleash; do
      [ -x "$b" ] && { BIN=$b; break; }
    done
    echo "binary: no .gpu/unleash.xz (run benches/gpu_prepare.sh); using ${BIN:-nothing}"
  fi
fi
[ -x "$BIN" ] || { echo "no unleash binary: run benches/gpu_prepare.sh first, or pass --bin"; exit 1; }
BIN=$(readlink -f "$BIN")

cd "$W/cwd"

# ---- 1. diagnostics ------------------------------------------------------------------------
{
  echo "== machine"; date -u; uname -a; nproc; free -g 2>/dev/null | head -2; grep PRETTY /etc/os-release
  echo "== nvidia-smi"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi 2>&1 | head -20
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  else
    echo "nvidia-smi: not found"
  fi
  echo "== kernel driver"; cat /proc/driver/nvidia/version 2>&1
  echo "== /dev/nvidia* and /dev/dri"; ls -l /dev/nvidia* /dev/dri 2>&1
  echo "== NVIDIA user-space libraries (the ICD dlopens glcore/glvkspirv/gpucomp/tls: ldd does not show them)"
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
    [ -d "$d" ] && ls "$d" 2>/dev/null | grep -E '^lib(nvidia-|cuda\.|GLX_nvidia|EGL_nvidia|GLESv2_nvidia)' | sed "s|^|$d/|"
  done
  echo "== ld cache, NVIDIA and loaders"; ldconfig -p 2>/dev/null | grep -Ei 'nvidia|libvulkan|libEGL|libGLX|libGL\.so|libglvnd|libGLdispatch'
  DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
  [ -z "$DRIVER" ] && DRIVER=$(sed -n 's/.*Kernel Module *\([0-9.]*\).*/\1/p' /proc/driver/nvidia/version 2>/dev/null | head -1)
  echo "== the graphics libraries against the kernel driver (${DRIVER:-unknown})"
  for lib in glcore glvkspirv gpucomp tls; do
    found=$(find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib -maxdepth 2 -name "libnvidia-$lib.so*" 2>/dev/null | sort | head -3 | tr '\n' ' ')
    if [ -z "$found" ]; then echo "libnvidia-$lib: MISSING"
    elif [ -n "$DRIVER" ] && ! echo "$found" | grep -q "$DRIVER"; then echo "libnvidia-$lib: VERSION DIFFERS from $DRIVER: $found"
    else echo "libnvidia-$lib: ok $found"; fi
  done
  echo "== ICD and vendor files"
  for f in $(find /usr/local/nvidia/share /usr/share/vulkan /etc/vulkan /usr/share/glvnd /etc/glvnd -name '*.json' 2>/dev/null); do
    echo "-- $f"; cat "$f"
  done
  echo "== environment"; env | grep -E '^(VK_|__EGL|__GLX|NVIDIA_|LD_LIBRARY_PATH|CUDA_VISIBLE|WGPU_|CUBECL_)' | sort
  echo "== python3 / torch"
  python3 -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -1
} > "$DIAG" 2>&1
echo "diagnostics: $DIAG"; grep -E '^(libnvidia|nvidia-smi)|MISSING|DIFFERS' "$DIAG"
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)

# ---- 2. Vulkan: the recipe's variants, in turn ----------------------------------------------
VULKANINFO=""
if ls "$ROOT"/.gpu/tools/vulkan-tools_*.deb >/dev/null 2>&1; then
  dpkg -x "$ROOT"/.gpu/tools/vulkan-tools_*.deb "$W/vt" && VULKANINFO=$W/vt/usr/bin/vulkaninfo
fi
[ -z "$VULKANINFO" ] && VULKANINFO=$(command -v vulkaninfo || true)
echo "vulkaninfo: ${VULKANINFO:-none (no .gpu/tools/vulkan-tools_*.deb and none installed)}"
GLROOT=""
unpack_loaders() {
  ls "$ROOT"/.gpu/debs/*.deb >/dev/null 2>&1 || { echo "no .gpu/debs/*.deb to unpack"; return 1; }
  if [ "$DEV" = gpu ]; then
    # The device tool's recipe: the loader packages over /, then the linker cache.
    for f in "$ROOT"/.gpu/debs/*.deb; do dpkg -x "$f" /; done; ldconfig
  else
    # Not over this machine's /: into a private root, reached through LD_LIBRARY_PATH.
    GLROOT=$W/glroot; for f in "$ROOT"/.gpu/debs/*.deb; do dpkg -x "$f" "$GLROOT"; done
  fi
}
# probe DEVICE ENV...: starts `unleash bench` under ENV and stops it once it has said which
# device it got (or failed): what wgpu itself makes of the adapter.
probe() {
  local dev=$1; shift
  local f=$W/probe.err
  : > "$f"
  env "$@" timeout 60 "$BIN" bench --device "$dev" --steps 1 --repeats 1 --json > /dev/null 2> "$f" &
  local pid=$! i
  for i in $(seq 1 80); do
    grep -q '^device: ' "$f" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null
  grep -m1 '^device: ' "$f" || grep -m2 -iE 'error|panic' "$f" || echo "(no answer: $(tail -c 300 "$f"))"
}
VARIANT="" VARIANT_ENV=()
try_variant() {
  local name=$1; shift
  local env_list=() kv ldp=${LD_LIBRARY_PATH:-}
  for kv in "$@"; do
    case $kv in LD_LIBRARY_PATH=*) ldp=${kv#LD_LIBRARY_PATH=} ;; *) env_list+=("$kv") ;; esac
  done
  # --device cpu: the loaders unpacked into a private root come first on the library path.
  [ -n "$GLROOT" ] && ldp=$GLROOT/usr/lib/x86_64-linux-gnu${ldp:+:$ldp}
  [ -n "$ldp" ] && [ "$ldp" != "${LD_LIBRARY_PATH:-}" ] && env_list+=("LD_LIBRARY_PATH=$ldp")
  local vi=$W/vulkaninfo.out devs=""
  : > "$vi"
  echo "=== variant $name: ${env_list[*]:-(no extra environment)}" >> "$VK"
  if [ -n "$VULKANINFO" ]; then
    env "${env_list[@]}" VK_LOADER_DEBUG=driver timeout 20 "$VULKANINFO" --summary > "$vi" 2>&1
    echo "vulkaninfo --summary exit $? (the loader's lines once each, then the rest):" >> "$VK"
    # The loader repeats its search for every instance vulkaninfo makes: each line once.
    grep -E '^(DEBUG \| )?(DRIVER|ERROR|WARNING|INFO)' "$vi" | awk '!seen[$0]++' >> "$VK"
    grep -vE '^(DEBUG \| )?(DRIVER|ERROR|WARNING|INFO)' "$vi" | sed -n '/^Devices:/,$p' >> "$VK"
    grep -vE '^(DEBUG \| )?(DRIVER|ERROR|WARNING|INFO)' "$vi" | grep -iE 'error|fail|cannot' | awk '!seen[$0]++' | head -20 >> "$VK"
    devs=$(grep -E 'deviceName|deviceType' "$vi" | tr -s ' \t' ' ' | paste -sd' ' -)
  fi
  local got; got=$(probe gpu "${env_list[@]}" | tr '\n\t' '  ')
  echo "=== variant $name: unleash --device gpu: $got" | tee -a "$VK"
  echo "    vulkaninfo devices: ${devs:-none}"
  printf '%s\t%s\t%s\n' "$name" "$got" "${devs:-none}" >> "$W/variants.tsv"
  if echo "$got" | grep -q '^device: GPU'; then VARIANT=$name; VARIANT_ENV=("${env_list[@]}"); return 0; fi
  return 1
}
: > "$VK"; : > "$W/variants.tsv"
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
NV_EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
NV_LIBS=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
echo "ldconfig -p | grep libvulkan: $(ldconfig -p | grep -c libvulkan) entries"
try_variant as-is \
  || { unpack_loaders; try_variant loaders; } \
  || try_variant loaders+nvidia-icd "VK_DRIVER_FILES=$NV_ICD" "__EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL" \
  || try_variant loaders+nvidia-icd+driver-libs "VK_DRIVER_FILES=$NV_ICD" "__EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL" "LD_LIBRARY_PATH=$NV_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  || {
    # Any other NVIDIA ICD file the image has.
    for icd in $(find /usr/share/vulkan /etc/vulkan /usr/local/share/vulkan /usr/local/nvidia -name 'nvidia_icd*.json' 2>/dev/null | grep -vx "$NV_ICD"); do
      try_variant "icd:$icd" "VK_DRIVER_FILES=$icd" "LD_LIBRARY_PATH=$NV_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && break
    done
  }
GPU_OK=0
if [ -n "$VARIANT" ]; then
  GPU_OK=1
  echo "Vulkan works with variant '$VARIANT'; the GPU steps run under: ${VARIANT_ENV[*]:-(nothing extra)}"
  for kv in "${VARIANT_ENV[@]}"; do export "${kv?}"; done
else
  echo "no variant gave unleash a hardware adapter (see $VK)"
fi
[ -n "$GLROOT" ] && [ "$DEV" = cpu ] && export LD_LIBRARY_PATH="$GLROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
AUTO=$(probe auto)
echo "auto picks: $AUTO"
echo "$AUTO" > "$W/auto.txt"

# What runs where. --device cpu: every "device" step on flex, small sizes, and the device run is
# itself the CPU run (the comparisons must then come out equal).
if [ "$DEV" = gpu ] && [ "$GPU_OK" = 1 ]; then RUN_DEV=gpu; else RUN_DEV=cpu; fi
[ "$DEV" = gpu ] && [ "$GPU_OK" = 0 ] && echo "GPU steps skipped: no working Vulkan adapter; the CPU and PyTorch steps still run"
if [ "$DEV" = gpu ]; then
  SC_ARGS=(); R18_ARGS=(--steps 20 --repeats 1); R18_N=(4000 1000 500 500)
  TRAIN_ARGS=(--epochs 5)
else
  SC_ARGS=(--steps 10 --repeats 1); R18_ARGS=(--steps 1 --repeats 1); R18_N=(128 64 32 32)
  TRAIN_ARGS=(--epochs 2 --train-limit 2000)
fi
TORCH=0 TORCH_CUDA=0
if python3 -c 'import torch, sklearn' 2>/dev/null; then
  TORCH=1
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && TORCH_CUDA=1
  echo "PyTorch: present (CUDA $([ $TORCH_CUDA = 1 ] && echo yes || echo no))"
else
  echo "PyTorch: SKIPPED, python3 cannot import torch and scikit-learn here; no PyTorch figures in this run"
fi
TORCH_DEV=cpu; [ "$DEV" = gpu ] && [ "$TORCH_CUDA" = 1 ] && TORCH_DEV=cuda

# ---- 3. SmallCNN on the sample data -----------------------------------------------------------
# The unleash steps on the device run where there is one (or with --device cpu); without a
# working GPU the CPU and PyTorch steps still run.
DEVICE_STEPS=0; { [ "$RUN_DEV" = gpu ] || [ "$DEV" = cpu ]; } && DEVICE_STEPS=1
if [ "$DEVICE_STEPS" = 1 ]; then
  PY=(); [ "$TORCH" = 1 ] && PY=(--pytorch)
  tune_log bench_smallcnn
  step "bench small-cnn $RUN_DEV${PY:+ --pytorch}" 60 240 "$W/bench_smallcnn_dev.json" "$BIN" bench --device "$RUN_DEV" "${PY[@]}" "${SC_ARGS[@]}" --json
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 99 ] && [ "$TORCH" = 1 ]; then
    step "bench small-cnn $RUN_DEV (again, without --pytorch)" 60 180 "$W/bench_smallcnn_dev.json" "$BIN" bench --device "$RUN_DEV" "${SC_ARGS[@]}" --json
  fi
fi
if [ "$TORCH" = 1 ]; then
  step "pytorch $TORCH_DEV small-cnn" 30 120 "$W/torch_smallcnn.json" python3 "$ROOT/benches/gpu_torch_reference.py" --model small-cnn --device "$TORCH_DEV"
else
  echo "--- pytorch small-cnn: SKIPPED (no torch)"
fi

# ---- 4. 5-epoch training on the device and on the CPU, seed 0 ----------------------------------
tune_log train
[ "$DEVICE_STEPS" = 1 ] && step "train on $RUN_DEV, seed 0 (the device run)" 60 200 "$W/train_dev.jsonl" "$BIN" train --seed 0 "${TRAIN_ARGS[@]}" --device "$RUN_DEV" --out "$W/run_dev" --json
step "train on cpu, seed 0 (the reference run)" 60 200 "$W/train_cpu.jsonl" "$BIN" train --seed 0 "${TRAIN_ARGS[@]}" --device cpu --out "$W/run_cpu" --json

# ---- 5. ResNet-18 at 32x32x3 ---------------------------------------------------------------
# Data: the sample Fashion-MNIST images padded to 32x32 (2 zero pixels each side) and tiled to 3
# channels, written as CIFAR-10 binary batches (train / test from the training and test files; MNIST
# the same way as an OOD set); the PyTorch reference reads the same files.
mkdir -p "$W/r18"
ROOT=$ROOT python3 - "$W/r18" "${R18_N[@]}" <<'EOF'
import gzip, os, sys
out, n_train, n_test, n_ood = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def idx(name):
    with gzip.open(os.path.join(os.environ["ROOT"], "sample_data", name)) as f:
        d = f.read()
    return d[4 + 4 * d[3]:]
def write(images, labels, n, name):
    imgs, labs = idx(images), idx(labels)
    n = min(n, len(labs))
    with open(os.path.join(out, name), "wb") as f:
        for i in range(n):
            img = imgs[i * 784:(i + 1) * 784]
            plane = bytearray(32 * 32)
            for r in range(28):
                plane[(r + 2) * 32 + 2:(r + 2) * 32 + 30] = img[r * 28:(r + 1) * 28]
            f.write(bytes([labs[i]]) + bytes(plane) * 3)
    print(f"{name}: {n} images 32x32x3")
write("fashion-train-images-idx3-ubyte.gz", "fashion-train-labels-idx1-ubyte.gz", n_train, "fashion32-train.bin")
write("fashion-t10k-images-idx3-ubyte.gz", "fashion-t10k-labels-idx1-ubyte.gz", n_test, "fashion32-t10k.bin")
write("mnist-t10k-images-idx3-ubyte.gz", "mnist-t10k-labels-idx1-ubyte.gz", n_ood, "mnist32-t10k.bin")
EOF
cat > "$W/r18/exp.toml" <<EOF
[data]
train = "$W/r18/fashion32-train.bin"
test = "$W/r18/fashion32-t10k.bin"
ood = ["$W/r18/mnist32-t10k.bin", "gaussian:${R18_N[3]}"]
val_ood = "patch-shuffle:${R18_N[3]}:2"

[train]
model = "resnet18"
EOF
tune_log bench_resnet18
[ "$DEVICE_STEPS" = 1 ] && step "bench resnet18 $RUN_DEV" 90 240 "$W/bench_r18.json" "$BIN" bench --device "$RUN_DEV" --model resnet18 --config "$W/r18/exp.toml" "${R18_ARGS[@]}" --json
if [ "$TORCH" = 1 ]; then
  step "pytorch $TORCH_DEV resnet18" 40 120 "$W/torch_r18.json" python3 "$ROOT/benches/gpu_torch_reference.py" --model resnet18 --device "$TORCH_DEV" --train "$W/r18/fashion32-train.bin" --test "$W/r18/fashion32-t10k.bin"
else
  echo "--- pytorch resnet18: SKIPPED (no torch)"
fi

# ---- 6. SmallCNN on the CPU of the device (the flex figure the GPU is measured against) -------
if [ "$DEV" = gpu ]; then
  tune_log none
  step "bench small-cnn cpu" 60 200 "$W/bench_smallcnn_cpu.json" "$BIN" bench --device cpu --json
else
  echo "--- bench small-cnn cpu: the device run above was on the CPU; it is the CPU figure"
  cp "$W/bench_smallcnn_dev.json" "$W/bench_smallcnn_cpu.json" 2>/dev/null
fi

# ---- 7. summary -------------------------------------------------------------------------------
python3 "$ROOT/benches/gpu_check_summary.py" --work "$W" --out "$OUT_DIR" --device "$DEV" --run-device "$RUN_DEV" \
  --variant "${VARIANT:-none}" --driver "${DRIVER:-}" --elapsed "$(elapsed)" --torch-device "$TORCH_DEV" --torch "$TORCH"
echo "gpu_check: done in $(elapsed)s; $(ls "$OUT_DIR" | wc -l) files in $OUT_DIR"
cd "$ROOT" && rm -rf "$W"
