"""agentshimd's own memory (PSS) with one managed container and with many, in one run.

    sudo .venv/bin/python bench/daemon_memory.py [--containers 20] [--json out.json]

A private agentshimd (BPF programs loaded, as in production) manages containers made of real
cgroups (framework/, tools/) registered over its control socket; each container has one
tool call running (a real process that asked over its broker socket). PSS is read from
/proc/PID/smaps_rollup after the daemon settles, with 1 container and then with N.
Target: PSS(N=20) <= 1.2 x PSS(1).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import arg_parser, mem_kb, parse_args, scratch_cgroup, write_json

from agentshim.protocol import request
from tests.daemon_support import Call, register, start_call, start_daemon

POLICY = "memory: {total: 1G, framework_protect: 64M, tool_default: 256M}\n"


def settled(pid: int, seconds: float = 3.0) -> dict[str, int]:
    """Memory after the daemon has had time to settle (the largest of a few readings)."""
    time.sleep(seconds)
    out: dict[str, int] = {}
    for _ in range(3):
        for k, v in mem_kb(pid).items():
            out[k] = max(out.get(k, 0), v)
        time.sleep(0.2)
    return out


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--containers", type=int, default=20)
    args = parse_args(ap)
    if os.geteuid() != 0:
        print("daemon_memory: needs root", file=sys.stderr)
        return 2
    calls: list[Call] = []
    trees = []
    with (scratch_cgroup("mem") as parent,
          tempfile.TemporaryDirectory(prefix="agentshim-mem-") as tmp):
        parent.enable_controllers()  # for the containers below it (v2 only)
        d = start_daemon(Path(tmp), bpf=True)
        try:
            bpf = d.wait_bpf()["bpf"]

            def add(i: int) -> None:
                tree, sock = register(d, parent.child(f"c{i}"), f"c{i}", POLICY)
                trees.append(tree)
                calls.append(start_call(sock, tree.framework, "pytest -q", mb=1))

            add(0)
            one = settled(d.proc.pid)
            print(f"agentshimd with 1 container:   PSS {one['pss'] / 1024:6.1f} MiB, "
                  f"USS {one['uss'] / 1024:6.1f} MiB, RSS {one['rss'] / 1024:6.1f} MiB "
                  f"(BPF {bpf})")
            for i in range(1, args.containers):
                add(i)
                print(f"\rregistered {i + 1}/{args.containers}", end="", file=sys.stderr,
                      flush=True)
            print(file=sys.stderr)
            many = settled(d.proc.pid)
            st = d.status()
            assert len(st["containers"]) == args.containers
            ratio = many["pss"] / one["pss"]
            uss_ratio = many["uss"] / one["uss"]
            print(f"agentshimd with {args.containers} containers: PSS {many['pss'] / 1024:6.1f} "
                  f"MiB, USS {many['uss'] / 1024:6.1f} MiB, RSS {many['rss'] / 1024:6.1f} MiB")
            print(f"PSS ratio {ratio:.3f} (target <= 1.2: "
                  f"{'met' if ratio <= 1.2 else 'NOT met'}); USS ratio {uss_ratio:.3f} "
                  "(private memory only: PSS also shrinks as the call processes share the "
                  "python libraries); "
                  f"{(many['uss'] - one['uss']) / max(1, args.containers - 1):.0f} KiB private "
                  "per extra container")
        finally:
            for c in calls:
                c.stop()
            for i in range(len(trees)):
                request(d.ctl, {"op": "unregister", "id": f"c{i}"})
            d.stop()
            for t in trees:
                t.destroy()
    result = {"benchmark": "daemon_memory", "cgroups": parent.layout.mode, "bpf": bpf,
              "containers": args.containers, "one_kib": one, "many_kib": many,
              "ratio": round(ratio, 3), "uss_ratio": round(uss_ratio, 3), "target_ratio": 1.2,
              "meets_target": ratio <= 1.2 and uss_ratio <= 1.2}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
