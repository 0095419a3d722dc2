"""Tests for jupyter_cake.targets: parsing, canonical form and named targets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
import secrets
import subprocess
import sys
from collections.abc import Callable

import pytest

from jupyter_cake.targets import (
    CLOUDS,
    Gpus,
    Quantity,
    Target,
    TargetError,
    config_path,
    load_named_targets,
    parse_gpus,
    parse_infra,
    parse_quantity,
    parse_target,
    resolve_target,
)

NASTY_VALUES = [
    "a;b",
    "$(rm -rf /)",
    "`whoami`",
    "it's \"quoted\"",
    "line1\nline2",
    "",
    "x=y=z",
    "  spaced  ",
    "# not a comment",
]


def roundtrip(t: Target) -> Target:
    return parse_target(t.canonical())


def refusal(call: Callable[..., object], *args: object) -> str:
    """The message of the TargetError that ``call(*args)`` must raise."""
    with pytest.raises(TargetError) as err:
        call(*args)
    return str(err.value)


# ---------------------------------------------------------------- infra


@pytest.mark.parametrize(
    ("text", "canonical", "cloud", "backend"),
    [
        ("local", "local", "local", "local"),
        ("LOCAL", "local", "local", "local"),
        ("slurm/hpc", "slurm/hpc", "slurm", "slurm"),
        ("slurm/hpc/gpu", "slurm/hpc/gpu", "slurm", "slurm"),
        ("Slurm/HPC/gpu", "slurm/HPC/gpu", "slurm", "slurm"),
        ("k8s", "k8s", "k8s", "kubernetes"),
        ("k8s/my-ctx", "k8s/my-ctx", "k8s", "kubernetes"),
        ("Kubernetes", "k8s", "k8s", "kubernetes"),
        ("kubernetes/My-Ctx", "k8s/My-Ctx", "k8s", "kubernetes"),
        ("ssh/my-pool", "ssh/my-pool", "ssh", "sky"),
        ("aws", "aws", "aws", "sky"),
        ("AWS/US-East-1", "aws/us-east-1", "aws", "sky"),
        ("gcp/us-central1/us-central1-a", "gcp/us-central1/us-central1-a", "gcp", "sky"),
        ("  azure/eastus  ", "azure/eastus", "azure", "sky"),
    ],
)
def test_infra_forms(text: str, canonical: str, cloud: str, backend: str) -> None:
    assert parse_infra(text) == canonical
    t = parse_target([text])
    assert (t.infra, t.cloud, t.backend_name) == (canonical, cloud, backend)
    assert t.infra_parts == tuple(canonical.split("/"))


def test_every_cloud_is_accepted() -> None:
    for cloud in CLOUDS:
        assert parse_infra(f"{cloud.upper()}/Region-1") == f"{cloud}/region-1"


def test_k8s_context_may_contain_slashes() -> None:
    ctx = "arn:aws:eks:us-east-1:123456789012:cluster/prod"
    t = parse_target(["k8s/" + ctx])
    assert t.infra_parts == ("k8s", ctx)
    assert roundtrip(t) == t


def test_default_infra_is_local() -> None:
    assert parse_target("") == Target("local")
    assert parse_target([]) == Target("local")
    assert parse_target("--gpus 1").infra == "local"
    assert parse_target("--infra slurm/hpc").infra == "slurm/hpc"


@pytest.mark.parametrize(
    ("text", "expect"),  # typo -> the suggestion
    {"slrum": "'slurm'", "slrum/hpc/gpu": "'slurm/hpc/gpu'", "kubernets": "'kubernetes'", "awz/us-east-1": "'aws/us-east-1'"}.items(),
)
def test_unknown_infra_suggests_closest(text: str, expect: str) -> None:
    msg = refusal(parse_infra, text)
    assert repr(text) in msg and f"Did you mean {expect}?" in msg
    assert "slurm/<cluster>" in msg and "coreweave" in msg  # lists the accepted forms


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "non-empty"),
        ("slurm", "slurm/<cluster>[/<partition>]"),
        ("slurm/a/b/c", "slurm/<cluster>[/<partition>]"),
        ("slurm//gpu", "Invalid cluster ''"),
        ("ssh", "ssh/<pool>"),
        ("local/x", "local takes no"),
        ("aws/us-east-1/a/b", "aws[/<region>[/<zone>]]"),
        ("aws/us east", "Invalid region"),
        ("k8s/", "Kubernetes context ''"),
        ("k8s/bad ctx", "Kubernetes context"),
        ("mars", "Unknown infra 'mars'"),
    ],
)
def test_malformed_infra(text: str, fragment: str) -> None:
    with pytest.raises(TargetError, match="(?i)use ") as err:
        parse_infra(text)
    assert fragment in str(err.value)


# ---------------------------------------------------------------- hosts ssh connects to


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("slurm/-oProxyCommand", "cluster '-oProxyCommand'"),
        ("slurm/-v/gpu", "cluster '-v'"),
        ("slurm/-F --via sky", "cluster '-F'"),
        ("ssh/-pool", "pool '-pool'"),
    ],
)
def test_host_segments_starting_with_a_dash_are_refused(text: str, label: str) -> None:
    # ssh reads an argument starting with '-' as an option; the name is refused before any ssh runs.
    msg = refusal(parse_target, text)
    assert f"Invalid {label}" in msg and "starts with '-'" in msg and "read as an option" in msg
    assert "use a name like" in msg  # the fix


def test_partitions_and_regions_may_still_start_with_a_dash() -> None:
    # Only host names are ssh destinations; --partition=-x is sbatch's to judge.
    assert parse_target("slurm/hpc/-x").infra == "slurm/hpc/-x"


@pytest.mark.parametrize(
    ("login", "why"),
    [
        ("-oProxyCommand=touch /tmp/x", "starts with '-'"),
        ("login node", "contains whitespace"),
        ("hpc\n", "contains whitespace"),
        ("", "is empty"),
    ],
)
def test_slurm_login_option_must_be_a_host_name(login: str, why: str) -> None:
    named = {"t": {"infra": "slurm/hpc", "login": login}}
    msg = refusal(parse_target, "t", named)
    assert f"Invalid login option {login!r}" in msg and why in msg and 'login = "hpc-login"' in msg
    # The same on the command line and from saved state: one rule for every way a target is written.
    assert refusal(parse_target, ["slurm/hpc", "--option", f"login={login}"]) == msg


def test_good_login_options_are_kept() -> None:
    for login in ("local", "me@login.example.org", "hpc-login"):
        assert parse_target("t", {"t": {"infra": "slurm/hpc", "login": login}}).options_dict()["login"] == login


def test_kubernetes_names_and_labels_need_a_full_match() -> None:
    # re.match with '$' accepted a trailing newline ("ns\n"); the pod spec's checks must not.
    from jupyter_cake.backends.kubernetes.podspec import check_name
    from jupyter_cake.errors import CakeError

    assert check_name("namespace", "team-a") == "team-a"
    for bad in ("team-a\n", "team-a\nkind: Secret"):
        with pytest.raises(CakeError, match=r"The Kubernetes namespace .* is not a valid name.*Fix the target's namespace"):
            check_name("namespace", bad)


# ---------------------------------------------------------------- resources


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A100:2", Gpus("A100", 2)),
        ("A100", Gpus("A100", 1)),
        ("2", Gpus(None, 2)),
        ("h100-80gb:8", Gpus("h100-80gb", 8)),
        ("RTX_4090.x:1024", Gpus("RTX_4090.x", 1024)),
    ],
)
def test_parse_gpus(text: str, expected: Gpus) -> None:
    assert parse_gpus(text) == expected
    assert parse_gpus(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("H100:0", "between 1 and 1024"),
        ("H100:-1", "whole number"),
        ("H100:x", "whole number"),
        ("H100:1.5", "whole number"),
        ("H100:1025", "between 1 and 1024"),
        ("0", "between 1 and 1024"),
        ("", "no GPU"),
        (":2", "name is missing"),
        ("H100:2:3", "more than one ':'"),
        ("A 100", "letters, digits"),
    ],
)
def test_malformed_gpus(text: str, why: str) -> None:
    msg = refusal(parse_gpus, text)
    assert repr(text) in msg and why in msg and "A100:2" in msg  # bad value + the fix


@pytest.mark.parametrize(
    ("text", "value", "or_more", "shown"),
    [("8", 8, False, "8"), ("8+", 8, True, "8+"), ("0.5", 0.5, False, "0.5"), (" 1.25+ ", 1.25, True, "1.25+")],
)
def test_parse_quantity(text: str, value: float, or_more: bool, shown: str) -> None:
    q = parse_quantity(text, "cpus")
    assert (q.value, q.or_more, str(q)) == (value, or_more, shown)
    assert q == Quantity(value, or_more)


@pytest.mark.parametrize("text", ["abc", "-1", "0", "0+", "", "+", "8++", "inf", "nan", "1e999", "32GB"])
@pytest.mark.parametrize("what", ["cpus", "memory"])
def test_malformed_quantity(text: str, what: str) -> None:
    msg = refusal(parse_quantity, text, what)
    assert f"--{what}" in msg and repr(text) in msg and "Use a positive number" in msg
    if what == "memory":
        assert "GB" in msg


def test_full_line() -> None:
    t = parse_target(
        "slurm/hpc/gpu --gpus A100:1 --cpus 8+ --memory 32 --nodes 2 --image img:1 "
        "--env HF_HOME=/scratch/hf --workdir /w --idle-minutes 0.05"
    )
    assert t == Target(
        infra="slurm/hpc/gpu",
        gpus=Gpus("A100", 1),
        cpus=Quantity(8, True),
        memory=Quantity(32),
        nodes=2,
        image="img:1",
        env=(("HF_HOME", "/scratch/hf"),),
        workdir="/w",
        idle_minutes=0.05,
    )
    assert t.describe() == "slurm/hpc/gpu · A100:1 · 8+ CPU · 32 GB · 2 nodes"
    assert t.env_dict() == {"HF_HOME": "/scratch/hf"}


def test_equals_form_and_token_list_match_string_form() -> None:
    a = parse_target("aws --gpus=A100:1 --cpus=8+ --env=A=1")
    b = parse_target(["aws", "--gpus", "A100:1", "--cpus", "8+", "--env", "A=1"])
    assert a == b


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ("--nodes 0", ["--nodes", "'0'", "1 to 4096"]),
        ("--nodes 4097", ["'4097'", "1 to 4096"]),
        ("--nodes two", ["'two'", "whole number"]),
        ("--idle-minutes 0", ["--idle-minutes", "'0'", "greater than 0"]),
        ("--idle-minutes -5", ["'-5'", "positive number of minutes"]),
        ("--image ''", ["--image", "non-empty"]),
        ("--env HF_HOME", ["KEY=VALUE", "--env HF_HOME=VALUE"]),
        ("--env 1BAD=x", ["'1BAD'", "start with a letter"]),
        ("--env =x", ["''", "Rename it"]),
        ("--gpu A100", ["'--gpu'", "Did you mean --gpus?", "--idle-minutes"]),
        ("--idle_minutes 5", ["Did you mean --idle-minutes?"]),
        ("--gpus", ["--gpus needs a value", "--gpus A100:1"]),
        ("--gpus --cpus 8", ["--gpus needs a value"]),
        ("--cpus 8 --cpus 4", ["--cpus was given twice", "'8'", "'4'", "only once"]),
        ("aws --infra gcp", ["given twice", "only once"]),
        ("aws gcp", ["Unexpected argument 'gcp'", "--gpus A100:1"]),
        ("aws --env 'A=1", ["no closing quotation", "Close every quote"]),
    ],
)
def test_malformed_lines(line: str, fragments: list[str]) -> None:
    msg = refusal(parse_target, line)
    for fragment in fragments:
        assert fragment in msg
    assert "Traceback" not in msg and "\n" not in msg


def test_env_and_repeat_semantics() -> None:
    t = parse_target("--env B=2 --env A=1 --env B=3 --env C=")
    assert t.env == (("A", "1"), ("B", "3"), ("C", ""))  # sorted, later wins, empty allowed


# ---------------------------------------------------------------- canonical / dict


@pytest.mark.parametrize(
    "line",
    [
        "local",
        "slurm/hpc/gpu --gpus A100:1 --cpus 8+ --memory 32",
        "k8s/ctx --gpus 4 --memory 0.5+ --nodes 3 --image 'ghcr.io/x/y:1' --workdir '/a b'",
        "aws/us-east-1 --idle-minutes 0.05 --option account=p42",
        "gcp --cpus 1e-05 --memory 123456789.125",
    ],
)
def test_canonical_round_trip(line: str) -> None:
    t = parse_target(line)
    assert roundtrip(t) == t
    assert roundtrip(t).canonical() == t.canonical()


def test_canonical_is_deterministic_and_ignores_order() -> None:
    a = parse_target("slurm/hpc --env B=2 --env A=1 --memory 32 --gpus A100")
    b = parse_target("Slurm/hpc --gpus A100:1 --memory=32.0 --env A=1 --env B=2")
    assert a == b
    assert a.canonical() == b.canonical()
    assert re.fullmatch(r"slurm/hpc --gpus A100:1 --memory 32 --env A=\*\*\*@[0-9a-f]{8} --env B=\*\*\*@[0-9a-f]{8}", a.canonical())
    assert parse_target("slurm/hpc --gpus A100:2").canonical() != a.canonical()


def test_canonical_masks_env_values_and_tells_changed_values_apart() -> None:
    # The canonical text is the default session name and the store's target column: never a value in it.
    secret = "hf_" + secrets.token_hex(12)
    t = parse_target(["aws", "--env", f"HF_TOKEN={secret}", "--env", "PATH=/bin:/usr/bin"])
    assert secret not in t.canonical() and "/bin" not in t.canonical()
    assert secret not in json.dumps(t.to_dict(env_values=False))
    # the same values: the same text (re-attach finds the session); another value: other text (a new
    # session with the new token, never the old session still holding the old one)
    assert t.canonical() == parse_target(["aws", "--env", "PATH=/bin:/usr/bin", "--env", f"HF_TOKEN={secret}"]).canonical()
    assert t.canonical() != parse_target(["aws", "--env", f"HF_TOKEN={secret}x", "--env", "PATH=/bin:/usr/bin"]).canonical()
    # the digest is keyed per user (CAKE_DATA_DIR's env.key, 0600): not a plain hash anyone can recompute
    plain = hashlib.sha256(f"HF_TOKEN\0{secret}".encode()).hexdigest()
    assert plain[:8] not in t.canonical()
    # everything but the values still parses back; a masked value pasted back is refused, with the fix
    bare = dataclasses.replace(t, env=())
    assert roundtrip(bare) == bare
    message = refusal(parse_target, t.canonical())
    assert "is a masked value" in message and "--env HF_TOKEN=VALUE" in message and secret not in message
    masked = t.to_dict(env_values=False)
    assert Target.from_dict(json.loads(json.dumps(masked)), env=t.env_dict()) == t
    message = refusal(Target.from_dict, masked)
    assert "HF_TOKEN, PATH" in message and "env file" in message


def test_mask_env_text_masks_lines_written_before_masking() -> None:
    from jupyter_cake.targets.envmask import mask_env_text

    assert mask_env_text("local --cpus 2 --env HF_TOKEN=hf_abc --env 'A=x y' --env=B=2") == (
        "local --cpus 2 --env HF_TOKEN=*** --env A=*** --env=B=***"
    )
    assert mask_env_text("my-session") == "my-session"
    assert mask_env_text("it's broken --env K=v") == "it's broken --env K=***"  # unbalanced quote: word by word
    masked = parse_target("local --env K=v").canonical()
    assert mask_env_text(masked) == masked


@pytest.mark.parametrize("value", NASTY_VALUES)
def test_env_values_are_stored_verbatim(value: str) -> None:
    t = parse_target(["local", "--env", f"X={value}"])
    assert t.env_dict() == {"X": value}
    again = Target.from_dict(json.loads(json.dumps(t.to_dict(env_values=False))), env=t.env_dict())
    assert again.env_dict() == {"X": value}
    assert again == t
    assert Target.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_env_value_with_metacharacters_in_string_line() -> None:
    t = parse_target("""local --env 'CMD=echo hi; $(rm -rf /) `id`' --env "Q=it's" """)
    assert t.env_dict() == {"CMD": "echo hi; $(rm -rf /) `id`", "Q": "it's"}


def test_to_dict_from_dict_round_trip() -> None:
    t = dataclasses.replace(
        parse_target(
            "slurm/hpc/gpu --gpus A100:2 --cpus 8+ --memory 0.5 --nodes 2 --image i --env A=1 "
            "--workdir /w --idle-minutes 30 --option qos=high"
        ),
        name="gpu-box",
    )
    d = t.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Target.from_dict(json.loads(json.dumps(d))) == t
    assert Target.from_dict({"infra": "local"}) == Target("local")
    assert Target.from_dict({**d, "added_by_newer_version": 1}) == t


def test_from_dict_validates() -> None:
    with pytest.raises(TargetError, match="between 1 and 1024"):
        Target.from_dict({"infra": "local", "gpus": {"name": "A100", "count": 0}})
    with pytest.raises(TargetError, match="Unknown infra"):
        Target.from_dict({"infra": "mars"})


# ---------------------------------------------------------------- named targets

GPU_BOX = """
[targets.gpu-box]
infra = "slurm/hpc/gpu"
gpus = "A100:1"
cpus = "8+"
memory = 32
idle_minutes = 20
env = { HF_HOME = "/scratch/hf", OMP_NUM_THREADS = 8 }
account = "proj42"
exclusive = true

