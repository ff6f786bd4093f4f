"""Training configs: YAML round trip, profiles, `--set` overrides and their errors."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from twostage.config import (
    ConfigError,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    profile_defaults,
    save_config,
)
from twostage.errors import UserError
from twostage.limits import MAX_ITERATIONS, MAX_NUM_WORKERS
from twostage.ops.degrade import load_preset
from twostage.ops.files import read_yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["paper", "cpu", "tiny"])
def test_save_then_load_gives_an_equal_config(tmp_path: Path, profile: str) -> None:
    cfg = profile_defaults(profile)
    cfg = apply_overrides(cfg, ["optim.lr=3.5e-5", "data.val=null", "run.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert isinstance(again.optim.betas, tuple)


def test_paper_profile_is_the_papers_setting() -> None:
    # docs/design.md / the paper's §4: batch 8 of 96×96 LR patches, Adam β=(0.9, 0.99), ε=1e-8,
    # lr 1e-4 halved every 50k iterations, 150k iterations, L1, flips and rotations.
    cfg = profile_defaults("paper")
    assert (cfg.data.batch_size, cfg.data.patch_size, cfg.data.augment) == (8, 96, True)
    assert cfg.optim.betas == (0.9, 0.99) and cfg.optim.eps == 1e-8
    assert (cfg.optim.lr, cfg.optim.lr_step, cfg.optim.lr_gamma) == (1e-4, 50_000, 0.5)
    assert cfg.optim.iterations == 150_000 and cfg.optim.loss == "l1"
    assert cfg.model.preset == "rcan-paper"
    assert cfg.optim.ema == 0 and cfg.optim.grad_clip == 0 and cfg.run.amp == "none"


def test_cpu_profile_is_small() -> None:
    cfg = profile_defaults("cpu")
    assert cfg.model.preset in ("rcan-cpu", "edsr-cpu")
    assert cfg.optim.iterations <= 5000 and cfg.data.patch_size < 96


def test_unknown_profile() -> None:
    with pytest.raises(UserError, match=r"unknown profile 'gpu'.*paper, cpu, tiny"):
        profile_defaults("gpu")


def test_overrides_parse_yaml_and_check_types() -> None:
    cfg = profile_defaults("tiny")
    new = apply_overrides(
        cfg,
        [
            "optim.lr=2e-4",
            "optim.betas=[0.8, 0.9]",
            "log.tensorboard=true",
            "optim.iterations=12",
            "model.init=weights.safetensors",
            "run.amp=bf16",
        ],
    )
    assert new.optim.lr == 2e-4  # PyYAML reads 2e-4 as a string; a float field accepts it
    assert new.optim.betas == (0.8, 0.9)
    assert new.log.tensorboard is True and new.optim.iterations == 12
    assert new.model.init == "weights.safetensors" and new.run.amp == "bf16"
    # the rest is untouched, and the input is not modified (frozen dataclasses)
    assert (
        dataclasses.replace(new, optim=cfg.optim, log=cfg.log, model=cfg.model, run=cfg.run) == cfg
    )
    assert cfg.optim.lr != 2e-4


def test_override_of_a_dataset_field() -> None:
    cfg = profile_defaults("tiny")
    new = apply_overrides(cfg, ["data.train.seed=5"])
    assert new.data.train.seed == 5
    assert new.data.val == cfg.data.val


def test_unknown_key_names_it_and_lists_valid_keys() -> None:
    cfg = profile_defaults("tiny")
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, ["optim.lrr=1"])
    msg = str(err.value)
    assert "optim.lrr" in msg and "lr, betas, eps" in msg
    with pytest.raises(ConfigError, match=r"unknown key nope .*model, data, optim"):
        apply_overrides(cfg, ["nope=1"])


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("optim.iterations=ten", "optim.iterations: expected int, got 'ten'"),
        ("optim.iterations=1.5", "optim.iterations: expected int, got 1.5"),
        ("optim.lr=fast", "optim.lr: expected float, got 'fast'"),
        ("log.tensorboard=1", "log.tensorboard: expected bool, got 1"),
        ("optim.betas=[0.9]", "optim.betas: expected tuple[float, float], got [0.9]"),
        ("run.amp=fp8", "run.amp: expected one of 'none', 'auto', 'bf16', 'fp16', got 'fp8'"),
        ("model.preset=[1]", "model.preset: expected str or null, got [1]"),
    ],
)
def test_wrong_type_names_key_type_and_value(item: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(profile_defaults("tiny"), [item])
    assert expected in str(err.value)


def test_range_errors_and_malformed_items() -> None:
    cfg = profile_defaults("tiny")
    with pytest.raises(ConfigError, match=r"optim\.lr must be > 0"):
        apply_overrides(cfg, ["optim.lr=0"])
    with pytest.raises(ConfigError, match=r"optim\.ema must be in"):
        apply_overrides(cfg, ["optim.ema=1.5"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(cfg, ["optim.lr"])


def test_yaml_file_with_profile_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("profile: cpu\nname: mine\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config(path)
    base = profile_defaults("cpu")
    assert cfg.optim.lr == 1e-3
    assert cfg.optim.iterations == base.optim.iterations
    assert dataclasses.replace(cfg, optim=base.optim, name=base.name) == base


def test_yaml_file_without_profile_uses_dataclass_defaults(tmp_path: Path) -> None:
    cfg = profile_defaults("tiny")
    data = config_to_dict(cfg)
    minimal = {"model": data["model"], "data": {"train": data["data"]["train"]}}
    import yaml

    path = tmp_path / "min.yaml"
    path.write_text(yaml.safe_dump(minimal))
    got = load_config(path)
    assert got.optim == TrainConfig(model=cfg.model, data=cfg.data).optim
    assert got.data.val is None and got.data.patch_size == 96


def test_yaml_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: tiny\noptim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.learning_rate"):
        load_config(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("optim: {lr: 1.0e-4}\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml.*missing key model"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*invalid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_shipped_training_configs_load() -> None:
    smoke = load_config(REPO / "configs" / "train" / "smoke.yaml")
    assert smoke.model == ModelConfig(preset="rcan-tiny", scale=2)
    assert smoke.log.checkpoint_every == 10 and smoke.optim.iterations >= 40
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        if re.search(r"^(model|profile):", path.read_text(), flags=re.MULTILINE):
            assert isinstance(load_config(path), TrainConfig)  # training configs, not recipes


def test_run_profile_choices_are_the_profile_table() -> None:
    """The CLI lists profile names without importing torch; they must stay the table's keys."""
    from twostage.cli import build_parser
    from twostage.config import PROFILES

    args = build_parser().parse_args(["run", "sr-x4", "--profile", "ship", "--out", "x"])
    assert args.profile == "ship"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    run = sub.choices["run"]
    choices = next(a.choices for a in run._actions if a.dest == "profile")
    assert tuple(choices) == tuple(PROFILES)


