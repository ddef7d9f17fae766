#!/bin/bash
# A real Slurm check of the sweep on this one machine, by hand (not CI: it installs and starts
# daemons, as root, and takes minutes). It stands up a one-node cluster on localhost (munged,
# slurmctld, slurmd; proctrack/linuxproc and task/none, so no cgroups are needed; all state
# under a scratch folder), then:
#   - submits a 4-task array of tiny tasks (seeds 0..3; 3 base epochs, fine-tunes of 2, 1500
#     training samples) with sweep_array.sbatch, and the merge job chained afterany;
#   - requeues task 0 in the middle of its run (`scontrol requeue`), cancels task 1 (`scancel`),
#     and sends task 2's batch script the USR1 its time limit would (it stops unleash, requeues);
#   - checks that the merge names task 1 as missing and pools the other three, and that the
#     summaries of tasks 0 and 2 equal those local, uninterrupted runs of the same tasks write;
#   - stops the daemons it started.
# Usage: benches/slurm/one_node_check.sh [UNLEASH_BINARY]   (default: target/release/unleash)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
unleash=$(realpath "${1:-$repo/target/release/unleash}")
[ -x "$unleash" ] || { echo "no unleash binary at $unleash (cargo build --release, or pass its path)" >&2; exit 2; }
work=${WORK:-/tmp/unleash-slurm-check}
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

# -- install ------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
say "$(slurmctld -V), munge $(munged -V 2>&1 | head -1 | awk '{print $2}')"

# -- daemons ------------------------------------------------------------------------------------
rm -rf "$work" && mkdir -p "$work"/{state,spool,logs}
host=$(hostname -s)
export SLURM_CONF=$work/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=unleashcheck
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

started_munge=0
if ! pgrep -x munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    started_munge=1
fi
stop_daemons() {
    local pids=()
    for f in "$work/slurmd.pid" "$work/slurmctld.pid"; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
    if [ "$started_munge" = 1 ] && [ -f /run/munge/munged.pid ]; then pids+=("$(cat /run/munge/munged.pid)"); fi
    say "stopping the daemons it started (pids ${pids[*]})"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # slurmctld saves its state on the way out: wait (up to 30 s) until every one has gone.
    for _ in $(seq 30); do
        local alive=0
        for p in "${pids[@]}"; do [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat")" != Z ] && alive=1; done
        [ "$alive" = 0 ] && { say "daemons stopped"; return; }
        sleep 1
    done
    say "some daemons are still running: ${pids[*]}"
}
trap stop_daemons EXIT
slurmctld -c -i
slurmd
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo -h -o %T | grep -q idle || { echo "the node never came up; see $work/slurmd.log and $work/slurmctld.log" >&2; exit 1; }
say "cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %T')"

# -- the sweep ----------------------------------------------------------------------------------
cd "$work"
cat > grid.toml <<GRID
out = "sweep"
[recipe]
epochs = 3
finetune_epochs = 2
train_limit = 1500
device = "cpu"
[grid]
seeds = "0..3"
GRID
export UNLEASH=$unleash
"$unleash" sweep --grid grid.toml --list
jid=$(sbatch --parsable --array=0-3 "$repo/benches/slurm/sweep_array.sbatch" grid.toml)
rid=$(sbatch --parsable --dependency=afterany:"$jid" "$repo/benches/slurm/sweep_report.sbatch" grid.toml)
say "submitted array job $jid (tasks 0-3) and merge job $rid (afterany:$jid)"

lines() { [ -f "$1/events.jsonl" ] && wc -l < "$1/events.jsonl" || echo 0; }
wait_lines() {  # run folder, lines, seconds
    for _ in $(seq "$3"); do [ "$(lines "$1")" -ge "$2" ] && return 0; sleep 1; done
    echo "timed out waiting for $2 epochs in $1" >&2; squeue; exit 1
}
wait_lines sweep/seed-0 4 900
say "task 0 has $(lines sweep/seed-0) epochs (base done, in its fine-tunes): scontrol requeue ${jid}_0"
scontrol requeue "${jid}_0"
wait_lines sweep/seed-1 1 900
say "task 1 has $(lines sweep/seed-1) epochs: scancel ${jid}_1"
scancel "${jid}_1"
wait_lines sweep/seed-2 2 900
# What --signal=B:USR1@120 sends the batch script 120 s before a time limit, sent now.
say "task 2 has $(lines sweep/seed-2) epochs: USR1 to its batch script, as its time limit would (it stops unleash and requeues itself)"
scancel --batch --signal=USR1 "${jid}_2"
sleep 2
squeue -o '%.14i %.9T %.10M %R'
# A requeued job waits out a begin time Slurm sets; release it now rather than later.
for i in 0 2; do scontrol update jobid="${jid}_$i" StartTime=now 2>/dev/null || true; done

for _ in $(seq 1800); do
    squeue -h -j "$rid" 2>/dev/null | grep -q . || break
    sleep 2
done
squeue -h -j "$rid" 2>/dev/null | grep -q . && { echo "the merge job never ran" >&2; squeue; exit 1; }
say "all jobs ended"
sacct_line() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*\|Restarts=[0-9]*' | tr '\n' ' '; }
for i in 0 1 2 3; do echo "task $i: $(sacct_line "${jid}_$i")"; done
for i in 0 2; do
    echo "--- task $i's log ---"; grep -E '^==|SIGTERM|stopped|continuing|wrote' logs/unleash-sweep-"${jid}"_$i.out || true
done
echo "--- merge log (head) ---"; head -14 logs/unleash-report-"$rid".out

# -- checks -------------------------------------------------------------------------------------
say "local uninterrupted runs of tasks 0 and 2, to compare"
for seed in 0 2; do
    "$unleash" reproduce --seeds $seed --epochs 3 --finetune-epochs 2 --train-limit 1500 --device cpu --no-report \
        --out local/runs --summaries local/summaries 2>/dev/null
done
for i in 0 2; do
    scontrol show job "${jid}_$i" | grep -q 'Restarts=1' || { echo "task $i was not restarted once" >&2; exit 1; }
done
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
report = json.load(open(f"{w}/sweep/sweep-report.json"))
missing = [m["index"] for m in report["missing"]]
seeds = report["settings"][0]["seeds"]
print(f"report: {report['finished']} of {report['tasks']} tasks finished, seeds {seeds}; missing {missing}: {[m['why'] for m in report['missing']]}")
assert report["finished"] == 3 and sorted(seeds) == [0, 2, 3], "the report pools the three finished tasks"
assert missing == [1], "the report names the cancelled task"
def numbers(p):
    s = json.load(open(p)); s.pop("wall_seconds"); return s
for seed, how in [(0, "requeued by hand"), (2, "stopped at its 'time limit' and requeued by its script")]:
    a, b = numbers(f"{w}/sweep/summaries/seed-{seed}.json"), numbers(f"{w}/local/summaries/seed-{seed}.json")
    assert a == b, f"task {seed}'s numbers differ from the uninterrupted run's"
    print(f"task {seed} ({how}) = local uninterrupted run: same summary (every stage, gamma, curve point)")
PY
say "PASS"
