"""Generated sbatch scripts: golden files, and proof that user values cannot inject shell commands."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from helpers import assert_matches_golden, sbatch_script
from jupyter_cake.backends.slurm.script import ENV_FILE, env_upload, job_spec, nanny_archive, render
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import parse_target

GOLDEN = Path(__file__).parent / "golden"
EVIL = ["; touch {marker}", "$(touch {marker})", "`touch {marker}`", "'; touch {marker}; '", '"$(touch {marker})"',
        "line1\ntouch {marker}\n", "\\'$HOME\\\"", "-- --partition=other"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "spec", "named"),
    [
        ("minimal", "slurm/hpc", {}),
        ("gpu_partition", "slurm/hpc/gpu --gpus A100:2 --cpus 8 --memory 32 --env HF_HOME=/scratch/hf", {}),
        ("named_full", "t", {"infra": "slurm/hpc/long", "gpus": "H100:8", "nodes": 2, "account": "proj42", "qos": "high",
                             "time": "1-00:00:00", "sbatch": ["--exclusive", "--mail-type=END"], "python": "/opt/py/bin/python3",
                             "setup": "module load cuda/12.4", "workdir": "/scratch/me/run"}),
    ],
)  # fmt: skip
def test_generated_scripts_match_golden_files(name: str, spec: str, named: dict[str, object]) -> None:
    assert_matches_golden(sbatch_script(spec, **named), GOLDEN / f"{name}.sbatch")


@pytest.mark.parametrize("evil", EVIL)
def test_env_values_reach_the_job_verbatim_and_run_nothing(tmp_path: Path, evil: str) -> None:
    marker = tmp_path / "pwned"
    value = evil.format(marker=marker)
    spec = job_spec(parse_target(["slurm/hpc", "--env", f"CAKE_EVIL={value}"]), "s-0123abcd", 1.0)
    script = render(spec, "QQ==", "0" * 12)
    upload = env_upload(spec)
    assert upload is not None
    # Write the env file as the login node would (the same argv, stdin), in a fake home, then run the
    # script's preamble (directives, environment) there and print the value back.
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(upload[0], input=upload[1], cwd=home, check=True)
    env_file = home / spec.session_dir / ENV_FILE
    assert env_file.stat().st_mode & 0o777 == 0o600 and (home / spec.session_dir).stat().st_mode & 0o777 == 0o700
    preamble = script[: script.index("CAKE_HOME=")]
    probe = preamble + 'printf %s "$CAKE_EVIL"\n'
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, env={"HOME": str(home)})
    assert out.stdout == value
    assert not marker.exists()
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_env_values_are_never_in_the_script_and_never_in_argv() -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    spec = job_spec(parse_target(["slurm/hpc", "--env", f"HF_TOKEN={secret}", "--option", "setup=echo $HF_TOKEN"]),
                    "s-0123abcd", 1.0)  # fmt: skip
    script = render(spec, "QQ==", "0" * 12)
    assert secret not in script and "HF_TOKEN" in script  # the name may show, the value never
    argv, data = env_upload(spec) or ([], b"")
    assert secret not in " ".join(argv) and secret.encode() in data  # stdin only: `ps` shows argv
    # sourced before the setup commands, so they can use the values
    assert script.index(ENV_FILE) < script.index("echo $HF_TOKEN")
    assert env_upload(job_spec(parse_target("slurm/hpc"), "s-0123abcd", 1.0)) is None


@pytest.mark.parametrize("field", ["partition", "account", "qos", "time"])
@pytest.mark.parametrize("evil", ["gpu;id", "$(id)", "`id`", "a'b", "a\nb", "a b"])
def test_directive_values_with_shell_characters_are_refused(field: str, evil: str) -> None:
    named = {"infra": "slurm/hpc", field: evil}
    with pytest.raises(CakeError, match=field):
        sbatch_script("t", **named)


def test_partition_in_the_infra_string_is_checked_too() -> None:
    with pytest.raises(CakeError, match="partition"):
        sbatch_script("slurm/hpc/gpu$(id)")


@pytest.mark.parametrize("option", ["--comment=ok\n#SBATCH --partition=evil", "no-dash", "--x\r--y"])
def test_free_form_sbatch_options_must_be_single_lines(option: str) -> None:
    with pytest.raises(CakeError, match="sbatch option"):
        sbatch_script("t", infra="slurm/hpc", sbatch=[option])


def test_session_names_never_reach_the_script() -> None:
    script = sbatch_script("t", infra="slurm/hpc")
    assert "--job-name=cake-s-0123abcd" in script  # the job is named by the session id only


def test_the_nanny_archive_is_deterministic_and_self_contained(tmp_path: Path) -> None:
    import base64
    import io
    import tarfile

    first, digest = nanny_archive()
    assert nanny_archive() == (first, digest)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(first))) as tar:
        names = tar.getnames()
    assert "jupyter_cake/nanny/nanny.py" in names and "jupyter_cake/nanny/kernel.py" in names
    assert not [n for n in names if not n.startswith("jupyter_cake/") or "/backends/" in n]


@pytest.mark.parametrize(("field", "value"), [("partition", "gpu\n"), ("account", "proj42\n"), ("qos", "high\n"),
                                              ("time", "08:00:00\n"), ("constraint", "a100\n")])  # fmt: skip
def test_directive_values_with_a_trailing_newline_are_refused(field: str, value: str) -> None:
    # '$' in re.match also matches before a final newline: the values must match in full.
    with pytest.raises(CakeError) as err:
        sbatch_script("t", infra="slurm/hpc", **{field: value})
    message = str(err.value)
    assert message.startswith(f"The Slurm {field} {value!r} contains characters") and f"Fix the target's {field}." in message


@pytest.mark.parametrize(
    ("cpus", "fix"),
    [("2.5", "use --cpus 3 (or 2)."), ("0.5", "use --cpus 1."), ("7.2+", "use --cpus 8+ (or 7+).")],
)
def test_fractional_cpus_are_refused_on_slurm(cpus: str, fix: str) -> None:
    # They used to be truncated: 2.5 ran with 2 CPUs, 0.5 with no --cpus-per-task at all.
    with pytest.raises(CakeError) as err:
        sbatch_script(f"slurm/hpc --cpus {cpus}")
    assert str(err.value) == f"--cpus {cpus}: Slurm allocates whole CPUs; {fix}"


def test_memory_below_one_mib_is_refused_on_slurm() -> None:
    # 0.0001 GB used to become --mem=0 (dropped: the job got the partition's default).
    with pytest.raises(CakeError) as err:
        sbatch_script("slurm/hpc --memory 0.0001")
    message = str(err.value)
    assert message.startswith("--memory 0.0001: that is 0.1 MiB") and "smallest memory request is 1 MiB" in message
    assert "e.g. --memory 1 for 1 GB" in message


@pytest.mark.parametrize(("memory", "directive"), [("0.1", "--mem=103M"), ("1.5", "--mem=1536M"),
                                                   ("0.0009765625", "--mem=1M"), ("32+", "--mem=32768M")])  # fmt: skip
def test_memory_becomes_whole_mib_rounded_up(memory: str, directive: str) -> None:
    # 0.1 GB is 102.4 MiB: rounding down (as before) would give the job less than it asked for.
    lines = sbatch_script(f"slurm/hpc --memory {memory} --cpus 4").splitlines()
    assert f"#SBATCH {directive}" in lines and "#SBATCH --cpus-per-task=4" in lines


def test_fractional_cpus_stay_fine_off_slurm() -> None:
    # Only Slurm counts whole CPUs: Kubernetes takes millicores, SkyPilot fractions.
    from jupyter_cake.backends.kubernetes.podspec import _quantity_cpu
    from jupyter_cake.backends.sky.resources import resources

    assert _quantity_cpu(parse_target("k8s --cpus 0.5").cpus.value) == "500m"  # type: ignore[union-attr]
    assert resources(parse_target("aws --cpus 2.5 --memory 0.0001"))["cpus"] == "2.5"
