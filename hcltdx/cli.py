"""The ``hcltdx`` command.

    hcltdx demo                      a tour on the embedded simulator
    hcltdx simdev mount PATH [...]   serve a stand-in mshv_vtl at PATH (FUSE)
    hcltdx simdev umount PATH        remove it
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="hcltdx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a tour on the embedded simulator")
    demo.add_argument("--vp-count", type=int, default=2)
    demo.add_argument("--memory-mib", type=int, default=1024)
    sub.add_parser("simdev", help="the FUSE stand-in device (see `hcltdx simdev -h`)",
                   add_help=False)
    if argv[:1] == ["simdev"]:
        from hcltdx import simdev

        return int(simdev.main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from hcltdx import demo as demo_mod

        demo_mod.run(vp_count=args.vp_count, memory_size=args.memory_mib << 20)
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
