"""Run a real standalone Milvus server (the ``milvus`` 2.3.5 package from PyPI) for embedkit's tests.

Runs under the server's own virtual environment (made by scripts/milvus_server.sh), never embedkit's:

    .venv-milvus/bin/python scripts/milvus_standalone.py --data DIR --port PORT   # serve (exec)
    .venv-milvus/bin/python scripts/milvus_standalone.py --prepare                # unpack the binaries

The first run on DIR writes DIR/configs/: the gRPC proxy on 127.0.0.1:PORT and every other port of the
server (its components, its embedded etcd, the /healthz port recorded in DIR/configs/ports.json)
picked free, so that several servers can run side by side. It then *becomes* the ``milvus`` process
(exec): its pid is the server's, and ``kill -9`` of it is a real crash. A later run on the same DIR
reuses that configuration: the same ports over the same data, i.e. a restart. (The package's own
``milvus-server`` wrapper cannot restart a crashed server on its port: it test-binds each port without
SO_REUSEADDR, fails while the old connections sit in TIME_WAIT, and silently moves to another port.)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
from pathlib import Path

import milvus  # the `milvus` package of this virtual environment
from milvus import MilvusServerConfig, _initialize_data_files

BIN_HOME = Path(sys.prefix) / "milvus-server"  # binaries unpacked once per virtual environment
SESSION_TTL_S = 10
PORT_KEYS = ["root_coord_port", "proxy_internal_port", "query_coord_port", "query_node_port", "index_coord_port",
             "index_node_port", "data_coord_port", "data_node_port"]


def binaries() -> Path:
    """The unpacked server (about 250 MB); unpacking takes a few seconds, done once (md5-checked)."""
    _initialize_data_files(str(BIN_HOME))
    return BIN_HOME / "bin"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def configure(data: Path, port: int) -> dict:
    """Write DIR/configs/{milvus.yaml,embed-etcd.yaml,ports.json} (first run only); return the ports."""
    conf = data / "configs"
    ports_file = conf / "ports.json"
    if ports_file.is_file():
        ports = json.loads(ports_file.read_text())
        if ports["proxy_port"] != port:
            sys.exit(f"{data} was configured for port {ports['proxy_port']}, not {port}")
        return ports
    picked = free_ports(len(PORT_KEYS) + 3)
    ports = dict(zip(PORT_KEYS, picked), proxy_port=port, etcd_port=picked[-3], etcd_peer_port=picked[-2],
                 metrics_port=picked[-1])
    cfg = MilvusServerConfig(data_dir=str(data), **{k: v for k, v in ports.items() if k in
                                                    MilvusServerConfig().configurable_items})
    # A crashed server's components stay registered in etcd until their session lease runs out, and a
    # restarted server loads its collections only then: 10 s instead of the default 30 s.
    cfg.set("common.session.ttl", SESSION_TTL_S)
    cfg.resolve()  # binds each port once to check it, then writes configs/milvus.yaml and glog.conf
    etcd = conf / "embed-etcd.yaml"
    client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{ports['etcd_peer_port']}"
    etcd.write_text(f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
                    f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                    f"initial-cluster: default={peer}\n")
    yaml = conf / "milvus.yaml"
    text = yaml.read_text()
    assert text.count("\netcd:\n") == 1, "unexpected milvus.yaml template"
    # the embedded etcd listens where embed-etcd.yaml says (otherwise on the fixed 2379/2380)
    yaml.write_text(text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd}\n", 1))
    ports_file.write_text(json.dumps(ports))
    return ports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--port", type=int)
    ap.add_argument("--prepare", action="store_true", help="only unpack the server binaries")
    ap.add_argument("--die-with-parent", action="store_true",
                    help="the server is killed when the process that started this one ends (a test run)")
    a = ap.parse_args()
    if milvus.__version__ != "2.3.5":
        sys.exit(f"expected the milvus 2.3.5 package, found {milvus.__version__}; run scripts/setup.sh")
    bin_dir = binaries()
    if a.prepare:
        print(bin_dir)
        return
    if a.data is None or a.port is None:
        ap.error("--data and --port are required")
    data = a.data.resolve()
    ports = configure(data, a.port)
    env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(ports["metrics_port"]),
               MILVUSCONF=str(data / "configs") + "/", MILVUS_RUN_DIR=str(data / "run"),
               LD_LIBRARY_PATH=":".join(filter(None, [str(bin_dir), os.environ.get("LD_LIBRARY_PATH")])))
    os.chdir(data)
    if a.die_with_parent:  # Linux: PR_SET_PDEATHSIG (1) survives the exec below
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() != parent:
            sys.exit("the process that started the server has already ended")
    exe = str(bin_dir / "milvus")
    os.execve(exe, [exe, "run", "standalone"], env)


if __name__ == "__main__":
    main()
