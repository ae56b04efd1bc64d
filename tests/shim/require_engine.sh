#!/usr/bin/env bash
# An absent engine: by default one warning and the kernel stack; with --require-engine (or
# PNO_REQUIRE_ENGINE=1) a clear error and exit status 70 before the program runs.
#   require_engine.sh BUILD_DIR
set -u
build=$1
shim=$build/lib/libpno.so
pno=$build/bin/pno
missing=/nonexistent/pno-engine.sock
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; else echo "ok: $1"; fi; }

out=$(env -u PNO_ENGINE_WARNED PNO_ENGINE_SOCKET=$missing LD_PRELOAD=$shim sh -c 'sh -c "echo child"; echo parent' 2>&1)
st=$?
check "default: the program runs" "[[ $st -eq 0 && \$out == *child*parent* ]]"
n=$(grep -c "not available" <<<"$out")
check "default: exactly one warning for the whole process tree (got $n)" "[[ $n -eq 1 ]]"
check "default: the warning names the socket" "grep -q -- '$missing' <<<\"\$out\""

out=$(PNO_REQUIRE_ENGINE=1 PNO_ENGINE_SOCKET=$missing LD_PRELOAD=$shim sh -c 'echo RAN' 2>&1)
st=$?
check "PNO_REQUIRE_ENGINE=1: exit 70 (got $st)" "[[ $st -eq 70 ]]"
check "PNO_REQUIRE_ENGINE=1: the program never ran" "[[ \$out != *RAN* ]]"
check "PNO_REQUIRE_ENGINE=1: says the engine is required" "grep -q 'is required' <<<\"\$out\""

out=$($pno run --require-engine --engine-socket $missing -- sh -c 'echo RAN' 2>&1)
st=$?
check "pno run --require-engine: exit 70 (got $st)" "[[ $st -eq 70 && \$out != *RAN* ]]"
check "pno run --require-engine: clear message" "grep -q 'engine required but not running' <<<\"\$out\""

# A socket file that is not an engine: the shim's attach fails, still before the program runs.
dir=$(mktemp -d)
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1])" "$dir/fake.sock"
out=$($pno run --require-engine --engine-socket "$dir/fake.sock" -- sh -c 'echo RAN' 2>&1)
st=$?
check "pno run --require-engine on a dead socket file: exit 70 (got $st)" "[[ $st -eq 70 && \$out != *RAN* ]]"
rm -rf "$dir"

out=$(env -u PNO_ENGINE_WARNED $pno run --engine-socket $missing -- sh -c 'echo "$LD_PRELOAD|$PNO_ENGINE_SOCKET"' 2>/dev/null)
check "pno run: preloads the shim and passes the socket" "[[ \$out == *libpno.so*'|'$missing ]]"
out=$($pno run -- 2>&1)
check "pno run without a command fails" "[[ $? -ne 0 ]]"
exit $fail
