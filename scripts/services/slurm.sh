#!/usr/bin/env bash
# A private single-node Slurm for tests (munge + slurmctld + slurmd), idempotent.
#   slurm.sh start DIR   → writes DIR/slurm.conf, starts the daemons, waits until the node is idle
#   slurm.sh stop DIR    → cancels every job, stops the daemons
# Clients need SLURM_CONF=DIR/slurm.conf.
set -euo pipefail
cmd=$1 dir=$(realpath -m "$2")
host=$(hostname -s)
export SLURM_CONF="$dir/slurm.conf"

start_munge() {
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
    echo "munged did not start" >&2; exit 1
  fi
}

case $cmd in
start)
  mkdir -p "$dir/state" "$dir/spool"
  if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then exit 0; fi
  start_munge
  cat > "$dir/prolog.sh" <<'P'
#!/bin/sh
echo "export SLURM_JOB_QOS=normal"
P
  chmod +x "$dir/prolog.sh"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=pytest
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
TaskProlog=$dir/prolog.sh
MailProg=/bin/true
SelectType=select/cons_tres
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
KillWait=2
OverTimeLimit=0
MpiDefault=none
ReturnToService=2
NodeName=$host CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  echo "CgroupPlugin=autodetect" > "$dir/cgroup.conf"
  slurmctld -D -i -f "$SLURM_CONF" >/dev/null 2>&1 &
  slurmd -D -f "$SLURM_CONF" >/dev/null 2>&1 &
  for _ in $(seq 300); do
    state=$(sinfo -h -o %t 2>/dev/null || true)
    case $state in idle*) exit 0;; esac
    sleep 0.1
  done
  echo "slurm node not idle: $(sinfo 2>&1)" >&2; tail -5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2; exit 1
  ;;
stop)
  scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
  for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
  for p in slurmd slurmctld; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  pkill -f "slurmd -D -f $SLURM_CONF" 2>/dev/null || true
  pkill -f "slurmctld -D -i -f $SLURM_CONF" 2>/dev/null || true
  for _ in $(seq 50); do
    pgrep -f -- "-f $SLURM_CONF" >/dev/null || break
    sleep 0.1
  done
  pkill -9 -f -- "-f $SLURM_CONF" 2>/dev/null || true
  ;;
*) echo "usage: slurm.sh start|stop DIR" >&2; exit 2;;
esac
