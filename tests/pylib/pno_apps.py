"""The applications the app suites run (tests/apps/apps.py, bench/run): their config files, the
documents they serve, and what their clients print (wrk's summary). Python 3 standard library only.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# wrk script that checks every response against a reference body (prints "CHECK good=N bad=M ...").
WRK_CHECK = Path(__file__).resolve().parent / "wrk_check.lua"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def docroot(root: Path, files: dict[str, int]) -> dict[str, Path]:
    """A document root with one random file of each size, by name."""
    root.mkdir(exist_ok=True)
    return {name: random_file(root / name, size) for name, size in files.items()}


def redis_conf(path: Path, ip: str, port: int, work: Path, art: Path) -> Path:
    """redis-server single-threaded, no persistence unless asked (BGSAVE), its dump in `work`."""
    path.write_text(f"""\
bind {ip}
port {port}
protected-mode no
daemonize no
supervised no
save ""
appendonly no
io-threads 1
dir {work}
dbfilename dump.rdb
logfile {art}/redis.log
""")
    return path


def lighttpd_conf(path: Path, name: str, ip: str, port: int, root: Path, art: Path, access_log: bool,
                  keepalive_requests: int, keepalive_idle: int | None = None) -> Path:
    """lighttpd serving `root` on ip:port, its logs in `art` as NAME-error.log (and NAME-access.log)."""
    lines = [f'server.document-root = "{root}"', f'server.bind = "{ip}"', f"server.port = {port}",
             f'server.errorlog = "{art}/{name}-error.log"']
    if access_log:
        lines += ['server.modules = ("mod_accesslog")', f'accesslog.filename = "{art}/{name}-access.log"']
    lines.append(f"server.max-keep-alive-requests = {keepalive_requests}")
    if keepalive_idle is not None:
        lines.append(f"server.max-keep-alive-idle = {keepalive_idle}")
    lines += ["server.max-connections = 1024",
              'mimetype.assign = (".bin" => "application/octet-stream", ".txt" => "text/plain")']
    path.write_text("\n".join(lines) + "\n")
    return path


def haproxy_cfg(path: Path, ip: str, port: int, backends: dict[str, int], connect_timeout_s: int,
                global_lines: list[str], default_lines: list[str]) -> Path:
    """haproxy in HTTP mode on ip:port, round robin over the backends (name -> port on `ip`)."""
    text = "global\n" + "".join(f"  {x}\n" for x in global_lines)
    text += "defaults\n  mode http\n" + "".join(f"  {x}\n" for x in default_lines)
    text += f"""\
  timeout connect {connect_timeout_s}s
  timeout client 30s
  timeout server 30s
frontend fe
  bind {ip}:{port}
  default_backend be
backend be
  balance roundrobin
""" + "".join(f"  server {name} {ip}:{bport}\n" for name, bport in backends.items())
    path.write_text(text)
    return path


def nginx_conf(path: Path, prefix: Path, ip: str, port: int, root: Path, art: Path, workers: int) -> Path:
    """nginx master with `workers` workers in the foreground; access log lines "PID STATUS BYTES URI"
    and an X-Worker-Pid header on every response, so tests see which worker served."""
    path.write_text(f"""\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {art}/nginx-error.log notice;
events {{ worker_connections 512; }}
http {{
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  types {{ application/octet-stream bin; }}
  log_format pid '$pid $status $body_bytes_sent $request_uri';
  keepalive_requests 100000;
  server {{
    listen {ip}:{port};
    root {root};
    access_log {art}/nginx-access.log pid;
    add_header X-Worker-Pid $pid always;
  }}
}}
""")
    return path


WRK_LAT = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def _to_ms(v: str, unit: str) -> float:
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_wrk(out: str) -> dict | None:
    """wrk's summary: requests, rps, p50/p99 in ms (with --latency, else None), socket errors and
    non-2xx responses (counts, and wrk's line for them or None); None without a summary."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        return None
    lat = {q: _to_ms(v, u) for q, v, u in WRK_LAT.findall(out)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(m.group(1)), "rps": float(rps.group(1)), "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "socket_errors": [int(x) for x in sock.groups()] if sock else [0, 0, 0, 0],
            "socket_errors_line": sock.group(0) if sock else None,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "non2xx_line": non2xx.group(0) if non2xx else None}
