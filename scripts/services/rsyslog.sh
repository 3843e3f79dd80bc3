#!/usr/bin/env bash
# A private rsyslog for tests: listens on 127.0.0.1:PORT (TCP, octet-counted) and on the unix
# datagram socket DIR/log.sock; writes every raw message as one line to DIR/out.log. Runs in the
# foreground (exec) so the caller owns the process. Usage: rsyslog.sh DIR PORT
set -euo pipefail
dir=$1 port=$2
mkdir -p "$dir/work"
cat > "$dir/rsyslog.conf" <<CONF
global(maxMessageSize="64k" workDirectory="$dir/work")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$port")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$dir/log.sock" UseSpecialParser="off")
template(name="raw" type="string" string="%rawmsg%\n")
action(type="omfile" file="$dir/out.log" template="raw")
CONF
exec rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslog.pid"
