"""The study file: presets, overrides, adapter names, and errors that name file, line and field."""

import pytest

import traitmap.config
from traitmap.config import DEFAULT_VALIDATION_EXAMPLES, RunConfig, StudyConfig, resolve_data_dir, where_to_run
from traitmap.errors import TraitmapError

HEAD = '''name = "s"
base_model = "some/model"
sources = ["imdb", "gsm8k"]
targets = ["imdb", "goat"]
'''


def load(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return traitmap.config.load(path)


def error(tmp_path, text) -> TraitmapError:
    with pytest.raises(TraitmapError) as caught:
        load(tmp_path, text)
    return caught.value


def test_cpu_preset_is_the_default(tmp_path):
    config = load(tmp_path, HEAD)
    assert config.train.preset == "cpu"
    assert config.train.steps == 16 and config.train.epochs is None
    assert config.train.precision == "auto"  # bf16 only where the machine has bf16 units
    assert config.seeds == [0] and config.seed == 0
    assert [s.name for s in config.sources] == ["imdb", "gsm8k"]


def test_paper_preset_has_the_papers_values(tmp_path):
    t = load(tmp_path, HEAD + '[train]\npreset = "paper"\n').train
    assert (t.r, t.alpha, t.dropout, t.lr, t.scheduler, t.warmup_steps) == (64, 32, 0.0, 5e-5, "cosine", 100)
    assert (t.weight_decay, t.max_grad_norm, t.batch_size, t.grad_accum, t.max_length) == (0.0, 1.0, 16, 4, 2048)
    assert t.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert t.precision == "auto" and t.epochs == 1 and t.steps is None  # auto: the paper's bf16 on every GPU


def test_overrides_replace_preset_values(tmp_path):
    config = load(tmp_path, HEAD + 'seeds = [3, 4]\n[train]\nr = 4\nlr = 0.01\nloss_on = "all"\n'
                  '[eval]\nexamples = 7\nlimits = {goat = 2}\nmax_new_tokens = {goat = 9}\n')
    assert (config.train.r, config.train.lr, config.train.loss_on, config.train.alpha) == (4, 0.01, "all", 16)
    assert config.seeds == [3, 4]
    assert config.eval.limit_for("goat") == 2 and config.eval.limit_for("imdb") == 7
    assert config.eval.max_new_tokens == {"goat": 9}


def test_steps_or_epochs_override_the_presets_choice(tmp_path):
    assert load(tmp_path, HEAD + '[train]\npreset = "paper"\nsteps = 10\n').train.steps == 10
    t = load(tmp_path, HEAD + "[train]\nepochs = 2\n").train
    assert (t.steps, t.epochs) == (None, 2)


def test_adapter_names_of_variants(tmp_path):
    config = load(tmp_path, '''name = "s"
base_model = "m"
targets = ["imdb"]
[[sources]]
task = "flipkart"
[[sources]]
task = "flipkart"
variant = {kind = "mislabel", fraction = 0.5}
[[sources]]
task = "flipkart"
name = "fk_bal"
variant = {kind = "balance"}
''')
    assert [s.name for s in config.sources] == ["flipkart", "flipkart@mislabel", "fk_bal"]
    assert config.source("flipkart@mislabel").variant == {"kind": "mislabel", "fraction": 0.5}
    with pytest.raises(TraitmapError, match="no source named"):
        config.source("nope")


def test_run_table_chooses_the_executor(tmp_path):
    assert load(tmp_path, HEAD).run == RunConfig("local", None)
    config = load(tmp_path, HEAD + '[run]\nexecutor = "ray"\naddress = "10.0.0.5:6379"\n')
    assert config.run == RunConfig("ray", "10.0.0.5:6379")
    assert load(tmp_path, HEAD + '[run]\naddress = "auto"\n').run == RunConfig("ray", "auto")
    assert StudyConfig.from_dict(config.to_dict()) == config
    saved = config.to_dict()
    del saved["run"]  # an output dir written before [run] existed
    assert StudyConfig.from_dict(saved).run == RunConfig()


@pytest.mark.parametrize("run, executor, address, merged", [
    (RunConfig(), None, None, RunConfig()),
    (RunConfig(), None, "auto", RunConfig("ray", "auto")),  # an address means a Ray cluster
    (RunConfig("ray", "10.0.0.5:6379", 5), "ray", None, RunConfig("ray", "10.0.0.5:6379", 5)),
    (RunConfig("ray", "10.0.0.5:6379", 5), "local", None, RunConfig("local", None, 5)),
    (RunConfig("ray", "10.0.0.5:6379"), None, "10.0.0.6:6379", RunConfig("ray", "10.0.0.6:6379")),
    (RunConfig("ray", "10.0.0.5:6379"), "ray", "auto", RunConfig("ray", "auto")),
])
def test_where_to_run_lays_executor_and_address_over_the_run_table(run, executor, address, merged):
    assert where_to_run(run, executor, address) == merged


def test_where_to_run_refuses_an_address_without_ray_and_an_unknown_executor():
    with pytest.raises(TraitmapError, match="an address is for the ray executor, not 'local'") as caught:
        where_to_run(RunConfig(), "local", "10.0.0.5:6379")
    assert caught.value.field == "address"
    with pytest.raises(TraitmapError, match=r"unknown executor 'slurm' \(choose from local, ray\)") as caught:
        where_to_run(RunConfig(), "slurm")
    assert caught.value.field == "executor"


def test_run_options_are_the_ray_executors_arguments():
    assert RunConfig().executor_options == {}
    assert RunConfig("ray", None, 5).executor_options == {"address": None, "connect_timeout": 5}


def test_backend_args_are_a_table_kept_in_the_config(tmp_path):
    assert load(tmp_path, HEAD).eval.backend_args == {}
    config = load(tmp_path, HEAD + '[eval]\nbackend_args = {max_loras = 8, dtype = "bfloat16"}\n')
    assert config.eval.backend_args == {"max_loras": 8, "dtype": "bfloat16"}
    assert StudyConfig.from_dict(config.to_dict()) == config
    saved = config.to_dict()
    del saved["eval"]["backend_args"]  # an output dir written before backend_args existed
    assert StudyConfig.from_dict(saved).eval.backend_args == {}


def test_config_round_trips_through_a_dict(tmp_path):
    config = load(tmp_path, HEAD.replace('"gsm8k"]', '{task = "flipkart", variant = {kind = "balance"}}]'))
    assert config.sources[1].variant == {"kind": "balance"}
    assert StudyConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("text, line, field", [
    (HEAD + 'colour = "red"\n', 5, "colour"),
    (HEAD + '[train]\npreset = "gpu"\n', 6, "train.preset"),
    (HEAD + "[train]\nsteps = 5\nepochs = 1\n", 6, "train.steps"),
    (HEAD + "[train]\nwarmup = 5\n", 6, "train.warmup"),
    (HEAD + '[train]\ndropout = "high"\n', 6, "train.dropout"),
    (HEAD + "[train]\nexamples = 8\n[eval]\nexamples = 0\n", 8, "eval.examples"),
    (HEAD + "[eval]\nmax_new_tokens = 8\n", 6, "eval.max_new_tokens"),
    (HEAD.replace('["imdb", "gsm8k"]', '["imdb", {task = "imdb"}]'), 3, "sources"),
    (HEAD.replace('["imdb", "gsm8k"]', '[{task = "imdb", variant = {kind = "mislable"}}]'), 3, "variant"),
    (HEAD.replace('["imdb", "gsm8k"]', '[{task = "imdb", variant = {kind = "imbalance"}}]'), 3, "variant"),
    (HEAD.replace('["imdb", "gsm8k"]', '[{task = "imdb", variant = "mislabel"}]'), 3, "variant"),
    (HEAD.replace('["imdb", "goat"]', '["imdb", "imdb"]'), 4, "targets"),
    (HEAD + '[run]\nexecutor = "slurm"\n', 6, "run.executor"),
    (HEAD + '[run]\nexecutor = "ray"\nworkers = 2\n', 7, "run.workers"),
    (HEAD + '[run]\nexecutor = "local"\naddress = "10.0.0.5:6379"\n', 7, "run.address"),
    (HEAD + '[run]\nexecutor = "ray"\naddress = 6379\n', 7, "run.address"),
    (HEAD + '[eval]\nbackend_args = 8\n', 6, "eval.backend_args"),
])
def test_errors_name_file_line_and_field(tmp_path, text, line, field):
    e = error(tmp_path, text)
    assert (e.line, e.field) == (line, field)
    assert str(e).startswith(f"{tmp_path / 'study.toml'}, line {line}, field '{field}': ")


def test_toml_syntax_error_names_file_and_line(tmp_path):
    e = error(tmp_path, HEAD + "[train\nr = 1\n")
    assert str(tmp_path / "study.toml") in str(e) and "line 5" in str(e)


def test_missing_file_and_missing_key(tmp_path):
    with pytest.raises(TraitmapError, match="not found"):
        traitmap.config.load(tmp_path / "absent.toml")
    e = error(tmp_path, HEAD.replace('base_model = "some/model"\n', ""))
    assert e.field == "base_model" and "missing" in str(e)


def test_resolve_data_dir_prefers_the_override(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAITMAP_DATA_DIR", raising=False)
    config = load(tmp_path, HEAD)
    with pytest.raises(TraitmapError, match="no data directory"):
        resolve_data_dir(config)
    assert resolve_data_dir(config, str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(TraitmapError, match="does not exist"):
        resolve_data_dir(config, str(tmp_path / "nope"))


def test_steps_auto_holds_out_a_validation_slice_and_keeps_the_learning_rate_up(tmp_path):
    t = load(tmp_path, HEAD + '[train]\nsteps = "auto"\nmax_steps = 90\nmax_length = "auto"\n').train
    assert (t.steps, t.max_steps, t.total_steps(10_000)) == ("auto", 90, 90)
    assert t.validation_examples == DEFAULT_VALIDATION_EXAMPLES and t.scheduler == "constant_with_warmup"
    assert t.max_length == "auto"
    assert load(tmp_path, HEAD + "[train]\nmax_steps = 90\n").train.steps == "auto"  # a limit alone means "auto"
    fixed = load(tmp_path, HEAD + "[train]\nsteps = 8\n").train
    assert (fixed.validation_examples, fixed.scheduler) == (0, "cosine")  # fixed steps hold nothing out
    assert load(tmp_path, HEAD + '[train]\nsteps = "auto"\nmax_steps = 9\nscheduler = "cosine"\n').train.scheduler == "cosine"


@pytest.mark.parametrize("train, field", [
    ('steps = "auto"\n', "train.max_steps"),
    ("steps = 8\nmax_steps = 9\n", "train.max_steps"),
    ('steps = "auto"\nmax_steps = 9\nvalidation_examples = 0\n', "train.validation_examples"),
    ('max_length = "long"\n', "train.max_length"),
    ("patience = 0\n", "train.patience"),
    ("min_delta = -1\n", "train.min_delta"),
])
def test_bad_stopping_settings_are_refused(tmp_path, train, field):
    assert error(tmp_path, HEAD + "[train]\n" + train).field == field


def test_a_config_recorded_before_a_setting_existed_reads_with_its_presets_value(tmp_path):
    config = load(tmp_path, HEAD + '[train]\npreset = "paper"\nsteps = 10\n')
    recorded = config.to_dict()
    for key in ("max_steps", "patience", "min_delta", "eval_every", "validation_examples", "max_length_cap"):
        del recorded["train"][key]
    assert StudyConfig.from_dict(recorded) == config
