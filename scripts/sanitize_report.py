"""Summarise ASan/LSan/UBSan logs: count reports whose stack reaches
hcltdx's own code (the extensions or the simulator). Exit 1 if any."""

import pathlib
import re
import sys

OURS = re.compile(r"hcltdx/_\w+\.(c|pyx)|csrc/sim/|hcltdx/_\w+\.cpython|/hcltdx/")


def stanzas(text):
    # ASan/LSan: blank-line separated blocks; UBSan: "runtime error" lines with a stack.
    block = []
    for line in text.splitlines():
        if not line.strip():
            if block:
                yield block
            block = []
        else:
            block.append(line)
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
