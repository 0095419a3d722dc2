"""The side panel's cost line in a real JupyterLab (Debian's chromium): a session's $/hour and what it has
cost so far, including a price of $0 (a free pool is a price too, and the panel used to hide it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import cake_cli
from lab_util import Lab

from jupyter_cake.manager import Cake
from jupyter_cake.store import Store
from jupyter_cake.targets import parse_target

pytestmark = pytest.mark.usefixtures("built_labextension")  # the side panel, built by tools/test.sh


@pytest.fixture
def priced() -> Iterator[dict[str, str]]:
    """Two live local sessions whose price is what SkyPilot would have recorded: $0 and $2.50 an hour
    (the local backend has no price of its own)."""
    cake = Cake()
    ids: dict[str, str] = {}
    try:
        for name, price in (("free-pool", 0.0), ("paid-pool", 2.5)):
            handle, _ = cake.use(parse_target("local"), name=name, new=True)
            Store().update_session(handle.id, price_per_hour=price)
            ids[name] = handle.id
        yield ids
    finally:
        for session_id in ids.values():
            cake_cli("down", session_id)


def test_the_panel_shows_each_sessions_price_and_cost_so_far(lab: Lab, page: Any, priced: dict[str, str]) -> None:
    page.goto(lab.url(f"lab?reset&token={lab.token}"))
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="cake-panel"]').click()
    panel = page.locator("#cake-panel")
    for name, shown in (("free-pool", "$0.00/h, $0.00 so far"), ("paid-pool", "$2.50/h, $0.")):
        numbers = panel.locator(f'.cake-numbers[data-session="{priced[name]}"]')
        numbers.wait_for(timeout=30_000)
        page.wait_for_function("([id, text]) => document.querySelector(`.cake-numbers[data-session=\"${id}\"]`)"
                               "?.textContent.includes(text)", arg=[priced[name], shown], timeout=30_000)  # fmt: skip
        assert shown in numbers.inner_text(), numbers.inner_text()