def test_ship_profile_is_the_cpu_profile_with_larger_longer_networks() -> None:
    from twostage.config import PROFILES
    from twostage.models import PRESETS

    cpu, ship = PROFILES["cpu"], PROFILES["ship"]
    assert ship.rcan == "rcan-small" and PRESETS["rcan-small"].n_feats > PRESETS["rcan-cpu"].n_feats
    assert ship.iterations_for("mapping") == 6 * cpu.iterations_for("mapping")
    assert (ship.train_crop, ship.patch_size, ship.batch_size) == (cpu.train_crop, 32, 8)


@pytest.mark.parametrize(
    "item",
    [
        "optim.eps=.inf",
        "optim.lr=.inf",
        "optim.lr=.nan",
        "optim.lr=nan",
        "optim.lr=1e400",
        "optim.betas=[0.9, .nan]",
        "optim.lr_gamma=.nan",
        "optim.grad_clip=.inf",
        "optim.ema=-.inf",
    ],
)
def test_non_finite_float_is_refused_naming_the_key(item: str) -> None:
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: must be a finite number") as err:
        apply_overrides(profile_defaults("tiny"), [item])
    assert "\n" not in str(err.value)


def test_non_finite_float_in_a_yaml_file_is_refused_naming_the_file_and_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("profile: tiny\noptim:\n  eps: .inf\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: optim\.eps: must be a finite number"):
        load_config(path)


@pytest.mark.parametrize(
    "item,rule",
    [
        ("optim.eps=0", r"optim\.eps must be > 0"),
        ("optim.eps=-1e-8", r"optim\.eps must be > 0"),
        ("optim.betas=[0.9, 1.0]", r"optim\.betas must be in \[0, 1\)"),
        ("optim.betas=[-0.1, 0.9]", r"optim\.betas must be in \[0, 1\)"),
        ("optim.lr_gamma=0", r"optim\.lr_gamma must be in \(0, 1\]"),
        ("optim.grad_clip=-1", r"optim\.grad_clip must be >= 0"),
        ("optim.ema=-0.5", r"optim\.ema must be in \[0, 1\)"),
    ],
)
def test_optimizer_floats_out_of_range_are_refused(item: str, rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        apply_overrides(profile_defaults("tiny"), [item])


def test_finite_numeric_strings_are_still_floats() -> None:
    cfg = apply_overrides(profile_defaults("tiny"), ["optim.lr='2e-4'", "optim.eps=1e-10"])
    assert (cfg.optim.lr, cfg.optim.eps) == (2e-4, 1e-10)


@pytest.mark.parametrize("profile", ["paper", "cpu", "tiny", "ship"])
def test_cuda_graph_is_off_by_default_until_a_gpu_has_run_it(profile: str) -> None:
    assert RunConfig().cuda_graph is False
    assert profile_defaults(profile).run.cuda_graph is False
    assert apply_overrides(profile_defaults(profile), ["run.cuda_graph=true"]).run.cuda_graph


@pytest.mark.parametrize("name", ["/abs/dir", "../up", "a/b", "a\\b", "..", ".", "x\0y"])
def test_name_must_be_one_folder_name(tmp_path: Path, name: str) -> None:
    """`name` picks the default run folder runs/<name>: a path there would leave runs/."""
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"profile": "tiny", "name": name}))
    with pytest.raises(ConfigError, match=r"run\.yaml: name must be one folder name") as err:
        load_config(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"--set name=.*name must be one folder name"):
        apply_overrides(profile_defaults("tiny"), [f"name={name!r}"])
    assert load_config_text(tmp_path, "name: my-run_2.0").name == "my-run_2.0"


