#!/bin/bash
# Test hook (run as root inside a booted OAR Live image when the agent did not configure it):
# the solo set-up by hand — PostgreSQL, oar-server, one OAR resource per logical CPU of this
# machine, oar-node — so the image's OAR and cpusets can be proven independently of the agent.
set -euo pipefail
host=$(hostname)
systemctl start postgresql
systemctl start oar-server
systemctl start oar-node
for prop in cpu core; do
  oarproperty -l | grep -qx "$prop" || oarproperty -a "$prop"
done
if [ "$(oarnodes -J -s "$host" 2>/dev/null | tr -d '[:space:]')" = "{}" ]; then
  core=0
  for cpu in $(ls -d /sys/devices/system/cpu/cpu[0-9]* | sed 's/.*cpu//' | sort -n); do
    core=$((core + 1))
    oarnodesetting -a -h "$host" -p host="$host" -p cpu=1 -p core=$core -p cpuset="$cpu" >/dev/null
  done
fi
oarnodesetting -s Alive -h "$host" >/dev/null
systemctl is-active postgresql oar-server oar-node
