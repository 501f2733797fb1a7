#!/usr/bin/env bash
# `make cluster-test`: mpiswim's batch script on a real two-node SLURM cluster on this one machine.
#
# The nodes n1 and n2 are hosts in their own right: each has its own network namespace
# (address 10.29.0.11 or .12 on a veth joined to a private bridge that has no outside
# interface, no NAT and no route out), its own UTS namespace (hostname n1 / n2) and its
# own mount namespace with a private /dev/shm, a hosts file over /etc/hosts and a
# boot_id of its own over /proc/sys/kernel/random/boot_id (the host's /etc is never
# touched). Each runs its own `slurmd -N NODE`, started with
#     nsenter --net=/run/netns/mpsw-NODE unshare --uts --mount ...
# (not `ip netns exec`, which remounts /sys and breaks slurmd's cgroup set-up). One
# slurmctld and one munged run on the host, on the bridge's address 10.29.0.1. The
# nodes share the file system, as a cluster's nodes share /home or /scratch.
#
# The cases (CLUSTER_CASES selects a subset, e.g. "launchers placement"):
#   launchers  pool.sbatch on 2 nodes x 2 ranks with srun (PMI-2) and with mpiexec
#              (hydra's slurm bootstrap), after an MPI probe with each: the bytes on n2's
#              veth prove the MPI traffic crossed the link, the log names the host of
#              every rank (both nodes), the checkpoint is complete;
#   placement  the same config as 1 node x 4 ranks: /pool and the agents bit-identical
#              to the 2 x 2 runs;
#   lost-srun, lost-mpiexec
#              n2 loses power a few iterations into a 2 x 2 run (its link goes down and
#              every process in it is killed at once, slurmd included) and boots again as
#              soon as SLURM has marked it down: the job ends within 90 s of the loss, its
#              checkpoint holds every iteration the log reported and passes `mpiswim
#              check`, SLURM requeues the job; 3 iterations into the resumed run the step
#              gets the stale step signal slurmctld once delivered to it (scancel
#              --signal=TERM JOB.1), and the job must still complete with /pool equal to
#              the uninterrupted run's;
#   partition  n2's link goes down a few iterations into a 2 x 2 run, its processes left
#              running: the job ends within 90 s of the cut, n2's ranks end by themselves
#              within 90 s with the link still down (exit code 5 or SIGALRM in n2's slurmd
#              log), the checkpoint is untouched from rank 0's end until the link returns, a
#              second writer on n2 is refused during the resumed run, which ends equal to the
#              uninterrupted one;
#   cold-caches
#              2 x 2 ranks start at once on empty numba and JAX caches both nodes share, then
#              again: every cache file loads, the warm start compiles nothing, same numbers.
# The default is "launchers placement lost-srun lost-mpiexec"; .ci/run also runs partition and
# cold-caches, each in a call of its own.
#
# Whatever happens (failure, Ctrl-C, SIGTERM), it cancels its jobs, stops every process
# it started (all carry this test's SLURM_CONF in their environment), waits until each has
# exited, deletes the namespaces, the veths and the bridge and checks that they are gone;
# then it removes its directory (MPISWIM_CLUSTER_KEEP=1 keeps it for a look).
#
# Needs root. Environment: VENV (default .venv), CLUSTER_CASES, CLUSTER_TEST_PORT
# (slurmctld's port on the bridge, default 16827; the slurmds use the next one inside
# their namespaces).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(cd "${VENV:-$repo/.venv}" && pwd)
ctld_port=${CLUSTER_TEST_PORT:-16827}
slurmd_port=$(( ctld_port + 1 ))
cases=${CLUSTER_CASES:-launchers placement lost-srun lost-mpiexec}
started=$(date +%s)
nodes=(n1 n2)
bridge=mpsw-br0
net=10.29.0
declare -A addr=([n1]=$net.11 [n2]=$net.12)

