"""Stand-in devices for the comparison benchmarks, served from one process.

    python benchmarks/devserver.py [--cpu N]

Mounts one FUSE stand-in per configuration (``small``: 1 VP for the
single-call operations; ``acc2m``/``attr2m``: 1 GiB mapped by the host at
2 MiB; ``acc4k``/``attr4k``: 64 MiB mapped at 4 KiB; the ``attr*`` ones are
accepted up front), each daemon a thread of this process pinned to ``--cpu``.
Prints one JSON line ``{"spec": "ctl=SOCKET,small=PATH,...", ...}`` and then
answers ``reset CONFIG`` lines on the control socket with ``ok`` (the
simulator goes back to its initial state; the ``attr*`` ones are accepted
again), until its standard input closes.

All three benchmark clients (hcltdx, the plain-Python baseline, the Rust
binary) talk to these devices, so the daemon side is the same for each and
never shares a process, or a GIL, with the client being measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading

CONFIGS = {
    "small": dict(memory_size=64 << 20, host_map="2M"),
    "acc2m": dict(memory_size=1 << 30, host_map="2M"),
    "acc4k": dict(memory_size=64 << 20, host_map="4K"),
    "attr2m": dict(memory_size=1 << 30, host_map="2M"),
    "attr4k": dict(memory_size=64 << 20, host_map="4K"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", type=int, default=None, help="CPU for the daemon threads")
    args = ap.parse_args(argv)
    from hcltdx import Hcl, MemoryRange, simdev

    ok, why = simdev.available()
    if not ok:
        print(json.dumps({"ok": False, "error": why}), flush=True)
        return 0
    with contextlib.ExitStack() as stack:
        devs, hcls = {}, {}
        for name, kw in CONFIGS.items():
            devs[name] = stack.enter_context(simdev.mount(vp_count=1, in_process=True,
                                                          daemon_cpu=args.cpu, **kw))
            hcls[name] = stack.enter_context(Hcl.from_sim(devs[name].sim))

        def reset(name: str) -> None:
            devs[name].sim.reset()
            if name.startswith("attr"):
                size = CONFIGS[name]["memory_size"]
                hcls[name].mshv_vtl.tdx_accept_pages(MemoryRange(0, size))

        for name in CONFIGS:
            reset(name)
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hcltdx-bench-"))
        ctl = os.path.join(workdir, "ctl.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(ctl)
        srv.listen(8)
        stack.callback(srv.close)
        lock = threading.Lock()

        def serve(conn: socket.socket) -> None:
            with conn, conn.makefile("rwb", buffering=0) as f:
                for line in f:
                    words = line.decode().split()
                    if len(words) == 2 and words[0] == "reset" and words[1] in devs:
                        with lock:
                            reset(words[1])
                        f.write(b"ok\n")
                    else:
                        f.write(b"error: expected 'reset CONFIG'\n")

        def accept_loop() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        spec = ",".join([f"ctl={ctl}"] + [f"{n}={d.path}" for n, d in devs.items()])
        print(json.dumps({"ok": True, "spec": spec, "daemon_cpu": args.cpu,
                          "backing": devs["small"].backing}), flush=True)
        sys.stdin.read()   # until the client closes our stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
