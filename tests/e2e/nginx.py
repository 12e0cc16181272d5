"""nginx (Debian nginx-light, installed by scripts/service-nginx.sh) as a plain load
balancer in front of gateways, for the tests that show one works: an nginx of the test's
own on a free loopback port, its files in the test's directory.

    with nginx_front(tmp_path, [a.port, b.port]) as port: ...  # http://127.0.0.1:<port>
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.private_brokers import end, spawn, wait_listening
from tests.e2e.servers import free_port

NGINX = "/usr/sbin/nginx"


def front_config(directory: Path, port: int, upstreams: list[int]) -> str:
    """Round robin over ``upstreams``; streams pass unbuffered (SSE, WebSocket upgrades);
    a connection error or a 502/503 moves a request on to the next gateway."""
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n" for p in upstreams)
    temp = " ".join(
        f"{kind}_temp_path {directory}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  {temp}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream gateways {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 1h;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_connect_timeout 2s;
    }}
  }}
}}
"""


@contextlib.contextmanager
def nginx_front(directory: Path, upstreams: list[int], config: str | None = None) -> Iterator[int]:
    """An nginx on a free loopback port in front of ``upstreams`` (gateway ports), or
    running ``config`` (a whole nginx.conf; ``{port}`` in it is the port); yields the port."""
    port = free_port()
    home = directory / f"nginx-{port}"
    home.mkdir(parents=True)
    text = front_config(home, port, upstreams) if config is None else config.format(port=port)
    (home / "nginx.conf").write_text(text)
    check = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(home), "-c", str(home / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, f"nginx rejects the configuration:\n{check.stderr}"
    process = spawn([NGINX, "-p", str(home), "-c", str(home / "nginx.conf")], home / "stderr.log")
    try:
        wait_listening(port, "nginx", home / "error.log")
        yield port
    finally:
        end(process)
