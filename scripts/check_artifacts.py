#!/usr/bin/env python3
"""Check what ``python -m build`` made: the sdist, the wheel, the build log.

    python scripts/check_artifacts.py DIST_DIR [--log BUILD_LOG] [--source SRC]

* sdist: holds every file git tracks in SRC (except .gitignore), including
  the .pyx/.pxd sources, include/*.h and the .def catalogue, csrc/, tests/
  and docs/; holds nothing built (.so, .o, Cython's .c).
* wheel: a platform wheel (not ``py3-none-any``) with a compiled module for
  every ``hcltdx/*.pyx`` of the sdist, every ``.pyi`` stub, ``py.typed`` and
  the ``.pxd`` files; no ``.pyx`` or generated C.
* build log: no deprecation warning; C compiler warnings counted per origin
  (the project's own C must have none), Cython warnings counted.

Exits 1 with every failure listed.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import glob
import os
import re
import subprocess
import sys
import tarfile
import zipfile

SDIST_REQUIRED = [
    "hcltdx/*.pyx", "hcltdx/*.pxd", "hcltdx/includes/*.pxd", "hcltdx/*.pyi", "hcltdx/py.typed",
    "include/hcltdx/*.h", "include/hcltdx/*.def", "csrc/sim/*.c", "csrc/*.c", "csrc/Makefile",
    "tests/*.py", "tests/stubtest_allowlist.txt", "docs/*.md", "setup.py", "pyproject.toml",
    "MANIFEST.in", "README.md", "scripts/test", "scripts/gen_stubs.py",
]
BUILT = ["*.so", "*.o", "*.a", "*.pyc", "hcltdx/_*.c"]
# Files git needs but a build does not (matched by base name, in any folder).
NOT_SHIPPED = {".gitignore"}


def sdist_names(path: str) -> list[str]:
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    root = names[0].split("/", 1)[0]
    return [n[len(root) + 1:] for n in names if n.startswith(root + "/")]


def wheel_names(path: str) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def git_files(src: str) -> list[str] | None:
    try:
        out = subprocess.run(["git", "-C", src, "ls-files", "-z"], capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [n for n in out.decode().split("\0") if n]


def check_sdist(names: list[str], src: str | None, errors: list[str]) -> None:
    have = set(names)
    for pat in SDIST_REQUIRED:
        if not fnmatch.filter(names, pat):
            errors.append(f"sdist: nothing matches {pat}")
    for pat in BUILT:
        for n in fnmatch.filter(names, pat):
            errors.append(f"sdist: holds a built file {n}")
    tracked = git_files(src) if src else None
    if tracked is not None:
        for n in tracked:
            if n not in have and os.path.basename(n) not in NOT_SHIPPED and os.path.exists(os.path.join(src, n)):
                errors.append(f"sdist: lacks tracked file {n} (add it to MANIFEST.in)")
    print(f"sdist: {len(names)} files" + ("" if tracked is None else
                                          f", every one of {len(tracked)} tracked files checked"))


def check_wheel(path: str, names: list[str], sdist: list[str], errors: list[str]) -> None:
    tag = os.path.basename(path)[:-4].split("-", 2)[2]
    if tag.endswith("none-any"):
        errors.append(f"wheel: pure-Python tag {tag}: no compiled extension")
    modules = sorted(os.path.basename(n)[:-4] for n in fnmatch.filter(sdist, "hcltdx/*.pyx"))
    for mod in modules:
        if not fnmatch.filter(names, f"hcltdx/{mod}.cpython-*.so") and \
                not fnmatch.filter(names, f"hcltdx/{mod}.abi3.so"):
            errors.append(f"wheel: no compiled hcltdx/{mod}")
    wanted = [n for n in sdist if n.startswith("hcltdx/")
              and (n.endswith((".pyi", ".pxd", ".py")) or n == "hcltdx/py.typed")]
    for n in wanted:
        if n not in names:
            errors.append(f"wheel: lacks {n}")
    for pat in ("*.pyx", "hcltdx/*.c", "*.o"):
        for n in fnmatch.filter(names, pat):
            errors.append(f"wheel: holds a source or object file {n}")
    print(f"wheel: {os.path.basename(path)} ({tag}), {len(names)} files, "
          f"{len(modules)} extensions: {', '.join(modules)}")


_CC_WARNING = re.compile(r"^(?P<file>[^\s:]+):\d+:(?:\d+:)? warning: .*?(?:\[(?P<flag>-W[^\]]+)\])?$")
_CYTHON_WARNING = re.compile(r"^warning: (?P<file>\S+\.(?:pyx|pxd)):\d+:\d+: ")


def check_log(path: str, errors: list[str]) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for line in lines:
        if re.search(r"\w*DeprecationWarning", line):
            errors.append(f"build log: {line.strip()}")
    counts: collections.Counter[str] = collections.Counter()
    own: list[str] = []
    for line in lines:
        m = _CYTHON_WARNING.match(line)
        if m:
            counts["Cython (.pyx/.pxd)"] += 1
            continue
        m = _CC_WARNING.match(line)
        if not m:
            continue
        name = m.group("file")
        if re.match(r"(\./)?(csrc|include|benchmarks)/", name):
            counts["project C (csrc/, include/)"] += 1
            own.append(line)
        elif re.match(r"(\./)?hcltdx/_\w+\.c$", name):
            counts["Cython-generated C"] += 1
        else:
            counts[f"other ({name})"] += 1
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
    print(f"build warnings (-Wall -Wextra): {summary}")
    errors.extend(f"build log: project C warning: {line}" for line in own)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dist")
    p.add_argument("--log", help="the output of python -m build")
    p.add_argument("--source", help="source checkout to compare the sdist with (git ls-files)")
    args = p.parse_args(argv)
    errors: list[str] = []
    sdists = glob.glob(os.path.join(args.dist, "*.tar.gz"))
    wheels = glob.glob(os.path.join(args.dist, "*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(f"expected one sdist and one wheel in {args.dist}, found {sdists + wheels}")
        return 1
    sdist = sdist_names(sdists[0])
    check_sdist(sdist, args.source, errors)
    check_wheel(wheels[0], wheel_names(wheels[0]), sdist, errors)
    if args.log:
        check_log(args.log, errors)
    for e in errors:
        print(f"FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
