#!/bin/sh
# An exec- and open-heavy shell loop of programs that are not Python, for bench/preload_exec.c:
# the target is that it runs within 0.5 % of its time when every process loads the
# preload library (LD_PRELOAD is inherited by each command).
i=0
while [ "$i" -lt 50 ]; do
  /bin/true
  cat /etc/hostname /etc/os-release >/dev/null
  ls /usr/lib >/dev/null
  i=$((i + 1))
done
