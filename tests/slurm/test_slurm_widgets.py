"""Remote widgets and prompts on the real Slurm cluster over SSH: the comm bridge and stdin are the
engine's channel, not a backend feature, so a slider, a prompt and the kernel's encryption behave as on
`local` (tests/test_remote_widgets.py has the whole protocol)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from frontend import Frontend

from jupyter_cake.store import Store

pytestmark = pytest.mark.usefixtures("slurm")

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_a_slider_and_a_prompt_over_ssh() -> None:
    fe = Frontend()
    try:
        fe.execute("%load_ext jupyter_cake")
        fe.execute("%cake use hpc --name slurm-widgets --new", timeout=180)
        shown = fe.execute("%%cake\nimport ipywidgets as widgets\nslider = widgets.IntSlider(value=2)\nslider")
        opened = {m["content"]["comm_id"] for m in shown if m["msg_type"] == "comm_open"}
        [view] = [m["content"]["data"][WIDGET_VIEW]["model_id"] for m in shown if m["msg_type"] == "execute_result"]
        assert view in opened
        fe.comm_msg(view, {"method": "update", "state": {"value": 9}, "buffer_paths": []})
        asked = fe.execute("%%cake\nanswer = input('go? ')\nprint(slider.value, answer)", answers=["on"])
        assert fe.prompts == [{"prompt": "go? ", "password": False}]
        assert "".join(m["content"].get("text", "") for m in asked if m["msg_type"] == "stream") == "9 on\n"
        # The session's kernel traffic, forwarded over SSH, is encrypted end to end as well.
        row = Store().live_session("slurm-widgets", "")
        assert row is not None
        report = json.loads((Path(row.session_dir) / "connection.json").read_text())
        assert report["connection"]["curve_publickey"] and report["plaintext"] is None
    finally:
        fe.execute("%cake down")
        fe.close()
