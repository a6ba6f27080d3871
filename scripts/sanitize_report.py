"""Summarise ASan/LSan/UBSan logs: count reports whose stack reaches
hcltdx's own code (the extensions or the simulator). Exit 1 if any."""

import pathlib
import re
import sys

OURS = re.compile(r"hcltdx/_\w+\.(c|pyx)|csrc/sim/|hcltdx/_\w+\.cpython|/hcltdx/")


START = re.compile(r"runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                   r"(Direct|Indirect) leak of")


def stanzas(text):
    """Reports: from a line that starts one (ASan/LSan's header, a leak, a
    UBSan "runtime error") to the next blank line or the next report. In the
    run's stderr log they may follow other output on the same line."""
    block = None
    for line in text.splitlines():
        m = START.search(line)
        if m:
            if block:
                yield block
            block = [line[m.start():] if "runtime error" not in line else line]
        elif block is not None:
            if line.strip():
                block.append(line)
            else:
                yield block
                block = None
    if block:
        yield block


def main(logdir):
    counts = {"memory errors": 0, "leaks": 0, "undefined behaviour": 0, "reports elsewhere": 0}
    shown = 0
    for path in sorted(pathlib.Path(logdir).glob("*")):
        for block in stanzas(path.read_text(errors="replace")):
            head = block[0]
            if "leak of" in head:
                kind = "leaks"
            elif "runtime error" in head:
                kind = "undefined behaviour"
            elif "ERROR: AddressSanitizer" in head or "ERROR: AddressSanitizer" in " ".join(block[:2]):
                kind = "memory errors"
            else:
                continue
            if OURS.search("\n".join(block)):
                counts[kind] += 1
                if shown < 5:
                    print(f"--- {path.name}\n" + "\n".join(block[:25]))
                    shown += 1
            else:
                counts["reports elsewhere"] += 1
    print("sanitizer reports in hcltdx code: " +
          ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 1 if counts["memory errors"] or counts["leaks"] or counts["undefined behaviour"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