def load_config_text(tmp_path: Path, text: str) -> TrainConfig:
    path = tmp_path / "ok.yaml"
    path.write_text(f"profile: tiny\n{text}\n")
    return load_config(path)


def test_a_thread_count_torch_cannot_hold_is_a_range_error() -> None:
    cfg = profile_defaults("tiny")
    with pytest.raises(ConfigError, match=r"run\.threads must be in \[0, 1024\]"):
        apply_overrides(cfg, ["run.threads=99999999999"])
    assert apply_overrides(cfg, ["run.threads=1024"]).run.threads == 1024


@pytest.mark.parametrize(
    "item, key",
    [
        ("data.batch_size=100000000", "data.batch_size"),
        ("data.train.instances=1000000", "data.train.instances"),
        ("data.val={kind: samples, preset: bicubic, instances: 1000000}", "data.val.instances"),
    ],
)
def test_sizes_past_the_limits_are_refused_naming_the_key(item: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} must be from 1 to \d+"):
        apply_overrides(profile_defaults("tiny"), [item])


@pytest.mark.parametrize("value", ["99999999999999999999", str(MAX_ITERATIONS + 1)])
def test_iterations_past_the_limit_are_refused_naming_the_key(value: str) -> None:
    """A typo such as 99999999999999999999 iterations would train for ever."""
    cfg = profile_defaults("tiny")
    with pytest.raises(ConfigError, match=rf"optim\.iterations must be from 1 to {MAX_ITERATIONS}"):
        apply_overrides(cfg, [f"optim.iterations={value}"])
    assert apply_overrides(cfg, [f"optim.iterations={MAX_ITERATIONS}"]).optim.iterations == (
        MAX_ITERATIONS
    )


def test_iterations_past_the_limit_in_a_yaml_file_name_the_file_and_key(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str]]
) -> None:
    path = tmp_path / "long.yaml"
    path.write_text("profile: tiny\noptim:\n  iterations: 99999999999999999999\n")
    with pytest.raises(ConfigError, match=r"long\.yaml: optim\.iterations must be from 1 to"):
        load_config(path)
    code, err = run_cli("train", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and "optim.iterations must be from 1 to" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["-1", str(MAX_NUM_WORKERS + 1), "99999999999"])
def test_a_bad_loader_worker_count_is_refused_naming_the_field(value: str) -> None:
    cfg = profile_defaults("tiny")
    with pytest.raises(
        ConfigError, match=rf"data\.num_workers must be from 0 to {MAX_NUM_WORKERS}"
    ):
        apply_overrides(cfg, [f"data.num_workers={value}"])
    with pytest.raises(ConfigError, match=r"data\.num_workers"):
        apply_overrides(cfg, ["data.num_workers=two"])
    assert apply_overrides(cfg, ["data.num_workers=2"]).data.num_workers == 2
    assert cfg.data.num_workers == 0  # the default: batches drawn in the training process


def test_a_yaml_batch_size_past_the_limit_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("profile: tiny\ndata:\n  batch_size: 100000000\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"big\.yaml: data\.batch_size must be from 1 to"):
        load_config(path)


# ------------ YAML bombs, big documents and out-of-range values are refused quickly and briefly


def _alias_bomb(levels: int = 10) -> str:
    lines = ["name: [&a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"  , &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "]\n"


def test_yaml_alias_bomb_is_refused_at_once(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str]]
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("profile: tiny\n" + _alias_bomb())
    assert len(bomb.read_bytes()) < 1500
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml line \d+: invalid YAML: aliases"):
        load_config(bomb)
    code, err = run_cli("train", str(bomb))
    assert code == 2 and "aliases (*a0) are not allowed" in err and err.count("\n") == 1
    preset = tmp_path / "p.yaml"
    preset.write_text(_alias_bomb())
    with pytest.raises(UserError, match="aliases"):
        load_preset(preset)
    assert time.perf_counter() - start < 10


def test_big_yaml_documents_and_override_values_are_not_echoed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: [" + ", ".join(["x"] * 600_000) + "]\n")
    with pytest.raises(UserError, match="larger than 1024 KB"):
        read_yaml(big, "config")
    long_value = "[" + ", ".join(["12345"] * 1000) + "]"
    with pytest.raises(ConfigError) as err:
        apply_overrides(profile_defaults("tiny"), [f"run.seed={long_value}"])
    assert len(str(err.value)) < 300 and "…" in str(err.value)


@pytest.mark.parametrize("seed", ["-1", "99999999999"])
def test_seed_out_of_numpys_range_is_refused(seed: str) -> None:
    with pytest.raises(ConfigError, match=r"run\.seed must be in \[0, 4294967295\]"):
        apply_overrides(profile_defaults("tiny"), [f"run.seed={seed}"])
