"""What a notebook user sees when cells run on a Cake session (real kernels through nbclient)."""

from __future__ import annotations

import threading
import time

from helpers import Notebook, text


def _stream_messages(nb: Notebook) -> list[tuple[float, dict]]:
    return [(t, m) for t, m in nb.client.received if m["header"]["msg_type"] == "stream"]


def test_output_streams_live_with_stdout_and_stderr_apart(notebook: Notebook) -> None:
    started = time.time()
    cell = notebook.run(
        "%%cake\n"
        "import sys, time\n"
        "for i in range(10):\n"
        "    print(f'out {i}')\n"
        "    print(f'err {i}', file=sys.stderr)\n"
        "    time.sleep(0.2)\n"
    )
    ended = time.time()
    streams = _stream_messages(notebook)
    assert streams, "no stream output reached the notebook"
    first_arrival = streams[0][0]
    # The first line must arrive while the 2 s cell is still running, not with the rest at the end.
    assert first_arrival - started < 1.0, f"first output after {first_arrival - started:.2f} s"
    assert ended - first_arrival > 1.2
    assert text(cell, "stdout") == "".join(f"out {i}\n" for i in range(10))
    assert text(cell, "stderr") == "".join(f"err {i}\n" for i in range(10))


def test_figure_arrives_as_png_and_dataframe_as_html(notebook: Notebook) -> None:
    cell = notebook.run(
        "%%cake\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [3, 1, 2])\n"
        "plt.show()\n"
    )
    pngs = [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 1 and len(pngs[0].data["image/png"]) > 1000

    cell = notebook.run("%%cake\nimport pandas as pd\npd.DataFrame({'gpu': ['A100', 'H100'], 'count': [1, 8]})")
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert len(results) == 1, cell.outputs
    assert "<table" in results[0].data["text/html"] and "H100" in results[0].data["text/html"]
    assert "H100" in results[0].data["text/plain"]


def test_clear_output_and_progress_bars_leave_only_the_final_state(notebook: Notebook) -> None:
    cell = notebook.run(
        "%%cake\n"
        "from IPython.display import clear_output\n"
        "import time\n"
        "for i in range(5):\n"
        "    clear_output(wait=True)\n"
        "    print(f'step {i}')\n"
        "    time.sleep(0.05)\n"
    )
    assert text(cell) == "step 4\n"

    cell = notebook.run("%%cake\nfrom tqdm import tqdm\nimport time\nfor _ in tqdm(range(20)):\n    time.sleep(0.01)\n")
    bar = text(cell, "stderr")
    assert bar.split("\r")[-1].strip().startswith("100%"), repr(bar[-200:])


def test_display_handles_update_in_place(notebook: Notebook) -> None:
    cell = notebook.run(
        "%%cake\n"
        "from IPython.display import display\n"
        "import time\n"
        "h = display('epoch 0', display_id=True)\n"
        "for i in range(1, 4):\n"
        "    time.sleep(0.05)\n"
        "    h.update(f'epoch {i}')\n"
    )
    shown = [o for o in cell.outputs if o.output_type == "display_data"]
    assert len(shown) == 1
    assert shown[0].data["text/plain"] == "'epoch 3'"  # updated in place, not appended


def test_remote_exception_fails_the_cell_and_the_session_survives(notebook: Notebook) -> None:
    notebook.run("%%cake\nsurvivor = 'still here'")
    error = notebook.fails("%%cake\ndef f():\n    return 1 / 0\nf()\n")
    assert "RemoteError" in error
    assert "ZeroDivisionError" in error and "division by zero" in error
    assert "return 1 / 0" in error  # the remote traceback, with the remote source line
    cell = notebook.run("%%cake\nprint(survivor)")
    assert text(cell) == "still here\n"


def test_stop_button_interrupts_the_remote_cell_and_keeps_state(notebook: Notebook) -> None:
    notebook.run("%%cake\nkept = 42")
    timer = threading.Timer(1.5, notebook.interrupt)
    timer.start()
    started = time.time()
    error = notebook.fails("%%cake\nimport time\ntime.sleep(60)\n")
    took = time.time() - started - 1.5
    assert "KeyboardInterrupt" in error
    assert took < 2.0, f"interrupt took {took:.2f} s"
    cell = notebook.run("%%cake\nprint(kept + 1)")
    assert text(cell) == "43\n"


def test_push_and_pull_a_200mb_array(notebook: Notebook) -> None:
    notebook.run("import numpy as np\narr = np.random.default_rng(7).integers(0, 255, 200_000_000, dtype=np.uint8)")
    cell = notebook.run(
        "%%cake --push arr --pull back,total\n"
        "back = arr.copy()\n"
        "back[0] = arr[0]  # received arrays are writable\n"
        "total = int(arr.sum(dtype='uint64'))\n"
    )
    assert not [o for o in cell.outputs if o.output_type == "error"]
    check = notebook.run(
        "print(np.array_equal(arr, back), back.nbytes, back.flags.writeable, total == int(arr.sum(dtype='uint64')))"
    )
    assert text(check) == "True 200000000 True True\n"
    notebook.run("small = {'a': [1, 2]}\n%cake push small")
    notebook.run("%%cake\nsmall['b'] = 3")
    notebook.run("del small\n%cake pull small")
    assert text(notebook.run("print(small)")) == "{'a': [1, 2], 'b': 3}\n"
    notebook.run("del arr, back\n%cake down")  # free 400 MB in the local kernel and the session
    notebook.run("%cake use local --name tests")


def test_execute_result_becomes_the_cells_out(notebook: Notebook) -> None:
    cell = notebook.run("%%cake\n6 * 7")
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert [r.data["text/plain"] for r in results] == ["42"]


def test_json_and_html_display_mime_types(notebook: Notebook) -> None:
    cell = notebook.run(
        "%%cake\nfrom IPython.display import display, HTML, JSON\n"
        "display(HTML('<b>bold</b>'))\ndisplay(JSON({'gpus': 8, 'nodes': ['a', 'b']}))\n"
    )
    shown = [o.data for o in cell.outputs if o.output_type == "display_data"]
    assert [sorted(k for k in data if k != "text/plain") for data in shown] == [["text/html"], ["application/json"]]
    assert shown[0]["text/html"] == "<b>bold</b>"
    assert shown[1]["application/json"] == {"gpus": 8, "nodes": ["a", "b"]}  # the object, not its text


def test_one_cell_on_another_target_leaves_the_current_session_alone(notebook: Notebook) -> None:
    notebook.run("%%cake\nimport os\nhome_pid = os.getpid()")
    cell = notebook.run("%%cake --target local --env WHERE=elsewhere\nimport os\nprint(os.environ['WHERE'], os.getpid())")
    where, other_pid = text(cell).split("\n")[-2].split()
    assert where == "elsewhere"
    cell = notebook.run("%%cake\nprint(os.getpid() == home_pid, os.getpid() != " + other_pid + ")")
    assert text(cell) == "True True\n"
    notebook.run("%cake down 'local --env WHERE=elsewhere'")
