#!/usr/bin/env bash
# `make slurm-test`: mpiswim's batch scripts against a real one-node SLURM.
#
# Installs Debian's SLURM (slurmctld, slurmd, client) and munge if missing, starts a
# private munged, slurmctld and slurmd on this machine (own key, socket, ports,
# state and logs in a temporary directory; /etc is not touched), then:
#   1. plain:   slurm/pool.sbatch on a tiny config, launched with the venv's mpiexec
#               (MPICH hydra) inside the allocation; the checkpoint is complete;
#   2. sweep:   slurm/sweep.sbatch as a 3-task job array: one file per index, one
#               seed each, different scores;
#   3. requeue: slurm/pool.sbatch (srun --mpi=pmi2) stopped by SLURM's time-limit
#               signal, requeued and resumed; the result equals an uninterrupted
#               `mpiexec -n 2` run of the same config bit for bit. Sized by
#               iterations per allocation, not by wall time, so that the number of
#               requeues (exactly 1) and the outcome do not depend on how fast or
#               busy the machine is: the first allocation is signalled only after its
#               first iteration is written, the second one runs exactly 5 iterations;
#   4. cancel:  slurm/pool.sbatch cancelled with scancel after its first iteration:
#               it checkpoints and stops, and does not requeue itself.
# Whatever happens (failure, Ctrl-C, SIGTERM), it cancels its jobs, stops every process
# it started (munged, slurmctld, slurmd, slurmstepd, job scripts, ranks, the reference
# run: all carry this test's SLURM_CONF), waits until they have exited (SIGTERM, at most
# 30 s, then SIGKILL) and only then says so, or names the ones that did not exit (and
# fails); then it removes its directory (MPISWIM_SLURM_KEEP=1 keeps it for a look).
#
# Needs root (apt-get, daemons). Environment: VENV (default .venv), SLURM_TEST_PORT
# (slurmctld's port, default 16817; slurmd uses the next one), SLURM_TEST_LAUNCHER
# (the launcher of test 3: srun, the default, or mpiexec), and pool.sbatch's own
# MPISWIM_SRUN_MPI (e.g. pmix for an Open MPI site venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(cd "${VENV:-$repo/.venv}" && pwd)
ctld_port=${SLURM_TEST_PORT:-16817}
slurmd_port=$(( ctld_port + 1 ))
started=$(date +%s)

say() { echo "slurm-test [+$(( $(date +%s) - started ))s]: $*"; }
passed=0
failed=0
pass() { passed=$(( passed + 1 )); say "PASS: $*"; }
fail() { failed=$(( failed + 1 )); say "FAIL: $*"; }

[[ $(id -u) == 0 ]] || { say "needs root (it installs packages and starts slurmctld/slurmd)"; exit 2; }
[[ -x $venv/bin/mpiswim ]] || { say "no mpiswim in $venv: run \`make venv\` first (make slurm-test does)"; exit 2; }

# --- 0. packages -----------------------------------------------------------------------
# slurm-wlm = slurmctld + slurmd + slurm-client; skipped when they are all there.
installed=1
for tool in slurmctld slurmd sbatch munged; do command -v "$tool" >/dev/null || installed=0; done
if (( ! installed )); then
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi
say "$(slurmctld -V), munge $(munged --version 2>&1 | awk '{print $1}' | sed 's/munge-//'); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

for port in "$ctld_port" "$slurmd_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        say "port $port is in use (another SLURM?): set SLURM_TEST_PORT to a free port pair"; exit 2
    fi
done

# --- the private cluster ------------------------------------------------------------
state=$(mktemp -d /tmp/mpiswim-slurm-test.XXXXXX)
chmod 755 "$state"
mkdir -p "$state"/{munge,log,spool/ctld,spool/d,work}
mkdir -m 700 "$state/munge-key"
# Exported before anything is started: every process of this test (munged, slurmctld,
# slurmd, each slurmstepd, the job scripts, srun, the ranks, the reference run) inherits
# it, which is how the clean-up finds them all (and nothing else: the directory's name is
# unique).
export SLURM_CONF=$state/slurm.conf
ref_pid=

