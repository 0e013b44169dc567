"""Backends and executors by name: the built-in ones, and ones an installed package declares
as entry points (`traitmap.backends`, `traitmap.executors`), with their arguments checked."""

import pytest

from traitmap import backends, executors
from traitmap.errors import TraitmapError
from traitmap.executors.local import LocalExecutor

TOY = '''
from traitmap.backends import Backend


class EchoBackend(Backend):
    """Answers every request with its prompt."""

    def __init__(self, model_dir, *, batch_size=16, tag, repeat=1):
        super().__init__(model_dir, batch_size=batch_size)
        self.tag, self.repeat = tag, repeat

    def answer(self, requests, progress=None):
        for index, request in enumerate(requests):
            yield index, None


class AnyArgsBackend(Backend):
    def __init__(self, model_dir, *, batch_size=16, **engine_args):
        super().__init__(model_dir, batch_size=batch_size)

    def answer(self, requests, progress=None):
        return iter(())


class InlineExecutor:
    """Runs nothing; stands for an executor from another package."""

    def __init__(self, *, slots=1):
        self.slots = slots

    def train(self, jobs, progress=None):
        return iter(())

    def evaluate(self, jobs, progress=None):
        return iter(())

    def close(self):
        pass


NOT_A_BACKEND = 42
'''


@pytest.fixture
def toy(install_package):
    install_package("traitmap_toy", TOY, {
        "traitmap.backends": {"echo": "traitmap_toy:EchoBackend", "anyargs": "traitmap_toy:AnyArgsBackend",
                              "number": "traitmap_toy:NOT_A_BACKEND", "broken": "traitmap_toy_missing:Backend",
                              "hf": "traitmap_toy:EchoBackend"},
        "traitmap.executors": {"inline": "traitmap_toy:InlineExecutor"},
    })


def test_builtins_are_registered_without_importing_them():
    assert backends.names() == ["auto", "hf"]
    assert executors.names() == ["local", "ray"]


def test_an_installed_package_adds_a_backend_by_name(toy):
    import traitmap_toy

    assert {"echo", "anyargs"} <= set(backends.names())
    assert backends.get("echo") is traitmap_toy.EchoBackend
    engine = backends.get("echo")("model", batch_size=2, tag="t")
    assert (engine.batch_size, engine.tag, list(engine.answer(["a", "b"]))) == (2, "t", [(0, None), (1, None)])


def test_a_builtin_name_stays_the_builtin_engine(toy):
    from traitmap.backends.hf import HFBackend

    assert backends.get("hf") is HFBackend


def test_an_entry_point_that_is_no_backend_or_does_not_import_is_named(toy):
    with pytest.raises(TraitmapError, match="backend 'number' is 42, not a traitmap Backend class"):
        backends.get("number")
    with pytest.raises(TraitmapError, match="the 'broken' backend needs the traitmap_toy_missing package"):
        backends.get("broken")
    with pytest.raises(TraitmapError, match=r"unknown backend 'vllm' \(choose from .*echo"):
        backends.get("vllm")


def test_backend_args_are_checked_against_the_constructor(toy):
    backends.check_args("echo", {"tag": "t", "repeat": 2})
    backends.check_args("anyargs", {"tensor_parallel_size": 2})
    with pytest.raises(TraitmapError, match=r"takes no argument 'colour' \(it takes: tag, repeat\)") as error:
        backends.check_args("echo", {"tag": "t", "colour": "red"})
    assert error.value.field == "eval.backend_args.colour"
    with pytest.raises(TraitmapError, match="needs the argument 'tag'"):
        backends.check_args("echo", {})
    with pytest.raises(TraitmapError, match="takes no argument 'batch_size'"):  # [eval] batch_size sets it
        backends.check_args("anyargs", {"batch_size": 4})


def test_the_hf_backend_takes_no_backend_args():
    backends.check_args("auto", {})
    with pytest.raises(TraitmapError, match=r"the 'hf' backend takes no argument 'max_loras' \(it takes: none\)"):
        backends.check_args("auto", {"max_loras": 8})


def test_an_installed_package_adds_an_executor_by_name(toy):
    assert "inline" in executors.names()
    executor = executors.get("inline", slots=3)
    assert executor.slots == 3 and isinstance(executor, executors.Executor)
    with pytest.raises(TraitmapError, match=r"unknown executor 'slurm' \(choose from inline, local, ray\)"):
        executors.get("slurm")


def test_the_builtin_executors_satisfy_the_protocol():
    from traitmap.executors.ray import RayExecutor

    assert isinstance(LocalExecutor(), executors.Executor)
    assert issubclass(RayExecutor, executors.Executor)
    assert not isinstance(object(), executors.Executor)
