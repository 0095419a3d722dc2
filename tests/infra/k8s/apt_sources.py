"""The Debian archives this machine's apt already uses, for the Kubernetes build (no mirror is
hard-coded: whatever the machine is configured with, including a local mirror, is used).

    python3 apt_sources.py src      deb-src stanzas (deb822) for the same archives, suites and keys
    python3 apt_sources.py mirror   the archive that serves the release itself (for debootstrap)
"""

from __future__ import annotations

import sys
from pathlib import Path

APT = Path("/etc/apt")


def stanzas() -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for path in sorted((APT / "sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if line.strip() and not line.lstrip().startswith("#") and ":" in line:
                    key, _, value = line.partition(":")
                    fields[key.strip()] = value.strip()
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                found.append(fields)
    lists = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 4 and words[0] == "deb":
                options = {}
                if words[1].startswith("["):
                    while not words[1].endswith("]"):
                        words[1:3] = [words[1] + " " + words[2]]
                    options = dict(o.split("=", 1) for o in words[1].strip("[]").split() if "=" in o)
                    words.pop(1)
                entry = {"URIs": words[1], "Suites": words[2], "Components": " ".join(words[3:])}
                if "signed-by" in options:
                    entry["Signed-By"] = options["signed-by"]
                found.append(entry)
    return found


def main() -> None:
    release = "bookworm"
    entries = [e for e in stanzas() if any(s.startswith(release) for s in e.get("Suites", "").split())]
    if not entries:
        sys.exit(f"no apt source for Debian {release} is configured in {APT}")
    if sys.argv[1:] == ["mirror"]:
        print(next(e["URIs"].split()[0] for e in entries if release in e["Suites"].split()))
        return
    for entry in entries:
        print("Types: deb-src")
        for key in ("URIs", "Suites", "Components", "Signed-By"):
            if entry.get(key):
                print(f"{key}: {entry[key]}")
        print()


if __name__ == "__main__":
    main()
