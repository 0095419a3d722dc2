"""``cake run --ray FILE``: the script as a Ray job of the session's cluster, through the Ray Jobs API.

The local half is ``jupyter_cake.runner`` unchanged (session, working directory sync, streaming,
Ctrl-C, exit codes); only the code sent to the session differs. The kernel, which runs on the head
node, submits the job with the synced directory as its ``working_dir`` and then streams the job's
driver log straight from the file Ray writes on the head node: new bytes go out as the run's stdout
within milliseconds, through the session channel, where Ray's own ``tail_job_logs`` polls once a
second. The run ends with the job: SUCCEEDED exits 0, FAILED with the driver's exit code, STOPPED
with 130. Ctrl-C (the kernel's interrupt) stops the job through the Jobs API.
"""

from __future__ import annotations

from typing import Any

# CakeScriptExit and unpack_bundle are used by the remote half: remote_cell sends them along with it.
from jupyter_cake.workdir import SKIP_DIRS, CakeScriptExit, remote_cell, unpack_bundle


def _remote_job(spec: dict[str, Any]) -> None:  # pragma: no cover - runs inside the session's kernel
    """Runs in the session's kernel (sent as source): unpack, submit, stream the driver log, settle."""
    import codecs
    import os
    import shlex
    import sys
    import time
    from pathlib import Path

    from IPython import get_ipython

    cwd = unpack_bundle(spec, "cake-ray-job-") or spec["cwd"]  # sent beside this function (remote_cell)
    if "RAY_API_SERVER_ADDRESS" not in os.environ:
        raise CakeScriptExit(2, "this session has no Ray cluster; start one with --ray")
    from ray.job_submission import JobStatus, JobSubmissionClient

    argv = list(spec["argv"])
    entrypoint = shlex.join([sys.executable, "-u", *argv] if spec["python"] else argv)
    client = JobSubmissionClient(os.environ["RAY_API_SERVER_ADDRESS"])
    logs = Path(os.environ["CAKE_RAY_TEMP_DIR"]) / "session_latest" / "logs"
    timing: dict[str, Any] = {"submit": time.time(), "first_line": None, "end": None, "chunks": []}
    get_ipython().user_ns["_cake_ray_job"] = timing  # for benchmarks: submit -> first log line
    runtime_env = {"working_dir": cwd, "excludes": list(spec.get("excludes") or []),
                   "env_vars": {"PYTHONUNBUFFERED": "1"}}  # fmt: skip
    job = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=spec.get("submission_id"))
    timing["submitted"] = time.time()
    if spec.get("bundle"):  # Ray packed and uploaded the directory at submit: the unpacked copy can go
        import shutil

        shutil.rmtree(cwd, ignore_errors=True)
    sys.stderr.write(f"[cake] Ray job {job} submitted ({spec['label']})\n")
    sys.stderr.flush()
    path = logs / f"job-driver-{job}.log"
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    offset = 0

    def pump() -> bool:
        nonlocal offset
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        offset += len(chunk)
        text = decoder.decode(chunk)
        if text:
            if timing["first_line"] is None:
                timing["first_line"] = time.time()
            if len(timing["chunks"]) < 50:  # (time, text) of the first chunks: when did a given line arrive
                timing["chunks"].append((time.time(), text[:500]))
            sys.stdout.write(text)
            sys.stdout.flush()
        return True

    stop_sent = 0
    next_status = 0.0
    info = None
    while True:
        try:
            got = pump()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + 0.2
                info = client.get_job_info(job)
                if JobStatus(info.status).is_terminal():
                    time.sleep(0.05)  # the driver's last write lands before Ray marks the job done
                    while pump():
                        pass
                    break
            if not got:
                time.sleep(0.005)
        except KeyboardInterrupt:
            stop_sent += 1
            sys.stderr.write(f"[cake] stopping Ray job {job}\n")
            sys.stderr.flush()
            client.stop_job(job)
    timing["end"] = time.time()
    status = JobStatus(info.status)
    if status == JobStatus.SUCCEEDED:
        return
    if status == JobStatus.STOPPED:
        raise CakeScriptExit(130, f"Ray job {job} was stopped (exit code 130)")
    code = getattr(info, "driver_exit_code", None) or 1
    reason = (info.message or "").strip().splitlines()
    raise CakeScriptExit(code, f"Ray job {job} failed with exit code {code}" + (f": {reason[0]}" if reason else ""))


def remote_code(spec: dict[str, Any], comment: str) -> str:
    """The cell sent to the session (same shape as jupyter_cake.runner.remote_code)."""
    spec = dict(spec, excludes=[*sorted(SKIP_DIRS), "*.pyc"])  # gitignore syntax: a name matches anywhere
    return remote_cell(_remote_job, spec, comment, "<cake run --ray>")