say() { echo "cluster-test [+$(( $(date +%s) - started ))s]: $*"; }
passed=0
failed=0
pass() { passed=$(( passed + 1 )); say "PASS: $*"; }
fail() { failed=$(( failed + 1 )); say "FAIL: $*"; }
want() { [[ " $cases " == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || { say "needs root (namespaces, packages, daemons)"; exit 2; }
[[ -x $venv/bin/mpiswim ]] || { say "no mpiswim in $venv: run \`make venv\` first (make cluster-test does)"; exit 2; }

# --- 0. packages -----------------------------------------------------------------------
installed=1
for tool in slurmctld slurmd sbatch munged nsenter unshare ip; do command -v "$tool" >/dev/null || installed=0; done
if (( ! installed )); then
    say "installing slurm-wlm, munge and iproute2 with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurm-wlm munge iproute2 util-linux >/dev/null
fi
say "$(slurmctld -V); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); cases: $cases"

# One cluster test at a time on this machine (the bridge, the namespaces and the subnet have fixed names).
exec 9> /run/lock/mpiswim-cluster-test.lock
if ! flock -n 9; then
    say "another cluster test is running on this machine: waiting up to 10 minutes for it"
    flock -w 600 9 || { say "it is still running: giving up"; exit 2; }
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$ctld_port") 2>/dev/null; then
    say "port $ctld_port is in use: set CLUSTER_TEST_PORT to a free port"; exit 2
fi

# --- the network --------------------------------------------------------------------------
# Leftovers of a test that was killed before its clean-up (SIGKILL, a reboot of the CI
# runner does not leave them): ours by name, so removed.
links_left() { ip -o link show 2>/dev/null | grep -oE "mpsw-[a-z0-9]+" | sort -u | tr '\n' ' ' || true; }
netns_left() { ip netns list 2>/dev/null | grep -oE "^mpsw-[a-z0-9]+" | tr '\n' ' ' || true; }
remove_network() {  # delete our namespaces and links; poll until the kernel has removed them (it does so asynchronously)
    local ns link t
    for ns in $(netns_left); do ip netns del "$ns" 2>/dev/null || true; done
    for link in $(links_left); do ip link del "$link" 2>/dev/null || true; done
    for (( t = 0; t < 40; t++ )); do
        [[ -z $(links_left)$(netns_left) ]] && return 0
        sleep 0.25
        for link in $(links_left); do ip link del "$link" 2>/dev/null || true; done
    done
    return 1
}
if [[ -n $(links_left)$(netns_left) ]]; then
    say "removing leftovers of an earlier cluster test: $(links_left)$(netns_left)"
    remove_network || { say "could not remove them: $(links_left)$(netns_left)"; exit 2; }
fi

state=$(mktemp -d /tmp/mpiswim-cluster-test.XXXXXX)
chmod 755 "$state"
mkdir -p "$state"/{munge,log,spool/ctld,work}
mkdir -m 700 "$state/munge-key"
# Exported before anything is started: every process of this test inherits it, in every
# namespace, which is how the clean-up finds them all.
export SLURM_CONF=$state/slurm.conf
# The whole test within 10 minutes: at 9 minutes it stops where it is and cleans up (at
# most about a minute); this watchdog carries SLURM_CONF, so the clean-up ends it too.
budget=${CLUSTER_TEST_BUDGET:-540}
( sleep "$budget"; kill -TERM $$ ) &

# --- clean-up: as in slurm/test_slurm.sh --------------------------------------------------
ours=()
find_ours() {
    local dir pid
    local -a environment
    ours=()
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        (( pid == $$ )) && continue
        mapfile -d '' environment 2>/dev/null < "$dir/environ" || continue
        [[ " ${environment[*]} " == *" SLURM_CONF=$SLURM_CONF "* ]] && ours+=("$pid")
    done
}
describe() {
    local pid name list=()
    for pid in "$@"; do
        name=?; read -r name 2>/dev/null < "/proc/$pid/comm" || true
        list+=("$name ($pid)")
    done
    local IFS=,; echo "${list[*]}" | sed 's/,/, /g'
}
kill_ours() {  # SIGNAL SECONDS: signal every process of the test, poll until all are gone
    local signal=$1 rounds=$(( $2 * 2 )) t
    for (( t = 0; t <= rounds; t++ )); do
        find_ours
        (( ${#ours[@]} )) || return 0
        (( t == rounds )) && return 1
        kill "-$signal" "${ours[@]}" 2>/dev/null
        sleep 0.5
    done
}
stop_ours() {
    local all=() t t0=$SECONDS pid
    find_ours
    all=("${ours[@]}")
    (( ${#all[@]} )) || { say "no process of the test was left to stop"; return 0; }
    say "stopping $(describe "${ours[@]}")"
    if ! kill_ours TERM 20; then
        say "still running 20 s after SIGTERM, sending SIGKILL: $(describe "${ours[@]}")"
        kill_ours KILL 5 || { say "NOT STOPPED (still running after SIGKILL): $(describe "${ours[@]}")"; return 1; }
    fi
    local unreaped=()
    for (( t = 0; t < 20; t++ )); do
        unreaped=()
        for pid in "${all[@]}"; do [[ -e /proc/$pid ]] && unreaped+=("$pid"); done
        (( ${#unreaped[@]} )) || break
        sleep 0.5
    done
    say "all ${#all[@]} processes of the test have exited, $(( SECONDS - t0 ))s after the first signal${unreaped[*]:+ (zombies not yet reaped: ${unreaped[*]})}"
}
ctld_up=0
cleanup() {
    local status=$?
    trap - EXIT
    trap '' INT TERM
    set +eu
    if (( ctld_up )); then
        timeout 15 scancel --user=root 2>/dev/null
        for _ in $(seq 15); do [[ -z $(timeout 10 squeue -h 2>/dev/null) ]] && break; sleep 1; done
    fi
    stop_ours || { (( status != 0 )) || status=1; }
    if remove_network; then
        say "namespaces, veths and bridge removed (ip netns list and ip link show no mpsw-* left)"
    else
        say "NOT REMOVED: $(links_left)$(netns_left)"
        (( status != 0 )) || status=1
    fi
    if (( status != 0 || failed > 0 )); then
        for f in "$state"/log/slurmctld.log "$state"/log/slurmd-*.log "$state"/work/*.out; do
            [[ -f $f ]] && { echo "----- last lines of $f"; tail -n 25 "$f"; }
        done
    fi
    if [[ ${MPISWIM_CLUSTER_KEEP:-0} == 1 ]]; then
        say "kept $state; took $(( $(date +%s) - started ))s"
    else
        rm -rf "$state"
        say "test directory removed; took $(( $(date +%s) - started ))s"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted (SIGINT): cleaning up"; exit 130' INT
trap 'say "terminated (SIGTERM: Ctrl-C, or the ${budget}s budget is spent): cleaning up"; exit 143' TERM

# The bridge on the host (the controller's address), one veth per node: mpsw-NODE on the
# host, eth0 in the node. No default route anywhere in the nodes; the host does not forward.
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
for node in "${nodes[@]}"; do
    ip netns add "mpsw-$node"
    ip link add "mpsw-$node" type veth peer name eth0 netns "mpsw-$node"
    ip link set "mpsw-$node" master "$bridge" up
    ip -n "mpsw-$node" addr add "${addr[$node]}/24" dev eth0
    ip -n "mpsw-$node" link set eth0 up
    ip -n "mpsw-$node" link set lo up
    mkdir -p "$state/node/$node/spool"
done
host=$(hostname -s)
{
    echo "127.0.0.1 localhost"
    echo "$net.1 $host"
    for node in "${nodes[@]}"; do echo "${addr[$node]} $node"; done
} > "$state/hosts"

dd if=/dev/urandom of="$state/munge-key/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge-key/munge.key"
munged --socket="$state/munge/munge.sock" --key-file="$state/munge-key/munge.key" \
    --pid-file="$state/munge/munged.pid" --seed-file="$state/munge-key/munged.seed" \
    --log-file="$state/log/munged.log"

# CPUs=4 per node on a 2-core machine (config_overrides): SLURM counts CPUs as slots.
# SlurmdTimeout=20: a node that stops answering is DOWN after 20-30 s (the default, 300 s,
# is a site's choice; the case outcomes do not depend on it, only their duration).
cat > "$SLURM_CONF" <<EOF
ClusterName=mpiswim-cluster
SlurmctldHost=$host($net.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/node/%n/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/node/%n/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=verbose
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SlurmdTimeout=20
KillWait=10
ReturnToService=2
$(for node in "${nodes[@]}"; do echo "NodeName=$node NodeAddr=${addr[$node]} NodeHostname=$node CPUs=4 RealMemory=4000 State=UNKNOWN"; done)
PartitionName=test Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
ctld_up=1

# Boot a node: a new UTS and mount namespace in its network namespace, a fresh boot_id
# (a node that comes back after a power loss has booted again) and a new /dev/shm.
boot() {  # NODE
    local node=$1
    if [[ ${CLUSTER_TEST_SHARED_BOOT_ID:-0} == 1 ]]; then  # to see the launchers case fail: the host's boot_id everywhere
        cat /proc/sys/kernel/random/boot_id > "$state/node/$node/boot_id"
    else
        cat /proc/sys/kernel/random/uuid > "$state/node/$node/boot_id"
    fi
    nsenter --net="/run/netns/mpsw-$node" unshare --uts --mount --propagation private \
        bash -c "set -e
            hostname $node
            mount -t tmpfs -o mode=1777,size=512m tmpfs /dev/shm
            mount --bind '$state/hosts' /etc/hosts
            mount --bind '$state/node/$node/boot_id' /proc/sys/kernel/random/boot_id
            exec slurmd -N $node"
}
for node in "${nodes[@]}"; do boot "$node"; done
node_states() { sinfo -h -N -o '%N %T' 2>/dev/null | sort | tr '\n' ' '; }
wait_nodes() {  # SECONDS: until every node is idle
    local t
    for (( t = 0; t < $1 * 2; t++ )); do
        [[ $(node_states) == "n1 idle n2 idle " ]] && return 0
        sleep 0.5
    done
    return 1
}
wait_nodes 30 || { say "the nodes did not come up: $(node_states)"; exit 1; }
say "cluster up: $(node_states); slurmctld $(cat "$state/slurmctld.pid") on $host ($net.1:$ctld_port)"
for node in "${nodes[@]}"; do
    pid=$(cat "$state/node/$node/slurmd.pid")
    say "  $node: slurmd $pid, hostname $(nsenter --target "$pid" --uts hostname), address ${addr[$node]}, boot_id $(nsenter --target "$pid" --mount cat /proc/sys/kernel/random/boot_id)"
done

# --- helpers ----------------------------------------------------------------------------
export PATH=$venv/bin:$PATH
# This checkout's mpiswim, whatever the venv was installed from: an editable install from
# another checkout (a git worktree using the main checkout's venv) would otherwise run that
# checkout's code in every job, and a change under test would never run. sbatch and srun
# pass PYTHONPATH on to the ranks.
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
imported=$("$venv/bin/python" -c 'import mpiswim, os; print(os.path.dirname(os.path.dirname(os.path.realpath(mpiswim.__file__))))')
[[ $imported == "$(realpath "$repo")" ]] || { say "the venv imports mpiswim from $imported, not from $repo"; exit 2; }
say "mpiswim from $repo (python $venv/bin/python)"
work=$state/work
cd "$work"
wait_job() {  # ID SECONDS: until the job has left the queue
    local id=$1 limit=$2 t=0
    while [[ -n $(squeue -h -j "$id" 2>/dev/null) ]]; do
        (( t >= limit )) && { say "job $id still queued or running after ${limit}s"; return 1; }
        sleep 1; t=$(( t + 1 ))
    done
}
job_field() { scontrol show job "$1" 2>/dev/null | sed -n "s/\(.* \|^\)$2=\([^ ]*\).*/\2/p" | head -n 1; }
job_state() { job_field "$1" JobState; }
check() { "$venv/bin/python" "$repo/slurm/check_runs.py" "$@"; }
check_caches() { "$venv/bin/python" "$repo/slurm/check_caches.py" "$work/cache/numba" "$work/cache/jax" "$@"; }
iterations_done() {
    [[ -f $1 ]] || { echo 0; return; }
    mpiswim info "$1" --json 2>/dev/null | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["iterations_done"])' 2>/dev/null || echo 0
}
last_logged() {  # LOG: the last iteration rank 0 reported written ("iteration  12/40 ..."), 0 if none
    local n
    n=$(grep -oE '^iteration +[0-9]+/' "$1" 2>/dev/null | tail -n 1 | grep -oE '[0-9]+' || true)
    echo "${n:-0}"
}
veth_bytes() { echo $(( $(cat "/sys/class/net/mpsw-$1/statistics/rx_bytes") + $(cat "/sys/class/net/mpsw-$1/statistics/tx_bytes") )); }
# The hosts of the ranks, from the line rank 0 prints ("mpiswim: ranks per host: n1 0-1, n2 2-3").
hosts_line() { grep -h "ranks per host" "$1" | tail -n 1; }
writer_host() { "$venv/bin/python" -c 'import sys; from mpiswim.checkpoint import read_writer; print((read_writer(sys.argv[1]) or {}).get("host"))' "$1" 2>/dev/null; }

# One config for every pool run: the numbers of every case are compared with each other.
iterations=60
mpiswim config --set "run.iterations=$iterations" --set env.T=60 --set run.seed=3 \
    --set pool.iterate_episodes=2 --set pool.evaluate_episodes=2 --set run.stall_timeout=20 > pool.toml
ranks=4

# An MPI probe: 16 MB from every rank to every other one (alltoall), then sums compared.
cat > probe.py <<'EOF'
import socket
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
block = 4 * 2**20 // 8  # 4 MB to each rank
send = np.full(size * block, rank, dtype=np.float64)
recv = np.empty_like(send)
comm.Alltoall(send, recv)
ok = all((recv[r * block : (r + 1) * block] == r).all() for r in range(size))
hosts = comm.gather(socket.gethostname())
oks = comm.gather(ok)
if rank == 0:
    print("probe: ranks on hosts", hosts, "data correct:", all(oks), flush=True)
    sys.exit(0 if all(oks) else 1)
EOF
cat > probe.sbatch <<EOF
#!/usr/bin/env bash
# the MPI probe with the launcher pool.sbatch would use
set -euo pipefail
if [[ \$MPISWIM_LAUNCHER == srun ]]; then
    srun --mpi=pmi2 $venv/bin/python probe.py
else
    $venv/bin/mpiexec -n \$SLURM_NTASKS $venv/bin/python probe.py
fi
EOF

# --- launchers: an MPI probe and a pool run with each launcher, 2 nodes x 2 ranks ----------
declare -A pool_job
run_launcher() {  # LAUNCHER
    local launcher=$1 before after id crossed hosts
    before=$(veth_bytes n2)
    id=$(MPISWIM_LAUNCHER=$launcher sbatch --parsable --job-name="probe-$launcher" --output="%x-%j.out" -N 2 --ntasks-per-node=2 --time=5 probe.sbatch)
    wait_job "$id" 120 || true
    after=$(veth_bytes n2)
    crossed=$(( after - before ))
    # Each rank on n2 receives 2 x 4 MB from the two ranks on n1 and sends them as much: 16 MB
    # across n2's link at least (about 13 KB did when UCX took both nodes for one machine).
    if [[ $(job_state "$id") == COMPLETED ]] && grep -q "data correct: True" "probe-$launcher-$id.out" \
        && grep -q "'n1'" "probe-$launcher-$id.out" && grep -q "'n2'" "probe-$launcher-$id.out" \
        && (( crossed >= 16 * 1000 * 1000 )); then
        pass "launchers: $launcher MPI probe across n1 and n2: $(( crossed / 1000 )) kB through n2's veth (>= 16,000 expected); $(grep -h 'probe:' "probe-$launcher-$id.out")"
    else
        fail "launchers: $launcher MPI probe: state $(job_state "$id"), $crossed bytes through n2's veth (>= 16,000,000 expected); $(tail -n 3 "probe-$launcher-$id.out" 2>/dev/null | tr '\n' ' ')"
    fi
    before=$(veth_bytes n2)
    id=$(MPISWIM_LAUNCHER=$launcher sbatch --parsable --job-name="pool-$launcher" -N 2 --ntasks-per-node=2 --time=10 \
        "$repo/slurm/pool.sbatch" pool.toml "$work/pool-$launcher.h5")
    say "launchers: $launcher: pool job $id, 2 nodes x 2 ranks, $iterations iterations"
    wait_job "$id" 300 || true
    crossed=$(( $(veth_bytes n2) - before ))
    hosts=$(hosts_line "pool-$launcher-$id.out")
    writer=$(writer_host "pool-$launcher.h5")
    if [[ $(job_state "$id") == COMPLETED ]] && [[ $hosts == *"n1 0-1, n2 2-3"* && $writer == n1 ]] \
        && check complete "pool-$launcher.h5" --iterations "$iterations" --ranks "$ranks"; then
        pass "launchers: $launcher pool job $id on 2 nodes completed: ranks per host '${hosts#*ranks per host: }', /writer host $writer, $(( crossed / 1000 )) kB through n2's veth"
        pool_job[$launcher]=$id
    else
        fail "launchers: $launcher pool job $id: state $(job_state "$id"), hosts '${hosts}', /writer host '$writer'; see pool-$launcher-$id.out"
    fi
}
if want launchers || want placement || want lost-srun || want lost-mpiexec || want partition; then
    run_launcher srun
fi
if want launchers; then
    run_launcher mpiexec
    if [[ -f pool-srun.h5 && -f pool-mpiexec.h5 ]] && check same pool-mpiexec.h5 pool-srun.h5; then
        pass "launchers: the srun and the mpiexec runs are bit-identical"
    else
        fail "launchers: the srun and the mpiexec runs differ (or one is missing)"
    fi
fi

# --- placement: 1 node x 4 ranks against 2 nodes x 2 ranks ---------------------------------
if want placement; then
    id=$(MPISWIM_LAUNCHER=srun sbatch --parsable --job-name=pool-1x4 -N 1 --ntasks=4 --time=10 \
        "$repo/slurm/pool.sbatch" pool.toml "$work/pool-1x4.h5")
    say "placement: pool job $id, 1 node x 4 ranks"
    wait_job "$id" 300 || true
    hosts=$(hosts_line "pool-1x4-$id.out")
    if [[ $(job_state "$id") == COMPLETED && $hosts =~ ranks\ per\ host:\ n[12]\ 0-3$ ]] \
        && check complete pool-1x4.h5 --iterations "$iterations" --ranks "$ranks" \
        && check same pool-1x4.h5 pool-srun.h5; then
        pass "placement: 1 x 4 ('${hosts#*ranks per host: }') and 2 x 2 give bit-identical /pool and agents"
    else
        fail "placement: job $id state $(job_state "$id"), hosts '$hosts', or the files differ"
    fi
fi

# --- lost node: n2 loses power during a 2 x 2 run, and boots again 20 s later --------------
power_off() {  # NODE: its link goes down and every process in its namespace is killed at once
    local node=$1 pids t
    ip link set "mpsw-$node" down
    for (( t = 0; t < 50; t++ )); do
        pids=$(ip netns pids "mpsw-$node")
        [[ -z $pids ]] && return 0
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    return 1
}
power_on() {  # NODE: link up, a new boot (boot_id, /dev/shm, slurmd)
    ip link set "mpsw-$1" up
    boot "$1"
}
lost_node() {  # LAUNCHER
    local launcher=$1 id out log t0 t loss_at ended_at logged done1 how restarts
    out=$work/lost-$launcher.h5
    id=$(MPISWIM_LAUNCHER=$launcher sbatch --parsable --job-name="lost-$launcher" -N 2 --ntasks-per-node=2 --time=10 \
        "$repo/slurm/pool.sbatch" pool.toml "$out")
    log=lost-$launcher-$id.out
    say "lost-$launcher: pool job $id, 2 nodes x 2 ranks ($launcher); n2 loses power once the log shows iteration 5"
    for (( t = 0; t < 1200; t++ )); do
        (( $(last_logged "$log") >= 5 )) && break
        [[ -n $(squeue -h -j "$id" 2>/dev/null) ]] || break
        sleep 0.1
    done
    logged=$(last_logged "$log")
    if (( logged < 5 )) || (( logged >= iterations )); then
        fail "lost-$launcher: job $id did not reach iteration 5 while running (state $(job_state "$id"), log at $logged)"
        return
    fi
    power_off n2 || { fail "lost-$launcher: processes of n2 survived SIGKILL"; return; }
    loss_at=$SECONDS
    say "lost-$launcher: n2 powered off (link down, every process killed) at iteration $logged of the log"
    # The first allocation ends: the job leaves RUNNING (requeued: PENDING; or FAILED, ...).
    ended_at=
    for (( t = 0; t < 600; t++ )); do
        [[ -z $ended_at && $(job_state "$id") != RUNNING && $(job_state "$id") != CONFIGURING ]] && ended_at=$SECONDS
        if [[ -z $(ip netns pids mpsw-n2) && $(node_states) == *"n2 down"* ]]; then
            power_on n2
            say "lost-$launcher: SLURM has marked n2 down $(( SECONDS - loss_at ))s after the loss: n2 boots again at once"
        fi
        [[ -n $ended_at && $(job_field "$id" Restarts) != 0 ]] && scontrol hold "$id" 2>/dev/null && break
        [[ -n $ended_at && $(job_state "$id") =~ ^(FAILED|COMPLETED|CANCELLED|NODE_FAIL|TIMEOUT)$ ]] && break
        sleep 0.5
    done
    logged=$(last_logged "$log")
    done1=$(iterations_done "$out")
    restarts=$(job_field "$id" Restarts)
    how="job $id: first allocation ended $(( ${ended_at:-$SECONDS} - loss_at ))s after the loss, state $(job_state "$id") ($(job_field "$id" Reason)), restarts $restarts; log at iteration $logged, checkpoint $done1"
    say "lost-$launcher: $how"
    grep -h "^mpiswim job\|mpiswim: \|srun: \|error" "$log" | grep -v "ranks per host\|planned:" | tail -n 12 | sed 's/^/    /' || true
    (( $(ip netns pids mpsw-n2 | wc -l) )) || { power_on n2; say "lost-$launcher: n2 booted again"; }
    if [[ -z $ended_at ]] || (( ended_at - loss_at > 90 )); then
        fail "lost-$launcher: the job did not end within 90 s of the loss ($how)"
    elif (( done1 < logged )) || ! mpiswim check "$out" > /dev/null; then
        fail "lost-$launcher: the checkpoint lost iterations or fails mpiswim check ($how)"
    elif [[ $restarts != 1 ]]; then
        fail "lost-$launcher: not requeued ($how)"
    else
        pass "lost-$launcher: ended $(( ended_at - loss_at ))s after the loss, requeued; the checkpoint holds all $done1 iterations the log reported and passes mpiswim check"
    fi
    scontrol release "$id" 2>/dev/null || true
    wait_nodes 60 || say "lost-$launcher: nodes not idle: $(node_states)"
    # What slurmctld did in a first try when n2 came back: a step-signal RPC it had queued
    # for the dead node, delivered to the requeued job's step with the same ids (JOB.1).
    # The same signal, sent on purpose once the resumed run is 3 iterations in: the batch
    # script must carry on (a new step) and the run still end equal to the uninterrupted one.
    for (( t = 0; t < 1200; t++ )); do
        (( $(last_logged "$log") >= done1 + 3 )) && grep -q "restart 1," "$log" && break
        [[ -n $(squeue -h -j "$id" 2>/dev/null) ]] || break
        sleep 0.1
    done
    if [[ $(job_state "$id") == RUNNING ]] && scancel --signal=TERM "$id.1"; then
        say "lost-$launcher: the resumed run at iteration $(last_logged "$log"): scancel --signal=TERM $id.1 (the stale step signal)"
    else
        say "lost-$launcher: could not send the stale step signal: job $id $(job_state "$id"), log at iteration $(last_logged "$log")"
    fi
    if wait_job "$id" 300 && [[ $(job_state "$id") == COMPLETED ]] \
        && check complete "$out" --iterations "$iterations" --ranks "$ranks" && check same "$out" pool-srun.h5; then
        pass "lost-$launcher: the resumed job $id completed (after the stale step signal too); its /pool and agents equal the uninterrupted run's"
        grep -h "stale signal\|launching again" "$log" | sed 's/^/    /' || true
    else
        fail "lost-$launcher: the resumed job $id ended $(job_state "$id") (restarts $(job_field "$id" Restarts)); see $log"
        tail -n 15 "$log" | sed 's/^/    /'
    fi
}
want lost-srun && lost_node srun
want lost-mpiexec && lost_node mpiexec

# --- cold-caches: 2 nodes x 2 ranks start at once with empty numba and JAX caches -------------
# The caches live where a cluster's users have them, on the file system the nodes share:
# numba's beside the install's modules (__pycache__, or NUMBA_CACHE_DIR), JAX's in
# ~/.cache/mpiswim/jax (or JAX_COMPILATION_CACHE_DIR). Here both point into the test's
# shared directory, emptied first, so every rank of both nodes compiles and writes the same
# entries at the same moment. Then the same job again: it must start warm (nothing compiled,
# no cache file written) and sooner.
startup() {  # ID LOG: seconds from RUNNING to the first iteration in the log; "elapsed" of iteration 1
    local id=$1 log=$2 t running=
    for (( t = 0; t < 3000; t++ )); do
        [[ -z $running && $(job_state "$id") == RUNNING ]] && running=$(date +%s.%N)
        (( $(last_logged "$log") >= 1 )) && break
        [[ -n $(squeue -h -j "$id" 2>/dev/null) ]] || break
        sleep 0.2
    done
    if [[ -z $running ]] || (( $(last_logged "$log") < 1 )); then echo "- -"; return; fi
    echo "$(awk -v a="$running" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') $(grep -m 1 -oE '^iteration +1/.*elapsed [^ ]+' "$log" | awk '{print $NF}')"
}
cold_caches() {
    local cache=$work/cache id log kind before after seconds elapsed cold= warm= ok=1
    rm -rf "$cache"; mkdir -p "$cache/numba" "$cache/jax"
    mpiswim config --set run.iterations=4 --set env.T=60 --set run.seed=3 \
        --set pool.iterate_episodes=2 --set pool.evaluate_episodes=2 --set run.stall_timeout=60 > cold.toml
    for kind in cold warm; do
        [[ $kind == warm ]] && before=$(check_caches --list)
        # Launched with mpiexec, not srun: under srun (SLURM's pmi2 plugin) this case's jobs died in MPI_Init three
        # times on 2026-12-03, a UCX worker address garbled in the PMI-2 exchange (docs/slurm.md), below mpiswim and
        # nothing to do with the caches; the srun launch itself is covered by the launchers, lost-srun and partition cases.
        id=$(NUMBA_CACHE_DIR=$cache/numba JAX_COMPILATION_CACHE_DIR=$cache/jax MPISWIM_LAUNCHER=mpiexec \
            sbatch --parsable --job-name="caches-$kind" -N 2 --ntasks-per-node=2 --time=10 \
            "$repo/slurm/pool.sbatch" cold.toml "$work/caches-$kind.h5")
        log=caches-$kind-$id.out
        say "cold-caches: $kind start, pool job $id, 2 nodes x 2 ranks sharing $cache"
        read -r seconds elapsed < <(startup "$id" "$log")
        wait_job "$id" 300 || true
        printf -v "$kind" '%s' "$seconds"
        say "cold-caches: $kind start: first iteration ${seconds}s after the job started running (its elapsed: $elapsed); job $(job_state "$id")"
        if [[ $(job_state "$id") != COMPLETED ]] || ! check complete "caches-$kind.h5" --iterations 4 --ranks "$ranks"; then
            fail "cold-caches: the $kind job $id ended $(job_state "$id"); see $log"; ok=0
            # The first errors of every rank, not only the log's tail: srun jobs died in MPI_Init (UCX: connect
            # to n1 refused, rank 0 SIGABRT) and the clean-up's last 25 lines never showed why rank 0 aborted.
            grep -nE "UCX|[Aa]ssertion|mpi/pmi2|Abort|Fatal|error" "$log" | grep -v "^[0-9]*:mpiswim job" | head -n 40 | sed 's/^/    /' || true
        fi
        if grep -iE "persistent compilation cache|Traceback|NumbaWarning|Segmentation fault|Fatal Python error" "$log" | grep -v "^mpiswim job" > "$work/caches-$kind.problems"; then
            fail "cold-caches: the $kind job's log reports a problem: $(head -n 3 "$work/caches-$kind.problems" | tr '\n' ' ')"; ok=0
        fi
        if ! check_caches; then fail "cold-caches: a cache is broken after the $kind start"; ok=0; fi
        if [[ ${CLUSTER_TEST_BREAK_CACHE:-0} == 1 && $kind == cold ]]; then  # to see the case fail: a truncated JAX entry
            f=$(ls "$cache"/jax/*-cache | head -n 1); truncate -s 1000 "$f"; say "cold-caches: truncated $f (CLUSTER_TEST_BREAK_CACHE=1)"
        fi
    done
    after=$(check_caches --list)
    if [[ $before != "$after" ]]; then
        fail "cold-caches: the warm start wrote to the caches (it compiled): $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 4 | tr '\n' ' ')"; ok=0
    fi
    if [[ $cold == - || $warm == - ]] || ! awk -v c="$cold" -v w="$warm" 'BEGIN { exit !(w < c) }'; then
        fail "cold-caches: the second start was not sooner: cold ${cold}s, warm ${warm}s"; ok=0
    fi
    if [[ -f caches-cold.h5 && -f caches-warm.h5 ]] && ! check same caches-warm.h5 caches-cold.h5 > /dev/null; then
        fail "cold-caches: the cold and the warm run differ"; ok=0
    fi
    (( ok )) && pass "cold-caches: 4 ranks on n1 and n2 started cold from one shared cache: no rank crashed, no cache file broken ($(check_caches)); the second start compiled nothing and reached iteration 1 in ${warm}s against ${cold}s cold; same numbers"
    return 0
}
want cold-caches && cold_caches

# --- partition: n2's link goes down during a 2 x 2 run, its processes untouched ---------------
on_node() {  # NODE COMMAND...: run a command on a node (its network, hostname and mounts)
    local node=$1; shift
    nsenter --target "$(cat "$state/node/$node/slurmd.pid")" --net --uts --mount "$@"
}
lock_probe() {  # OUT: try to take the checkpoint's write lock as a second writer would: 2 refused (naming the holder), 0 taken
    "$venv/bin/python" -c '
import sys
from pathlib import Path
from mpiswim.checkpoint import CheckpointBusy
from mpiswim.checkpoint.lock import claim
try:
    claim(Path(sys.argv[1]))
except CheckpointBusy as error:
    print(error); sys.exit(2)
print("the lock was free"); sys.exit(0)' "$1"
}
stacks() {  # PID: the main thread's stack, from gdb (seconds to a minute under load; nothing without gdb)
    command -v gdb > /dev/null || { echo "no gdb"; return 0; }
    timeout 45 gdb -p "$1" -batch -nx -ex "thread 1" -ex "bt 25" 2>&1 | grep -E '^#'
}
partition() {
    since() { if [[ -n $1 ]]; then echo "$(( $1 - cut_at ))s"; else echo "(not yet)"; fi; }
    local id out log t pid logged cut_at ended_at= down_at= gone_at= healed_at= sum1= exits= bad_exit= line ranks_n2 alive=0 done1 how ok=1 probe status
    out=$work/partition.h5
    id=$(MPISWIM_LAUNCHER=srun sbatch --parsable --job-name=partition -N 2 --ntasks-per-node=2 --time=10 \
        "$repo/slurm/pool.sbatch" pool.toml "$out")
    log=partition-$id.out
    say "partition: pool job $id, 2 nodes x 2 ranks (srun); n2's link goes down once the log shows iteration 5"
    for (( t = 0; t < 1200; t++ )); do
        (( $(last_logged "$log") >= 5 )) && break
        [[ -n $(squeue -h -j "$id" 2>/dev/null) ]] || break
        sleep 0.1
    done
    logged=$(last_logged "$log")
    if (( logged < 5 )) || (( logged >= iterations )); then
        fail "partition: job $id did not reach iteration 5 while running (state $(job_state "$id"), log at $logged)"; return
    fi
    ranks_n2=
    for pid in $(ip netns pids mpsw-n2); do
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == mpiswim ]]; then ranks_n2+="$pid "; fi
    done
    ip link set mpsw-n2 down
    cut_at=$SECONDS
    say "partition: n2's link is down at iteration $logged of the log; n2's ranks (pids ${ranks_n2:-none}) and slurmd left running"
    [[ -n $ranks_n2 ]] || { fail "partition: no rank of job $id found on n2"; ip link set mpsw-n2 up; return; }
    # The link stays down until the first allocation has ended, SLURM has marked n2 down 30 s
    # ago and n2's ranks have ended by themselves (at most 150 s): their stall watch judges
    # rank 0 silent and calls MPI_Abort, which cannot reach any launcher from n2, so each
    # rank ends itself ABORT_GRACE (10 s) later (mpiswim/stall.py).
    for (( t = 0; t < 300; t++ )); do
        if [[ -z $ended_at && $(job_state "$id") != RUNNING && $(job_state "$id") != CONFIGURING ]]; then
            ended_at=$SECONDS
            sum1=$(sha256sum < "$out")  # rank 0 (n1) has gone: from here on nobody may write the checkpoint
        fi
        [[ -z $down_at && $(node_states) == *"n2 down"* ]] && down_at=$SECONDS
        alive=0
        for pid in $ranks_n2; do if [[ -e /proc/$pid ]]; then alive=$(( alive + 1 )); fi; done
        [[ -z $gone_at ]] && (( alive == 0 )) && gone_at=$SECONDS
        [[ -n $ended_at && -n $down_at && -n $gone_at ]] && (( SECONDS - down_at >= 30 )) && break
        sleep 0.5
    done
    if [[ -n $ended_at && $(job_field "$id" Restarts) != 0 ]]; then scontrol hold "$id" 2>/dev/null || true; fi
    done1=$(iterations_done "$out")
    how="job $id: first allocation ended $(( ${ended_at:-$SECONDS} - cut_at ))s after the cut (state $(job_state "$id"), $(job_field "$id" Reason), restarts $(job_field "$id" Restarts)); n2 marked down after $(since "$down_at"); n2's ranks gone after $(since "$gone_at"), the link still down; log at iteration $(last_logged "$log"), checkpoint $done1"
    say "partition: $how"
    grep -h "^mpiswim job\|mpiswim: \|srun: \|stall\|error" "$log" | grep -v "ranks per host\|planned:" | tail -n 12 | sed 's/^/    /' || true
    if [[ -z $ended_at ]] || (( ended_at - cut_at > 90 )); then fail "partition: the job did not end within 90 s of the cut ($how)"; ok=0; fi
    # n2's ranks must end by themselves, cut off as they are, within 90 s of the cut.
    if [[ -z $gone_at ]] || (( gone_at - cut_at > 90 )); then
        fail "partition: n2's ranks did not end by themselves within 90 s of the cut, with the link down ($how)"; ok=0
        if [[ -z $gone_at ]]; then  # what an orphan is doing
            pid=${ranks_n2%% *}
            stacks "$pid" > "$work/orphan-$pid.gdb" 2>&1 || true
            say "partition: orphan $pid's main thread (gdb): $(grep -oE '(^#[0-9]+ +|^#[0-9]+ .* in )[A-Za-z_][A-Za-z0-9_]+' "$work/orphan-$pid.gdb" | grep -oE '[A-Za-z_][A-Za-z0-9_]+$' | grep -vE '^(_PyEval|PyEval|_PyObject|PyObject|_PyFunction|cfunction|method_vectorcall|_Py|Py[A-Z])' | head -n 8 | tr '\n' ' ')"
        fi
    fi
    # How they ended, as n2's slurmstepd saw it (SlurmdDebug=verbose): by themselves, exit code 5 (the stall
    # watch's os._exit after MPI_Abort returned) or SIGALRM (14, its last resort), not killed by anyone.
    exits=
    for pid in $ranks_n2; do
        line=$(grep -oE "task [0-9]+ \($pid\) exited[^.]*(\. Killed by signal [0-9]+)?" "$state/log/slurmd-n2.log" | head -n 1 || true)
        exits+="${exits:+; }${line:-pid $pid: no exit in slurmd-n2.log}"
        [[ $line =~ (exit\ code\ 5|signal\ 14)$ ]] || bad_exit=1
    done
    say "partition: n2's slurmstepd: $exits"
    if [[ -n $gone_at && -n $bad_exit ]]; then fail "partition: n2's ranks did not end by themselves (exit code 5 or SIGALRM): $exits"; ok=0; fi
    if (( done1 < $(last_logged "$log") )) || ! mpiswim check "$out" > /dev/null; then
        fail "partition: the checkpoint lost iterations or fails mpiswim check ($how)"; ok=0
    fi
    # The link comes back: n2's slurmd answers again, SLURM returns n2 to service and the job resumes.
    if [[ -n $sum1 && $(sha256sum < "$out") != "$sum1" ]]; then
        fail "partition: the checkpoint changed after rank 0 had gone, while n2's ranks ran cut off"; ok=0
    fi
    ip link set mpsw-n2 up
    healed_at=$SECONDS
    say "partition: n2's link is up again $(( healed_at - cut_at ))s after the cut"
    scontrol release "$id" 2>/dev/null || true
    # The orphans must be gone before the resumed run starts (they must not run beside it).
    for (( t = 0; t < 1200; t++ )); do
        if [[ -z $gone_at ]]; then
            alive=0
            for pid in $ranks_n2; do if [[ -e /proc/$pid ]]; then alive=$(( alive + 1 )); fi; done
            (( alive == 0 )) && gone_at=$SECONDS
        fi
        if grep -q "restart 1," "$log"; then
            if [[ -z $gone_at ]]; then fail "partition: the resumed run started while n2's orphan ranks still ran"; ok=0; fi
            break
        fi
        [[ -n $(squeue -h -j "$id" 2>/dev/null) ]] || break
        sleep 0.1
    done
    say "partition: the resumed run started $(( SECONDS - cut_at ))s after the cut, $(( SECONDS - healed_at ))s after the link returned"
    for (( t = 0; t < 1200; t++ )); do  # as soon as the resumed run has written an iteration (it takes seconds)
        grep -q "restart 1," "$log" && (( $(last_logged "$log") > done1 )) && break
        [[ -n $(squeue -h -j "$id" 2>/dev/null) ]] || break
        sleep 0.1
    done
    # A second writer from n2 while the resumed run writes: the lock holds across the nodes.
    probe=$(on_node n2 bash -c "$(declare -f lock_probe); venv=$venv; lock_probe $out" 2>&1) && status=0 || status=$?
    if [[ $(job_state "$id") == RUNNING && $status == 2 && $probe == *"n1"* ]]; then
        say "partition: a writer on n2 during the resumed run is refused: $probe"
    else
        fail "partition: a second writer on n2 during the resumed run (job $(job_state "$id")) exited $status: $probe"; ok=0
    fi
    if wait_job "$id" 300 && [[ $(job_state "$id") == COMPLETED ]] \
        && check complete "$out" --iterations "$iterations" --ranks "$ranks" && check same "$out" pool-srun.h5; then
        (( ok )) && pass "partition: the job ended $(( ended_at - cut_at ))s after the cut (n2 down after $(( down_at - cut_at ))s), n2's cut-off ranks ended by themselves $(( gone_at - cut_at ))s after it, checkpoint untouched from rank 0's end to the resumed run, a second writer on n2 refused, the resumed /pool and agents equal the uninterrupted run's"
    else
        fail "partition: the resumed job $id ended $(job_state "$id") (restarts $(job_field "$id" Restarts)); see $log"
        tail -n 15 "$log" | sed 's/^/    /'
    fi
    return 0
}
want partition && partition

say "$passed passed, $failed failed; load average $(cut -d' ' -f1-3 /proc/loadavg)"
(( failed == 0 ))