[targets.cpu]
cpus = 4

[targets.aws]
infra = "gcp"
"""


def write_config(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, text: str) -> pathlib.Path:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    monkeypatch.setenv("CAKE_CONFIG", str(path))
    return path


def test_named_target_defaults(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, GPU_BOX)
    t = resolve_target("gpu-box")
    assert t.name == "gpu-box"
    assert t.infra == "slurm/hpc/gpu"
    assert (t.gpus, t.cpus, t.memory, t.idle_minutes) == (Gpus("A100", 1), Quantity(8, True), Quantity(32), 20)
    assert t.env_dict() == {"HF_HOME": "/scratch/hf", "OMP_NUM_THREADS": "8"}
    assert t.options == (("account", "proj42"), ("exclusive", "true"))
    assert resolve_target("cpu") == Target("local", name="cpu", cpus=Quantity(4))
    # canonical() drops the name (and masks the --env values) but keeps everything else of the session
    assert roundtrip(dataclasses.replace(t, env=())) == dataclasses.replace(t, name=None, env=())


def test_named_target_line_overrides(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, GPU_BOX)
    t = resolve_target("gpu-box --gpus H100:4 --env HF_HOME=/tmp/hf --env NEW=1 --option account=other")
    assert t.gpus == Gpus("H100", 4)
    assert t.cpus == Quantity(8, True)  # untouched default
    assert t.env_dict() == {"HF_HOME": "/tmp/hf", "NEW": "1", "OMP_NUM_THREADS": "8"}
    assert t.options_dict() == {"account": "other", "exclusive": "true"}
    assert resolve_target("--infra gpu-box").name == "gpu-box"


def test_named_target_shadows_infra(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, GPU_BOX)
    assert resolve_target("aws") == Target("gcp", name="aws")
    assert parse_target("aws") == Target("aws")  # without named targets it is the cloud


def test_unknown_name_suggests_named_target(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, GPU_BOX)
    msg = refusal(resolve_target, "gpu-bx")
    assert "Did you mean 'gpu-box'?" in msg and "named targets: aws, cpu, gpu-box" in msg


def test_invalid_named_target_names_target_and_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, monkeypatch, '[targets.bad]\ninfra = "slurm/hpc"\ngpus = "A100:0"\n\n[targets.ok]\n')
    msg = refusal(resolve_target, "bad")
    assert "'bad'" in msg and str(path) in msg and "'A100:0'" in msg and "A100:2" in msg
    assert resolve_target("ok") == Target("local", name="ok")  # one broken entry blocks nothing else
    with pytest.raises(TargetError, match="Named target 'x'.*env"):
        parse_target("x", {"x": {"env": {"1X": "y"}}})


def test_bad_toml_names_file_and_line(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, monkeypatch, '[targets.a]\ninfra = "local"\ngpus = A100\n')
    msg = refusal(load_named_targets)
    assert str(path) in msg and "line 3" in msg and "toml.io" in msg
    with pytest.raises(TargetError, match="line 3"):
        resolve_target("a")


def test_bad_config_shapes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('targets = "nope"\n')
    with pytest.raises(TargetError, match=r"\[targets\.NAME\]"):
        load_named_targets(path)
    path.write_text('[targets]\nfoo = 1\n')
    with pytest.raises(TargetError, match=r"\[targets\.foo\]"):
        load_named_targets(path)


def test_config_path_and_missing_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("CAKE_CONFIG", str(missing))
    assert config_path() == missing
    assert load_named_targets() == {}
    assert resolve_target("k8s") == Target("k8s")
    monkeypatch.delenv("CAKE_CONFIG")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jcfg"))
    assert config_path() == tmp_path / "jcfg" / "cake" / "targets.toml"


# ---------------------------------------------------------------- misc


def test_describe_variants() -> None:
    assert Target("local").describe() == "local"
    t = Target("aws", name="big", gpus=Gpus(None, 2), memory=Quantity(64, True))
    assert t.describe() == "big (aws) · 2 GPU · 64+ GB"


def test_import_is_light() -> None:
    code = (
        "import sys, jupyter_cake.targets\n"
        "heavy = {'jupyter_core', 'traitlets', 'IPython', 'zmq', 'sky', 'kubernetes', 'tomllib', 'tomli'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=pathlib.Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "backend"),
    [
        ("slurm/hpc", "slurm"),
        ("slurm/hpc --via sky", "sky"),
        ("k8s/ctx", "kubernetes"),
        ("k8s/ctx --via sky", "sky"),
        ("k8s/ctx --task task.yaml", "sky"),
        ("aws --gpus A100:1 --spot --disk 100", "sky"),
        ("local --ray", "local"),
    ],
)
def test_via_task_ray_spot_disk_choose_the_backend_and_round_trip(text: str, backend: str) -> None:
    target = parse_target(text)
    assert target.backend_name == backend
    assert parse_target(target.canonical()) == target
    assert Target.from_dict(target.to_dict()) == target


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("local --via sky", "never goes through SkyPilot"),
        ("gcp --via direct", "clouds are reached through SkyPilot"),
        ("slurm/hpc --via direct --task t.yaml", "needs SkyPilot"),
        ("slurm/hpc --via ssh", "must be one of direct, sky"),
        ("aws --disk 0", "whole number of GB"),
    ],
)
def test_bad_via_task_disk_say_what_to_do(text: str, fragment: str) -> None:
    with pytest.raises(TargetError, match=fragment):
        parse_target(text)


def test_named_target_can_turn_ray_on() -> None:
    target = parse_target("gpu", {"gpu": {"infra": "slurm/hpc", "ray": True, "via": "sky"}})
    assert target.ray and target.backend_name == "sky"
