#!/usr/bin/env python3
"""Prints the shell commands of a guide, as written, as one script.

    extract-guide.py FILE [--receiver rust|python|node] [--section HEADING]

Takes every fenced block whose info string is `sh`, plus the `sh
receiver=<name>` blocks of the chosen receiver (the guides offer one block per
language). With --section, only blocks under that `## ` heading. Used by
scripts/check-guide.sh (`make guide`).
"""
import argparse
import re
import sys

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--receiver", default="rust")
parser.add_argument("--section")
args = parser.parse_args()

blocks = []
section = None
fence = None
for line in open(args.file, encoding="utf-8"):
    if fence is None:
        if line.startswith("## "):
            section = line[3:].strip()
        m = re.match(r"^```(\S*)\s*(.*)$", line.rstrip("\n"))
        if m:
            info, extra = m.group(1), m.group(2).split()
            wanted = info == "sh" and (args.section is None or section == args.section)
            for word in extra:
                if word.startswith("receiver=") and word != f"receiver={args.receiver}":
                    wanted = False
            fence = [] if wanted else False
    elif line.startswith("```"):
        if fence is not False:
            blocks.append("".join(fence))
        fence = None
    elif fence is not False:
        fence.append(line)

if not blocks:
    sys.exit(f"{args.file}: no sh blocks")
print("\n".join(blocks), end="")
