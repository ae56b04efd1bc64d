#!/usr/bin/env bash
# Lazy attach against a real engine (root; private testbed): a preloaded process attaches to the
# engine at its first bind/connect/listen the engine may serve, never before, and once per process
# family. Counted from the engine's log ("host: attached pid N").
#   1. `pno run -- sh -c 'true | cat'`: no attach (three processes, none uses TCP);
#   2. TCP on loopback only (listen on 127.0.0.1, connect to it): no attach;
#   3. two children of a parent that has not attached attach on their own; the parent attaches
#      at its own first listen; a child forked after that shares the parent's attachment;
#   4. eight threads calling listen() at once: one attach;
#   5. a connection from the engine-side listener to the Linux peer still works after a lazy attach.
#   lazy_attach.sh BUILD_DIR
# Environment (defaults): PNO_NETNS=pnola-peer PNO_IFACE=pnola0 PNO_RUN_DIR=/run/pno-testbed/pnola
#   PNO_KHOST_IP=198.18.68.1 PNO_KPEER_IP=198.18.68.2
set -u
build=$(cd "$1" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PNO_NETNS=${PNO_NETNS:-pnola-peer} PNO_IFACE=${PNO_IFACE:-pnola0} PNO_RUN_DIR=${PNO_RUN_DIR:-/run/pno-testbed/pnola}
export PNO_KHOST_IP=${PNO_KHOST_IP:-198.18.68.1} PNO_KPEER_IP=${PNO_KPEER_IP:-198.18.68.2}
export PNO_ENGINE=$build/bin/pno-engine
sock=$PNO_RUN_DIR/engine.sock
log=$PNO_RUN_DIR/engine.log
engine_ip=${PNO_ENGINE_IP:-198.18.0.1}
pno=$build/bin/pno
py=$(command -v python3)
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
attaches() { grep -c "host: attached pid" "$log"; }
attached_pids() { grep -o "host: attached pid [0-9]*" "$log" | awk '{print $4}'; }
cleanup() { "$repo/scripts/testbed" down >/dev/null 2>&1; }
trap cleanup EXIT
trap 'exit 1' TERM INT
[[ $(id -u) -eq 0 ]] || { echo "needs root"; exit 1; }
mkdir -p "$PNO_RUN_DIR"
"$repo/scripts/testbed" down >/dev/null 2>&1
"$repo/scripts/testbed" up --host-socket "$sock" >/dev/null 2>&1 || { echo "FAIL: testbed up"; exit 1; }
run() { "$pno" run --require-engine --engine-socket "$sock" -- "$@"; }
# The engine logs an attach once it has handed the region over, before the host sees the reply.
settle() { sleep 0.3; }

# 1. a shell pipeline
n0=$(attaches)
out=$(run sh -c 'true | cat; echo done' 2>&1)
settle
n1=$(attaches)
check "sh -c 'true | cat' ran ($out)" "[[ '$out' == done ]]"
check "sh -c 'true | cat' under pno run: no attach ($((n1 - n0)))" "(( n1 - n0 == 0 ))"

# 2. loopback TCP only
out=$(run "$py" -c '
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.socket(); c.connect(l.getsockname())
a, _ = l.accept(); c.sendall(b"x"); print(a.recv(1).decode())
' 2>&1)
settle
n2=$(attaches)
check "loopback connection works ($out)" "[[ '$out' == x ]]"
check "loopback TCP only: no attach ($((n2 - n1)))" "(( n2 - n1 == 0 ))"

# 3. fork before and after the first attach
out=$(run "$py" -c '
import os, socket, sys
kids = []
for _ in range(2):
    p = os.fork()
    if p == 0:
        s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(1)
        os._exit(0)
    kids.append(p)
for p in kids:
    os.waitpid(p, 0)
s = socket.socket(); s.listen(1)
late = os.fork()
if late == 0:
    t = socket.socket(); t.listen(1)
    os._exit(0)
os.waitpid(late, 0)
print(os.getpid(), kids[0], kids[1], late)
' 2>&1)
settle
n3=$(attaches)
read -r parent kid1 kid2 late <<<"$out"
pids=$(attached_pids | tail -n $((n3 - n2)) | sort -n | tr '\n' ' ')
want=$(printf '%s\n' "$parent" "$kid1" "$kid2" | sort -n | tr '\n' ' ')
check "fork: three attaches (two early children, the parent; got $((n3 - n2)))" "(( n3 - n2 == 3 ))"
check "fork: the attaching pids are the early children and the parent ($pids vs $want)" "[[ '$pids' == '$want' ]]"
check "fork: the child of an attached parent shares its attachment (pid $late)" "! attached_pids | grep -qx '$late'"

# 4. threads racing to the first attach
out=$(run "$py" -c '
import socket, threading
go = threading.Barrier(8)
socks, errs = [], []
def work():
    go.wait()
    try:
        s = socket.socket(); s.listen(1); socks.append(s)
    except OSError as e:
        errs.append(e)
ts = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(socks), len(errs))
' 2>&1)
settle
n4=$(attaches)
check "threads: eight listeners ($out)" "[[ '$out' == '8 0' ]]"
check "threads: one attach for eight racing listen() calls ($((n4 - n3)))" "(( n4 - n3 == 1 ))"

# 5. the lazily attached process is offloaded: the Linux peer reaches it on the engine's address
timeout 30 "$pno" run --require-engine --engine-socket "$sock" -- "$py" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7010)); s.listen(1)
c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
' &
srv=$!
sleep 1
got=$(timeout 20 ip netns exec "$PNO_NETNS" "$py" -c '
import socket, time
for _ in range(30):  # the server may still be starting on a loaded machine
    try:
        c = socket.create_connection(("'"$engine_ip"'", 7010), timeout=5)
        break
    except OSError:
        time.sleep(0.5)
c.sendall(b"lazy"); print(c.recv(100).decode())
' 2>&1)
wait "$srv"
check "a server that attached lazily serves the peer on the engine's address ($got)" "[[ '$got' == LAZY ]]"
exit $fail
