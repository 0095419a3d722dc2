"""SkyPilot failures -> one clear message each: the cause in SkyPilot's own words, then the fix."""

from __future__ import annotations

import os

from jupyter_cake.backends.sky.bridge import BridgeError
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target


def explain(error: BridgeError, target: Target, action: str) -> CakeError:
    """``action`` is what Cake was doing, e.g. "launch SkyPilot cluster cake-x on aws"."""
    said = str(error).strip()
    infra = target.infra
    kind = error.kind
    if kind == "api_unreachable":
        endpoint = os.environ.get("SKYPILOT_API_SERVER_ENDPOINT") or "its configured endpoint (sky api info)"
        return CakeError(
            f"Could not {action}: SkyPilot's API server is unreachable at {endpoint}. SkyPilot said: {said} "
            "Fix: start a local one with `sky api start`, or point SKYPILOT_API_SERVER_ENDPOINT / `sky api login` "
            "at a running server."
        )
    if kind == "timeout":
        return CakeError(f"Could not {action}: {said}")
    if kind == "no_infra":
        return CakeError(
            f"Could not {action}: SkyPilot has no enabled infra for {infra!r}. SkyPilot said: {said} "
            f"Fix: set up credentials for it and run `sky check {target.cloud}` until it shows enabled "
            "(or pick an infra `sky check` lists as enabled)."
        )
    if kind == "quota":
        return CakeError(
            f"Could not {action}: the quota of your account does not allow these resources. SkyPilot said: {said} "
            "Fix: request a quota increase from the provider, or ask for fewer/smaller GPUs or another region."
        )
    if kind in ("capacity", "mismatch"):
        return CakeError(
            f"Could not {action}: SkyPilot found no way to get these resources on {infra!r}. SkyPilot said: {said} "
            "Fix: if no offering matches, ask for a GPU type the infra has (`sky show-gpus`), another region or zone, "
            "or fewer resources (`%cake plan <target>` shows what SkyPilot would choose); if provisioning failed, "
            "the reason is above and in `sky api logs`."
        )
    if kind == "invalid":
        return CakeError(f"Could not {action}: SkyPilot rejected the task. SkyPilot said: {said} Fix the target or task YAML.")
    if kind == "crash":
        return CakeError(f"Could not {action}. {said}")
    left = error.detail.get("cleaned")
    leftover = "" if left is None or left else " The failed cluster could not be removed: run `sky status` and `sky down` it."
    return CakeError(f"Could not {action}. SkyPilot said: {said}{leftover}")
