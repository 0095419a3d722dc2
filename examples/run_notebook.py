"""Execute a notebook headless through nbclient and print what each cell showed.

Usage: python examples/run_notebook.py NOTEBOOK.ipynb
Exit code 0 only if every cell ran without error (what `make demo` promises).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def describe(output: dict) -> str:
    kind = output["output_type"]
    if kind == "stream":
        return output["text"]
    if kind == "error":
        return f"{output['ename']}: {output['evalue']}\n"
    data = output.get("data", {})
    extras = [f"[{mime}, {len(str(value))} bytes]" for mime, value in data.items() if mime != "text/plain"]
    text = data.get("text/plain", "")
    return "  ".join(filter(None, [text, *extras])) + "\n"


def main(path: str) -> int:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    failed = False
    try:
        client.execute()
    except CellExecutionError:
        failed = True
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        print(f"--- In [{index}]: {cell.source.splitlines()[0] if cell.source else ''}")
        for output in cell.get("outputs", []):
            sys.stdout.write(describe(output))
    print("--- all cells succeeded" if not failed else "--- a cell failed (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
