import pytest

from flatgen.config import ConfigError, build_config, dump_config, load_config


def test_defaults_and_roundtrip(tmp_path):
    cfg = build_config({})
    assert cfg.data.name == "digits" and cfg.model.preset == "unet-digits"
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_overrides_are_typed():
    cfg = build_config({}, ["train.lr=0.01", "train.steps=7", "train.log_every=5",
                            "train.cpu=true"])
    assert cfg.train.lr == 0.01 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.train.log_every == 5 and cfg.train.cpu is True


@pytest.mark.parametrize("preset,name", [
    ("adm", "adm"), ("ema", "ema"), ("swa", "swa"), ("ip", "ip"), ("ip+ema", "ip+ema"),
    ("ip+swa", "ip+swa"), ("sam", "sam"), ("sam+ema", "sam+ema"), ("sam+swa", "sam+swa"),
])
def test_method_presets(preset, name):
    cfg = build_config({}, [f"method.preset={preset}"])
    assert cfg.method.name == name
    # the resolved config reloads to the same method
    assert build_config(cfg.model_dump(mode="json")).method == cfg.method


def test_preset_fields_can_be_overridden():
    cfg = build_config({}, ["method.preset=sam", "method.sam.rho=0.5"])
    assert cfg.method.sam.rho == 0.5


@pytest.mark.parametrize("override,key", [
    ("train.lr=-1", "train.lr"),
    ("data.name=mnist", "data.name"),
    ("train.bogus=1", "train.bogus"),
    ("method.preset=nope", "method"),
    ("model.dropout=2", "model.dropout"),
])
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        build_config({}, [override])
    msg = str(err.value)
    assert key in msg and "\n" not in msg


def test_model_must_fit_data():
    # the message names the presets that fit, read from the registry
    with pytest.raises(ConfigError, match=r"data 'toy2d' has samples of shape \(2,\): "
                                          "choose one of mlp2d$"):
        build_config({"data": {"name": "toy2d"}})
    with pytest.raises(ConfigError, match=r"'mlp2d' denoises vectors.*choose one of unet-digits"):
        build_config({"model": {"preset": "mlp2d"}})


def test_dataset_and_preset_names_come_from_the_registries():
    with pytest.raises(ConfigError,
                       match=r"data.name: unknown dataset 'mnist'; choose from .*toy2d"):
        build_config({"data": {"name": "mnist"}})
    with pytest.raises(ConfigError, match=r"model.preset: unknown model preset 'vit'; .*mlp2d"):
        build_config({"model": {"preset": "vit"}})
    with pytest.raises(ConfigError, match="data.path is required for dataset 'cifar10'"):
        build_config({"data": {"name": "cifar10"}})


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize("text, message", [
    ("", "is empty"), ("# only a comment\n", "is empty"), ("a: [\n", "is not valid YAML"),
    ("- 1\n- 2\n", "must hold a mapping"),
])
def test_unusable_yaml_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert len(str(err.value).splitlines()) == 1
    path.write_text("{}\n")  # an explicit empty mapping is every default
    assert load_config(path) == build_config({})


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match="train.lr: Input should be a finite number"):
        build_config({}, [f"train.lr={value}"])


def test_configs_written_before_keep_checkpoints_still_load(tmp_path):
    """A run's config.yaml from before train.keep_checkpoints equals today's default config,
    so studies reuse those runs."""
    import yaml

    data = build_config({}).model_dump(mode="json")
    del data["train"]["keep_checkpoints"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path) == build_config({}) and build_config({}).train.keep_checkpoints == 3


def test_the_eval_section_is_gone_but_old_runs_load(tmp_path):
    """Nothing read `eval:`; a run's own config.yaml written with one still loads (its eval is
    dropped), a config file or --set that gives one is refused."""
    import yaml

    data = build_config({}).model_dump(mode="json")
    data["eval"] = {"steps": [10, 100], "samplers": ["adm"], "n_samples": None,
                    "batch_size": 512, "seed": 1234}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert load_config(tmp_path / "config.yaml") == build_config({})
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="eval: unknown key in '.*mine.yaml'"):
        load_config(tmp_path / "mine.yaml")
    with pytest.raises(ConfigError, match="eval: unknown key"):
        load_config(tmp_path / "config.yaml", ["eval.steps=[0]"])


@pytest.mark.parametrize("override, message", [
    ("train.steps=true", "train.steps: Input should be a valid integer"),
    ("train.cpu=1", "train.cpu: Input should be a valid boolean"),
    ("train.lr=true", "train.lr: Input should be a valid number"),
    ("data.toy=3", "data.toy: Input should be a valid string"),
    ("train.steps=1e3", "train.steps: Input should be a valid integer"),
    ("train.grad_accum=200", "grad_accum 200 splits train.batch_size 128"),
    ("method.swa.start=1500", "method.swa.start: step 1500 is not before the last step"),
    ("train.seed=4294967296", "train.seed: Input should be less than or equal to 4294967295"),
])
def test_types_and_bounds_are_strict(override, message):
    overrides = ["method.preset=swa", override] if "swa" in override else [override]
    with pytest.raises(ConfigError, match=message):
        build_config({}, overrides)
    # the edges that are allowed
    assert build_config({}, ["train.grad_accum=128"]).train.grad_accum == 128
    assert build_config({}, ["method.preset=swa", "method.swa.start=1499"]).method.swa.start == 1499
