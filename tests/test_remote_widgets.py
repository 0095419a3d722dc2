"""Remote widgets and prompts in `%%cake` cells, seen from a frontend: the notebook's own kernel (a real
ipykernel with the magics) driven at the Jupyter protocol by a jupyter_client "frontend" that does what
JupyterLab does (keeps the comms its kernel opens, sends comm messages when a slider moves, answers
input_request on stdin). The remote session is a real local one; nothing is mocked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from frontend import Frontend

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


def _opened(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["content"]["comm_id"]: m["content"] for m in messages if m["msg_type"] == "comm_open"}


@pytest.fixture(scope="module")
def frontend() -> Iterator[Frontend]:
    fe = Frontend()
    try:
        fe.execute("%load_ext jupyter_cake")
        fe.execute("%cake use local --name widgets-test --new")
        yield fe
        fe.execute("%cake down")
    finally:
        fe.close()


def test_a_remote_slider_renders_and_moving_it_changes_the_remote_value(frontend: Frontend) -> None:
    shown = frontend.execute(
        "%%cake\nimport ipywidgets as widgets\nslider = widgets.IntSlider(value=3, description='lr')\n"
        "slider.observe(lambda change: print('remote saw', change['new']), 'value')\nslider"
    )
    opened = _opened(shown)
    views = [m["content"]["data"][WIDGET_VIEW]["model_id"] for m in shown
             if m["msg_type"] in ("display_data", "execute_result") and WIDGET_VIEW in m["content"]["data"]]  # fmt: skip
    assert len(views) == 1 and views[0] in opened, (views, list(opened))  # no "model not found"
    model = opened[views[0]]
    assert model["target_name"] == "jupyter.widget"
    assert model["data"]["state"]["_model_name"] == "IntSliderModel" and model["data"]["state"]["value"] == 3
    # Every model the view needs (layout, style) was opened before the view was shown.
    order = [m["msg_type"] for m in shown]
    assert max(i for i, t in enumerate(order) if t == "comm_open") < order.index("execute_result")

    # The user drags the slider to 7: the remote widget takes it and its observer runs remotely; what it
    # prints comes back as the answer to that comm message, as a local widget's would.
    answer = frontend.comm_msg(views[0], {"method": "update", "state": {"value": 7}, "buffer_paths": []})
    assert _stdout(answer) == "remote saw 7\n"
    assert _stdout(frontend.execute("%%cake\nprint(slider.value)")) == "7\n"

    # Changed remotely (by code), the view follows: an update on the same comm.
    changed = frontend.execute("%%cake\nslider.value = 11")
    updates = [m["content"]["data"] for m in changed if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == views[0]]
    assert {"method": "update", "state": {"value": 11}, "buffer_paths": []} in updates, updates

    # Closed remotely: closed here too, so the frontend drops the model.
    closed = frontend.execute("%%cake\nslider.close()")
    assert views[0] in [m["content"]["comm_id"] for m in closed if m["msg_type"] == "comm_close"]


def test_a_tqdm_auto_bar_reaches_100_percent_with_every_update_in_order(frontend: Frontend) -> None:
    cell = frontend.execute(
        "%%cake\nimport time\nfrom tqdm.auto import tqdm\n"
        "for i in tqdm(range(300), mininterval=0): time.sleep(0.002)\nprint('done')"
    )
    progress = [cid for cid, c in _opened(cell).items() if c["data"]["state"].get("_model_name") == "FloatProgressModel"]
    assert len(progress) == 1, _opened(cell)
    values = [m["content"]["data"]["state"]["value"] for m in cell
              if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == progress[0]
              and "value" in m["content"]["data"].get("state", {})]  # fmt: skip
    assert values[-1] == 300 and values == sorted(values), values[-5:]  # in order, up to 100 %
    assert _stdout(cell).endswith("done\n")


def test_input_and_getpass_in_a_remote_cell_ask_the_frontend(frontend: Frontend) -> None:
    cell = frontend.execute(
        "%%cake\nimport getpass\nname = input('your name? ')\nsecret = getpass.getpass('token: ')\n"
        "print(f'hello {name}, {len(secret)} chars')",
        answers=["Ada", "hunter22"],
    )
    assert frontend.prompts == [{"prompt": "your name? ", "password": False},
                                {"prompt": "token: ", "password": True}]  # fmt: skip
    assert _stdout(cell).endswith("hello Ada, 8 chars\n")
    assert "hunter22" not in str(cell)  # getpass does not echo


def test_debug_after_a_remote_exception_inspects_the_remote_frame(frontend: Frontend) -> None:
    with pytest.raises(AssertionError):  # the cell fails with the remote ZeroDivisionError
        frontend.execute("%%cake\ndef train(lr):\n    local_var = lr * 42\n    return local_var / 0\ntrain(2)")
    cell = frontend.execute("%%cake\n%debug", answers=["p local_var", "q"])
    assert [p["prompt"] for p in frontend.prompts] == ["ipdb> ", "ipdb> "]
    shown = re.sub(r"\x1b\[[0-9;]*m", "", _stdout(cell))  # pdb colours its listing
    assert "return local_var / 0" in shown and "\n84\n" in shown, shown


def test_without_a_frontend_prompt_input_fails_as_it_would_locally(frontend: Frontend) -> None:
    """A frontend that does not take input (allow_stdin false, like nbclient): the remote input() raises
    StdinNotImplementedError at once instead of waiting for an answer nobody can give."""
    with pytest.raises(AssertionError, match="StdinNotImplementedError"):
        frontend.execute("%%cake\ninput('never asked: ')")


def test_a_kernel_that_attaches_later_gets_the_live_widgets_back(frontend: Frontend) -> None:
    """The notebook's kernel restarted (or another notebook attached): the remote widgets are still alive,
    so their models come back with their state, and a view shown again is no 'model not found'."""
    frontend.execute("%%cake\nimport ipywidgets as widgets\nkept = widgets.IntSlider(value=5)")
    later = Frontend()
    try:
        later.execute("%load_ext jupyter_cake")
        later.execute("%cake use local --name widgets-test")  # re-attach to the same session
        shown = later.execute("%%cake\nkept")
        opened = _opened(later.messages)
        [view] = [m["content"]["data"][WIDGET_VIEW]["model_id"] for m in shown if m["msg_type"] == "execute_result"]
        assert view in opened and opened[view]["data"]["state"]["value"] == 5
        assert opened[view]["data"]["state"]["_model_name"] == "IntSliderModel"
        later.comm_msg(view, {"method": "update", "state": {"value": 6}, "buffer_paths": []})
        assert _stdout(frontend.execute("%%cake\nprint(kept.value)")) == "6\n"  # the first notebook sees it too
    finally:
        later.close()


def test_a_detached_runs_prompt_waits_for_attach(frontend: Frontend) -> None:
    detached = frontend.execute("%%cake --detach\nplan = input('continue? ')\nprint('plan is', plan)")
    run_id = re.search(r"run (r-[0-9a-f]+) detached", _stdout(detached))
    assert run_id, _stdout(detached)
    attached = frontend.execute(f"%cake attach {run_id.group(1)}", answers=["yes"])
    assert frontend.prompts == [{"prompt": "continue? ", "password": False}]
    assert _stdout(attached).endswith("plan is yes\n")


def test_a_remote_output_widget_captures_into_itself(frontend: Frontend) -> None:
    """`with out: print(...)`: the remote Output widget names the request whose outputs it captures; the
    frontend sees them under its own cell's request, so the twin names that one."""
    msg_id = frontend.kc.execute("%%cake\nimport ipywidgets as widgets\nout = widgets.Output()\ndisplay(out)\n"
                                 "with out:\n    print('inside the widget')")  # fmt: skip
    cell = frontend._until_idle(msg_id, [], 60, expect_reply=True)
    captures = [m["content"]["data"]["state"]["msg_id"] for m in cell
                if m["msg_type"] == "comm_msg" and "msg_id" in m["content"]["data"].get("state", {})]  # fmt: skip
    assert captures[0] == msg_id and captures[-1] == ""  # set for the `with` block, cleared after it
    printed = [m for m in cell if m["msg_type"] == "stream" and m["content"]["text"] == "inside the widget\n"]
    assert printed and printed[0]["parent_header"]["msg_id"] == msg_id  # what the frontend redirects
