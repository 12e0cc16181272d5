"""nginx + nchan as the reference server for ``bench/fanout.py --against nchan``.

Debian's ``nginx-light`` and ``libnginx-mod-nchan`` are installed with apt when missing.
One nginx (one worker, ``daemon off``) runs in a temporary prefix with a config of its
own on a free loopback port, pinned to the server core like the gateway: ``/sub/<id>`` is
an nchan subscriber (EventSource and WebSocket), ``/pub/<id>`` a publisher (its WebSocket
is where the bench publishes, as it does on the gateway's publish topic).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .machine import free_port, raise_nofile
from .process import ServerProcess

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
PACKAGES = ["nginx-light", "libnginx-mod-nchan"]
CHANNEL = "bench"

CONFIG = """\
load_module {module};
user root;
worker_processes 1;
worker_rlimit_nofile 1048576;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 65536; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  nchan_shared_memory_size 256M;
  server {{
    listen 127.0.0.1:{port} backlog=65535;
    location = /healthz {{ return 200 "ok"; }}
    location ~ ^/sub/(\\w+)$ {{ nchan_subscriber; nchan_channel_id $1; }}
    location ~ ^/pub/(\\w+)$ {{
      nchan_publisher;
      nchan_channel_id $1;
      nchan_message_buffer_length 100;
      nchan_message_timeout 60s;
    }}
  }}
}}
"""


def ensure_installed() -> str:
    """The nginx binary, installing the Debian packages first when they are missing."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists() and MODULE.exists():
        return nginx
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (nginx's worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class Nchan(ServerProcess):
    """One nginx + nchan process tree on a free port, in ``workdir``, pinned to ``core``."""

    name = "nginx + nchan"

    def __init__(self, workdir: Path, core: int | None) -> None:
        self.nginx = ensure_installed()
        self.prefix = workdir / f"nchan-{os.getpid()}"
        self.core = core
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def _preexec(self) -> None:
        raise_nofile()
        if self.core is not None:
            os.sched_setaffinity(0, {self.core})

    def start(self) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(CONFIG.format(module=MODULE, prefix=self.prefix, port=self.port))
        self.proc = subprocess.Popen(
            [self.nginx, "-p", str(self.prefix), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=self._preexec,
        )
        error_log = self.prefix / "error.log"
        self.await_health(
            self.url("/healthz"),
            15,
            lambda: f"nginx exited:\n{error_log.read_text(errors='replace')}",
        )

    @property
    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children(self.proc.pid)]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"
