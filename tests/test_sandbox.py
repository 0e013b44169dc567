"""The sandbox runs code in a limited child process and says why it failed."""

import os

from traitmap.sandbox import run_python


def test_passing_program():
    assert run_python("assert sum([1, 2]) == 3").passed


def test_failure_kinds():
    assert run_python("assert 1 == 2").error == "assertion"
    assert run_python("def f(:\n    pass").error == "syntax"
    assert run_python("raise ValueError('bad')").error == "exception"
    assert run_python("import sys\nsys.exit(3)").error == "exit"


def test_infinite_loop_times_out():
    result = run_python("while True:\n    pass", timeout=1)
    assert not result.passed and result.error == "timeout"


def test_memory_is_limited():
    assert run_python("x = bytearray(4 * 1024 ** 3)", memory_mb=256).error == "memory"


def test_child_sees_no_environment_and_a_fresh_directory():
    os.environ["TRAITMAP_SANDBOX_SECRET"] = "x"
    try:
        program = ("import os\n"
                   "assert 'TRAITMAP_SANDBOX_SECRET' not in os.environ\n"
                   "assert sorted(os.listdir('.')) == ['program.py', 'stderr', 'stdout']\n")
        assert run_python(program).passed
    finally:
        del os.environ["TRAITMAP_SANDBOX_SECRET"]
