#!/usr/bin/env bash
# Programs under `pno run` against a real engine on a private testbed (root; network namespaces):
#   1. a Python echo server on 0.0.0.0 serves a Linux client in the peer namespace;
#   2. redis-server (if installed) answers redis-cli and redis-benchmark from the peer namespace,
#      and uses no CPU while idle;
#   3. the engine is killed: redis sees its client connection reset, keeps running, stays idle.
#   engine_smoke.sh BUILD_DIR
# Environment (defaults): PNO_NETNS=pnosh-peer PNO_IFACE=pnosh0 PNO_RUN_DIR=/tmp/pnosh
#   PNO_KHOST_IP=198.18.66.1 PNO_KPEER_IP=198.18.66.2
set -u
build=$(cd "$1" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PNO_NETNS=${PNO_NETNS:-pnosh-peer} PNO_IFACE=${PNO_IFACE:-pnosh0} PNO_RUN_DIR=${PNO_RUN_DIR:-/tmp/pnosh}
export PNO_KHOST_IP=${PNO_KHOST_IP:-198.18.66.1} PNO_KPEER_IP=${PNO_KPEER_IP:-198.18.66.2}
export PNO_ENGINE=$build/bin/pno-engine
sock=$PNO_RUN_DIR/engine.sock
engine_ip=${PNO_ENGINE_IP:-198.18.0.1}
pno=$build/bin/pno
peer() { ip netns exec "$PNO_NETNS" "$@"; }
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  "$repo/scripts/testbed" down >/dev/null 2>&1
}
trap cleanup EXIT
[[ $(id -u) -eq 0 ]] || { echo "needs root"; exit 1; }
mkdir -p "$PNO_RUN_DIR"
"$repo/scripts/testbed" down >/dev/null 2>&1
"$repo/scripts/testbed" up --host-socket "$sock" >/dev/null 2>&1 || { echo "FAIL: testbed up"; exit 1; }

# 1. echo server
py=$(command -v python3)
"$pno" run --require-engine --engine-socket "$sock" -- "$py" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(8)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d)
' &
pids+=($!)
sleep 1.5
got=$(timeout 20 ip netns exec "$PNO_NETNS" "$py" -c '
import socket
c = socket.create_connection(("'"$engine_ip"'", 7000), timeout=10)
msg = bytes(range(256)) * 4000
c.sendall(msg); c.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = c.recv(65536)
    if not d: break
    got += d
print("same" if got == msg else "differ %d" % len(got))
')
check "echo server under pno run returns 1 MB intact to the Linux peer" "[[ '$got' == same ]]"

# 2. redis
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  "$pno" run --require-engine --engine-socket "$sock" -- redis-server --port 6379 --bind 0.0.0.0 \
    --protected-mode no --save "" --appendonly no --loglevel verbose >"$PNO_RUN_DIR/redis.log" 2>&1 &
  rpid=$!  # pno run execs the app: this is redis-server's own pid
  pids+=("$rpid")
  sleep 1.5
  check "redis: SET/GET from the peer" "[[ \$(timeout 10 ip netns exec $PNO_NETNS redis-cli -h $engine_ip set k v) == OK && \$(timeout 10 ip netns exec $PNO_NETNS redis-cli -h $engine_ip get k) == v ]]"
  out=$(timeout 120 ip netns exec "$PNO_NETNS" redis-benchmark -h "$engine_ip" -q -n 5000 -c 10 -t set,get 2>&1 | tr '\r' '\n' | grep "requests per second")
  echo "$out"
  check "redis-benchmark completes SET and GET" "[[ \$(grep -c 'requests per second' <<<\"\$out\") -eq 2 ]]"
  t0=$(awk '{print $14+$15}' /proc/$rpid/stat); sleep 3; t1=$(awk '{print $14+$15}' /proc/$rpid/stat)
  check "idle redis under pno uses ~no CPU ($((t1 - t0)) ticks in 3 s)" "(( t1 - t0 <= 10 ))"
  rm -f "$PNO_RUN_DIR/pong"
  timeout 30 ip netns exec "$PNO_NETNS" "$py" -c '
import socket, sys, time
c = socket.create_connection(("'"$engine_ip"'", 6379), timeout=10)
c.sendall(b"PING\r\n")
open(sys.argv[1], "wb").write(c.recv(100))
time.sleep(20)' "$PNO_RUN_DIR/pong" >"$PNO_RUN_DIR/pong.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do [[ -s $PNO_RUN_DIR/pong ]] && break; sleep 0.1; done
  check "a client connection is open before the engine dies" "grep -q PONG $PNO_RUN_DIR/pong"
  kill -9 "$(cat "$PNO_RUN_DIR/engine.pid")"
  sleep 2
  check "redis survives the engine's death" "kill -0 $rpid 2>/dev/null"
  t0=$(awk '{print $14+$15}' /proc/$rpid/stat); sleep 3; t1=$(awk '{print $14+$15}' /proc/$rpid/stat)
  check "redis stays idle after the engine died ($((t1 - t0)) ticks in 3 s)" "(( t1 - t0 <= 10 ))"
  check "redis saw its client connection fail" "grep -q 'Reading from client' $PNO_RUN_DIR/redis.log"
else
  echo "FAIL: redis-server/redis-benchmark not installed (scripts/bootstrap installs them)"
  fail=1
fi
exit $fail
