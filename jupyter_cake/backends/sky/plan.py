"""``%cake plan <target>`` / ``%cake use ... --dryrun`` / ``cake plan``: what SkyPilot would launch and
what it costs, without launching anything."""

from __future__ import annotations

from jupyter_cake.targets import Target


def plan_text(target: Target) -> str:
    if target.backend_name != "sky":
        how = "Cake's direct backend" if target.backend_name in ("slurm", "kubernetes") else "this machine"
        hint = " Add --via sky to plan it through SkyPilot." if target.backend_name in ("slurm", "kubernetes") else ""
        return f"{target.describe()} runs on {how}, not through SkyPilot: there is nothing to plan.{hint}"
    from jupyter_cake.backends import get_backend

    result = get_backend("sky").plan(target)  # type: ignore[attr-defined]
    lines = [f"SkyPilot's plan for {target.describe()}:", result.get("table", "").rstrip()]
    chosen = result.get("chosen") or {}
    if chosen:
        instance = chosen.get("INSTANCE", "-")
        where = chosen.get("INFRA", target.infra)
        what = f"{where}" + (f", {instance}" if instance and instance != "-" else "")
        price = result.get("price_per_hour")
        cost = f"${price:.2f}/hour" if price is not None else "price unknown (no catalog for this infra)"
        lines.append(f"Chosen: {what} — {cost}. `%cake use` with the same target launches it.")
    return "\n".join(line for line in lines if line)