# The PIDs of every process of this test but this shell, in `ours`. Bash builtins only:
# the scan starts no process (which would itself carry SLURM_CONF).
ours=()
find_ours() {
    local dir pid
    local -a environment
    ours=()
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        (( pid == $$ )) && continue
        mapfile -d '' environment 2>/dev/null < "$dir/environ" || continue  # gone, or a kernel thread
        [[ " ${environment[*]} " == *" SLURM_CONF=$SLURM_CONF "* ]] && ours+=("$pid")
    done
}
describe() {  # PID ... -> "name (PID), ..."
    local pid name list=()
    for pid in "$@"; do
        name=?; read -r name 2>/dev/null < "/proc/$pid/comm" || true
        list+=("$name ($pid)")
    done
    local IFS=,; echo "${list[*]}" | sed 's/,/, /g'
}

# Stop every process of this test and wait until each has exited (not merely been
# signalled), with bounds:
#   - jobs: scancel (the jobs checkpoint and stop), up to 20 s for SLURM's queue to
#     empty; whatever is left of them then (slurmstepd, job scripts, srun, ranks, the
#     reference run) gets SIGTERM, up to 10 s, then SIGKILL, 5 s more;
#   - daemons (munged, slurmctld, slurmd): SIGTERM, up to 30 s, then SIGKILL, 5 s more.
# Each round re-scans, so a process started meanwhile is stopped too. Says what it
# stopped, or names what is still running (and the clean-up then fails).
daemon_pids=()  # munged, slurmctld, slurmd, as their PID files said once they were up
kill_ours() {  # SIGNAL SECONDS [jobs]: signal, poll until gone (or only the jobs' processes); the rest stay in `ours`
    local signal=$1 rounds=$(( $2 * 2 )) which=${3:-all} t
    for (( t = 0; t <= rounds; t++ )); do
        find_ours
        [[ $which == jobs ]] && not_daemons
        (( ${#ours[@]} )) || return 0
        (( t == rounds )) && return 1
        kill "-$signal" "${ours[@]}" 2>/dev/null
        sleep 0.5
    done
}
not_daemons() {  # drop the daemons (and slurmctld's slurmscriptd) from `ours`
    local pid ppid daemon stat keep=()
    for pid in "${ours[@]}"; do
        for daemon in "${daemon_pids[@]}"; do [[ $pid == "$daemon" ]] && continue 2; done
        stat=; read -r stat 2>/dev/null < "/proc/$pid/stat"; stat=${stat##*) }  # state ppid ...
        read -r _ ppid _ <<< "$stat"
        for daemon in "${daemon_pids[@]}"; do [[ $ppid == "$daemon" ]] && continue 2; done
        keep+=("$pid")
    done
    ours=("${keep[@]}")
}
stop_ours() {
    local all=() t t0=$SECONDS pid
    find_ours
    all=("${ours[@]}")
    (( ${#all[@]} )) || { say "no process of the test was left to stop"; return 0; }
    not_daemons
    if (( ${#ours[@]} )); then
        say "stopping what is left of the jobs: $(describe "${ours[@]}")"
        if ! kill_ours TERM 10 jobs; then
            say "still running 10 s after SIGTERM, sending SIGKILL: $(describe "${ours[@]}")"
            kill_ours KILL 5 jobs || { say "NOT STOPPED (still running after SIGKILL): $(describe "${ours[@]}")"; return 1; }
        fi
    fi
    find_ours
    say "stopping $(describe "${ours[@]}")"
    if ! kill_ours TERM 30; then
        say "still running 30 s after SIGTERM, sending SIGKILL: $(describe "${ours[@]}")"
        kill_ours KILL 5 || { say "NOT STOPPED (still running after SIGKILL): $(describe "${ours[@]}")"; return 1; }
    fi
    # An exited process stays in the process table until its parent (for the daemons:
    # PID 1) reaps it; give that a few seconds, so that `pgrep` afterwards finds nothing.
    local unreaped=()
    for (( t = 0; t < 20; t++ )); do
        unreaped=()
        for pid in "${all[@]}"; do [[ -e /proc/$pid ]] && unreaped+=("$pid"); done
        (( ${#unreaped[@]} )) || break
        sleep 0.5
    done
    say "daemons stopped: all ${#all[@]} processes of the test have exited, $(( SECONDS - t0 ))s after the first signal${unreaped[*]:+ (not yet reaped by their parent, zombies: ${unreaped[*]})}"
}

cleanup() {
    local status=$?
    trap - EXIT
    trap '' INT TERM  # the clean-up is bounded (about 1.5 minutes at worst): let it finish
    set +eu
    if (( ${#daemon_pids[@]} == 3 )) && kill -0 "${daemon_pids[1]}" 2>/dev/null; then
        timeout 15 scancel --user=root 2>/dev/null
        for _ in $(seq 20); do [[ -z $(timeout 10 squeue -h 2>/dev/null) ]] && break; sleep 1; done
    fi
    [[ -n $ref_pid ]] && kill -TERM "$ref_pid" 2>/dev/null
    stop_ours || { (( status != 0 )) || status=1; }
    if (( status != 0 || failed > 0 )); then
        for f in "$state"/log/slurmctld.log "$state"/log/slurmd.log "$state"/work/*.out; do
            [[ -f $f ]] && { echo "----- last lines of $f"; tail -n 25 "$f"; }
        done
    fi
    if [[ ${MPISWIM_SLURM_KEEP:-0} == 1 ]]; then
        say "kept $state; took $(( $(date +%s) - started ))s"
    else
        rm -rf "$state"
        say "test directory removed; took $(( $(date +%s) - started ))s"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted (SIGINT): cleaning up"; exit 130' INT
trap 'say "terminated (SIGTERM): cleaning up"; exit 143' TERM

# munged with its own key and socket (the socket's directory must be world-searchable).
dd if=/dev/urandom of="$state/munge-key/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge-key/munge.key"
munged --socket="$state/munge/munge.sock" --key-file="$state/munge-key/munge.key" \
    --pid-file="$state/munge/munged.pid" --seed-file="$state/munge-key/munged.seed" \
    --log-file="$state/log/munged.log"

# A one-node cluster. CPUs=8 on a 2-core machine (SlurmdParameters=config_overrides
# makes slurmd accept more CPUs than it finds): SLURM counts CPUs as slots, so several
# 2-rank jobs run at once, oversubscribing the cores as `mpiexec -n 4` does on a laptop.
# No cgroups (proctrack/linuxproc, task/none): this also runs in containers. Accounting
# goes to a job-completion text file, which `sacct -c` reads (no slurmdbd/database).
# cred_expire=10 shortens SLURM's wait before a requeued job may start again (the
# default is 120 s); sched_interval/bf_interval make the scheduler look every 2 s.
node=$(hostname -s)
cat > "$SLURM_CONF" <<EOF
ClusterName=mpiswim-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
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
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
slurmd
for _ in $(seq 60); do
    [[ $(sinfo -h -o %T 2>/dev/null) == idle ]] && break
    sleep 0.5
done
daemon_pids=("$(cat "$state/munge/munged.pid" 2>/dev/null)" "$(cat "$state/slurmctld.pid" 2>/dev/null)" "$(cat "$state/slurmd.pid" 2>/dev/null)")
[[ $(sinfo -h -o %T) == idle ]] || { say "the node did not come up: $(sinfo -h -o '%T %E')"; exit 1; }
say "one-node cluster up: $(sinfo -h -o 'partition %P, node %N, %c CPUs, %T'); munged ${daemon_pids[0]:-?}, slurmctld ${daemon_pids[1]:-?}, slurmd ${daemon_pids[2]:-?}"

# --- helpers ----------------------------------------------------------------------------
export PATH=$venv/bin:$PATH  # as after `source .venv/bin/activate`; sbatch passes it to the jobs
work=$state/work
cd "$work"

# Wait until a job (or every task of an array) has left the queue.
wait_job() {
    local id=$1 limit=$2 t=0
    while [[ -n $(squeue -h -j "$id" 2>/dev/null) ]]; do
        (( t >= limit )) && { say "job $id still queued or running after ${limit}s"; return 1; }
        sleep 2; t=$(( t + 2 ))
    done
}
job_field() { scontrol show job "$1" 2>/dev/null | sed -n "s/\(.* \|^\)$2=\([^ ]*\).*/\2/p" | head -n 1; }
job_state() { job_field "$1" JobState; }
check() { "$venv/bin/python" "$repo/slurm/check_runs.py" "$@"; }
# Iterations in a checkpoint, as `mpiswim info --json` reports them (0 if none or unreadable).
iterations_done() {
    [[ -f $1 ]] || { echo 0; return; }
    mpiswim info "$1" --json 2>/dev/null | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["iterations_done"])' 2>/dev/null || echo 0
}
# Iterations done by a running job, cheaply: while its log (LOG) shows no progress line
# of rank 0 yet, 0 without starting Python (slow on a busy machine); then, or every 10th
# ROUND in case the log's wording changes, what the checkpoint says.
progress() {  # FILE.h5 LOG ROUND
    if grep -qE '^iteration +[0-9]+/' "$2" 2>/dev/null || (( $3 % 10 == 0 )); then iterations_done "$1"; else echo 0; fi
}
seconds() { local d=0 h m s; [[ $1 == *-* ]] && { d=${1%%-*}; }; IFS=: read -r h m s <<< "${1#*-}"; echo $(( 10#$d * 86400 + 10#$h * 3600 + 10#$m * 60 + 10#$s )); }

# A config from the embedded default with some values changed.
make_config() {
    local file=$1 iterations=$2 T=$3 episodes=$4 seed=$5
    mpiswim config --set "run.iterations=$iterations" --set "env.T=$T" --set "run.seed=$seed" \
        --set "pool.iterate_episodes=$episodes" --set "pool.evaluate_episodes=$episodes" > "$file"
}
make_config tiny.toml 4 40 2 0
# Planned for more iterations than any machine completes before the time limit this test
# gives it; the plan is cut to the final length once the first allocation has ended.
make_config long.toml 2000 500 4 7
cp long.toml cancel.toml
second_allocation=5  # iterations the resumed (second) allocation runs

# --- 3. submitted first: time limit, requeue, resume ---------------------------------------
resume_ok=1
if ! grep -q -- --resume-if-exists <<< "$(mpiswim train --help)"; then
    resume_ok=0
else
    # Submitted with a 15-minute limit and a SIGTERM lead of 150 s; the limit is cut
    # once the first iteration is written (see below). The launcher as SLURM_TEST_LAUNCHER.
    requeue=$(MPISWIM_LAUNCHER=${SLURM_TEST_LAUNCHER:-srun} sbatch --parsable --job-name=requeue --ntasks=2 --time=15 --signal=B:TERM@150 \
        "$repo/slurm/pool.sbatch" long.toml "$work/requeued.h5")
    say "3. requeue: submitted job $requeue (2 ranks, ${SLURM_TEST_LAUNCHER:-srun}, 15-minute limit, --signal=B:TERM@150)"
fi

# --- 4. scancel: cancelled once it has written an iteration; it must not requeue itself ---
cancel=$(sbatch --parsable --job-name=cancel --ntasks=2 --time=15 "$repo/slurm/pool.sbatch" cancel.toml "$work/cancelled.h5")
say "4. cancel: submitted job $cancel (2 ranks, srun; scancel after its first iteration)"

# --- 1. a plain pool run ---------------------------------------------------------------------
plain=$(MPISWIM_LAUNCHER=mpiexec sbatch --parsable --job-name=plain --ntasks=2 --time=5 "$repo/slurm/pool.sbatch" tiny.toml)
say "1. plain: submitted job $plain (2 ranks, mpiexec inside the allocation)"

# --- 2. a seed sweep ---------------------------------------------------------------------------
sweep=$(sbatch --parsable --job-name=sweep --array=0-2 --ntasks=2 --time=5 "$repo/slurm/sweep.sbatch" tiny.toml "$work/sweep")
say "2. sweep: submitted job array $sweep (indices 0-2, 2 ranks each, srun --mpi=${MPISWIM_SRUN_MPI:-pmi2})"

# --- 3. the first allocation: signalled by SLURM at its time limit, after >= 1 iteration ---
# SLURM's time-limit check runs every 30 s and signals a job whose time left is within
# its lead (plus 30 s). So as soon as the checkpoint holds an iteration, the time limit
# is set to 3 minutes past the start of the minute the job is in (121-180 s left, all
# within the 150 s lead + 30 s): SLURM's next check, at most 30 s later, sends SIGTERM to
# the batch shell, at least 90 s before the limit. What happens then is pool.sbatch's
# business, exactly as at a real time limit: it passes the signal on, mpiswim finishes
# the iteration and writes, the job requeues itself. However slow the machine, the first
# allocation ends after at least one iteration and before the plan of 2000.
# The same wait also cancels job 4 once it has written an iteration (or, if it is
# slower than job 3, the wait after this one does).
requeue_phase=failed cancelled_after=
cancel_once_started() {  # ROUND
    [[ -z $cancelled_after ]] || return 0
    cancelled_after=$(progress cancelled.h5 "cancel-$cancel.out" "$1")
    if (( cancelled_after >= 1 )); then
        scancel "$cancel"
        say "4. cancel: job $cancel wrote iteration $cancelled_after: scancel $cancel"
    else
        cancelled_after=
    fi
}
if (( resume_ok )); then
    t=0 done1=0
    while (( t < 600 )); do
        [[ -n $(squeue -h -j "$requeue" 2>/dev/null) ]] || break
        cancel_once_started $(( t / 2 ))
        done1=$(progress requeued.h5 "requeue-$requeue.out" $(( t / 2 )))
        (( done1 >= 1 )) && break
        sleep 2; t=$(( t + 2 ))
    done
    if (( done1 >= 1 )) && [[ $(job_state "$requeue") == RUNNING ]]; then
        ran=$(seconds "$(job_field "$requeue" RunTime)")
        limit=$(( ran / 60 + 3 ))
        scontrol update JobId="$requeue" TimeLimit="$limit"
        say "3. requeue: iteration $done1 written ${ran}s into the job: time limit cut to $limit minutes ($(( limit * 60 - ran ))s left, within the 150 s lead): SLURM's next time-limit check signals it"
        # Wait for the job to requeue itself (Restarts=1), then hold it while the test
        # reads how far it got; SLURM keeps a requeued job pending for about 11 s anyway.
        t=0
        while (( t < 300 )) && [[ $(job_field "$requeue" Restarts) == 0 ]]; do
            [[ -n $(squeue -h -j "$requeue" 2>/dev/null) ]] || break
            sleep 1; t=$(( t + 1 ))
        done
        if [[ $(job_field "$requeue" Restarts) == 1 ]] && scontrol hold "$requeue"; then
            first=$(iterations_done requeued.h5)
            total=$(( first + second_allocation ))
            # --resume-if-exists lets only [run] iterations change: the plan becomes what the
            # first allocation did plus $second_allocation. The resumed allocation gets 15 minutes
            # (no signal); the reference run uses the same config.
            make_config long.toml "$total" 500 4 7
            scontrol update JobId="$requeue" TimeLimit=15
            scontrol release "$requeue"
            say "3. requeue: job $requeue requeued itself after $first iterations; its plan is now $total iterations ($second_allocation for the second allocation, 15-minute limit)"
            requeue_phase=requeued
        else
            say "3. requeue: job $requeue did not requeue itself within 300 s of the cut (state $(job_state "$requeue"), restarts $(job_field "$requeue" Restarts))"
        fi
    else
        say "3. requeue: job $requeue is not running with an iteration written (after ${t}s: state $(job_state "$requeue"), $done1 iterations)"
    fi
    if [[ $requeue_phase == requeued ]]; then
        say "3. requeue: uninterrupted reference run of the same $total iterations with mpiexec alongside"
        timeout 900 mpiexec -n 2 mpiswim train --config long.toml --out "$work/reference.h5" > reference.log 2>&1 &
        ref_pid=$!
    fi
fi

# --- 4. the cancel, if job 3's first iteration came before job 4's (it costs CPU meanwhile)
for (( t = 0; t < 600 && ${#cancelled_after} == 0; t += 2 )); do
    [[ -n $(squeue -h -j "$cancel" 2>/dev/null) ]] || break
    cancel_once_started $(( t / 2 ))
    [[ -n $cancelled_after ]] || sleep 2
done

# --- 1. and 2.: checks ----------------------------------------------------------------------
if wait_job "$plain" 300 && [[ $(job_state "$plain") == COMPLETED ]] \
    && check complete "$work/runs/plain-$plain.h5" --iterations 4 --ranks 2; then
    pass "1. plain job $plain completed; runs/plain-$plain.h5 is complete"
else
    fail "1. plain job $plain: state $(job_state "$plain"); see plain-$plain.out"
fi

if wait_job "$sweep" 300; then
    states=$(for i in 0 1 2; do job_state "${sweep}_$i"; done | sort -u | tr '\n' ' ')
    if [[ $states == "COMPLETED " ]] \
        && check complete sweep/run-0.h5 --iterations 4 --ranks 2 \
        && check complete sweep/run-1.h5 --iterations 4 --ranks 2 \
        && check complete sweep/run-2.h5 --iterations 4 --ranks 2 \
        && check distinct sweep/run-0.h5 sweep/run-1.h5 sweep/run-2.h5; then
        pass "2. sweep $sweep: one complete file per index, seeds 0, 1, 2, different scores"
    else
        fail "2. sweep $sweep: task states $states"
    fi
else
    fail "2. sweep $sweep did not finish"
fi

# --- 4. checks: cancelled, not requeued, its checkpoint intact ---------------------------------
if [[ -z $cancelled_after ]]; then
    fail "4. cancel: job $cancel wrote no iteration (state $(job_state "$cancel")); see cancel-$cancel.out"
elif wait_job "$cancel" 120 && [[ $(job_state "$cancel") == CANCELLED && $(job_field "$cancel" Restarts) == 0 ]] \
    && mpiswim check cancelled.h5; then
    grep -h "SIGTERM\|stopped by\|cancelled\|requeu" "cancel-$cancel.out" | sed 's/^/    /' || true
    pass "4. cancel: job $cancel ended CANCELLED, not requeued; its checkpoint holds $(iterations_done cancelled.h5) iterations and passes mpiswim check"
else
    grep -h "SIGTERM\|stopped by\|cancelled\|requeu" "cancel-$cancel.out" | sed 's/^/    /' || true
    fail "4. cancel: job $cancel state $(job_state "$cancel"), restarts $(job_field "$cancel" Restarts) (expected CANCELLED, 0)"
fi

# --- 3. checks ----------------------------------------------------------------------------------
if (( ! resume_ok )); then
    fail "3. requeue: \`mpiswim train --resume-if-exists\` does not exist yet (issue 4); a requeued job cannot resume, so this test cannot pass"
elif [[ $requeue_phase != requeued ]]; then
    fail "3. requeue: job $requeue was not stopped and requeued at its time limit; see requeue-$requeue.out"
else
    ref_status=0
    wait "$ref_pid" || ref_status=$?
    ref_pid=
    (( ref_status == 0 )) || say "reference run exited $ref_status: $(tail -n 3 reference.log)"
    if wait_job "$requeue" 600; then
        restarts=$(job_field "$requeue" Restarts)
        say "3. requeue: job $requeue ended $(job_state "$requeue") after $restarts requeue(s)"
        grep -h "requeueing\|SIGTERM\|restart\|iterations [0-9]*\.\." "requeue-$requeue.out" | sed 's/^/    /' || true
        if [[ $(job_state "$requeue") == COMPLETED ]] && (( restarts == 1 && ref_status == 0 )) \
            && check complete requeued.h5 --iterations "$total" --ranks 2 \
            && check complete reference.h5 --iterations "$total" --ranks 2 \
            && check same requeued.h5 reference.h5; then
            pass "3. requeue: signalled at the time limit after $first iterations, requeued once, resumed for $second_allocation more; identical to the uninterrupted run"
        else
            fail "3. requeue: job $requeue state $(job_state "$requeue"), restarts ${restarts:-?} (expected 1), reference exit $ref_status"
        fi
    else
        fail "3. requeue: job $requeue did not finish"
    fi
fi

# --- report ----------------------------------------------------------------------------------
say "the test jobs in SLURM's accounting (sacct -c: one line per completion; a requeued allocation shows as PENDING):"
sacct -c --format=JobID,JobName%10,Partition,NCPUS,State,ExitCode,Start,End,Elapsed,Timelimit 2>/dev/null
say "$passed passed, $failed failed; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$passed passed, $failed failed"
(( failed == 0 ))
