"""The sandbox runs model-written code contained: programs as a hostile model might write
them change and read nothing outside their temporary folder, reach no network, start no
process, and end in bounded time; code tasks still score right; and a machine without
bubblewrap runs no code unless the study opts in."""

import functools
import json
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import needs_bwrap, traitmap

from traitmap import sandbox, tasks
from traitmap.backends import BACKENDS, Backend, Response
from traitmap.errors import TraitmapError
from traitmap.results import Study
from traitmap.sandbox import run_python

SECRET = "the user's own words\n"


@pytest.fixture
def user_files(tmp_path):
    """A user's folder with a file in it, readable by anyone, as the user keeps them."""
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text(SECRET)
    for path in (folder, folder / "notes.txt", tmp_path):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return folder


@pytest.mark.parametrize("sandboxed", [pytest.param(True, marks=needs_bwrap), False])
def test_passing_program_and_failure_kinds(sandboxed):
    assert run_python("assert sum([1, 2]) == 3", sandboxed=sandboxed).passed
    assert run_python("assert 1 == 2", sandboxed=sandboxed).error == "assertion"
    assert run_python("def f(:\n    pass", sandboxed=sandboxed).error == "syntax"
    assert run_python("raise ValueError('bad')", sandboxed=sandboxed).error == "exception"
    assert run_python("import sys\nsys.exit(3)", sandboxed=sandboxed).error == "exit"



@needs_bwrap
def test_a_python_under_the_temporary_folder_runs_sandboxed():
    """A fresh clone in /tmp has its virtual environment there: the sandbox's private /tmp
    must not hide the Python that runs the program."""
    import subprocess
    import tempfile

    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="traitmap-venv-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
        source = Path(sandbox.__file__).resolve().parents[1]
        check = ("import sys; sys.path.insert(0, sys.argv[1]); from traitmap.sandbox import run_python, "
                 "sandbox_problem; assert sandbox_problem() is None, sandbox_problem(); "
                 "assert run_python('assert sum([1, 2]) == 3').passed")
        done = subprocess.run([str(folder / "venv" / "bin" / "python"), "-c", check, str(source)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("sandboxed", [pytest.param(True, marks=needs_bwrap), False])
def test_child_sees_no_environment_and_an_empty_folder(sandboxed, monkeypatch):
    monkeypatch.setenv("TRAITMAP_SANDBOX_SECRET", "x")
    program = ("import os\n"
               "assert 'TRAITMAP_SANDBOX_SECRET' not in os.environ\n"
               "assert os.listdir('.') == []\n"
               "open('scratch.txt', 'w').write('the working folder is writable')\n")
    assert run_python(program, sandboxed=sandboxed).passed


@needs_bwrap
def test_the_sandbox_sees_system_folders_read_only_and_nothing_of_the_user():
    shown = {"tmp", "sandbox", "dev", "proc"} | {Path(f).parts[1] for f in sandbox._SYSTEM_FOLDERS + tuple(sandbox._python_folders())}
    program = ("import os, socket\n"
               "assert os.getcwd() == '/sandbox' and os.listdir('.') == []\n"
               "open('/tmp/scratch.txt', 'w').write('/tmp is writable too')\n"
               f"assert set(os.listdir('/')) <= {shown!r}, os.listdir('/')\n"
               "assert [name for _, name in socket.if_nameindex()] == ['lo']\n"
               "assert os.getpid() < 10\n"
               "try:\n"
               "    open('/usr/traitmap-probe', 'w')\n"
               "except OSError as error:\n"
               "    assert error.errno in (13, 30), error\n"
               "else:\n"
               "    raise SystemExit('wrote into /usr')\n")
    result = run_python(program)
    assert result.passed, result


@needs_bwrap
def test_writing_outside_the_temporary_folder_changes_nothing(user_files):
    target = user_files / "written.txt"
    result = run_python(f"open({str(target)!r}, 'w').write('model was here')")
    assert not result.passed and not target.exists()
    assert sorted(p.name for p in user_files.iterdir()) == ["notes.txt"]


@needs_bwrap
def test_a_users_file_cannot_be_read(user_files):
    result = run_python(f"assert open({str(user_files / 'notes.txt')!r}).read() == {SECRET!r}")
    assert not result.passed and result.error == "exception" and "notes.txt" in result.detail, result


@needs_bwrap
def test_a_users_file_cannot_be_deleted(user_files):
    notes = user_files / "notes.txt"
    result = run_python(f"import os, shutil\nos.remove({str(notes)!r})\nshutil.rmtree({str(user_files)!r})")
    assert not result.passed and notes.read_text() == SECRET


@needs_bwrap
def test_the_home_folder_cannot_be_written():
    target = Path.home() / f"traitmap-sandbox-probe-{uuid.uuid4().hex}"
    try:
        result = run_python(f"open({str(target)!r}, 'w').write('model was here')\n"
                            "import os\nopen(os.path.expanduser('~/.bashrc'), 'a').write('echo owned')\n")
        assert not result.passed and not target.exists()
    finally:
        target.unlink(missing_ok=True)


@needs_bwrap
def test_a_local_port_cannot_be_reached():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        result = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')")
        assert not result.passed and result.error == "exception", result
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


@needs_bwrap
def test_a_fork_bomb_starts_no_process():
    """At most 20 children, each sleeping, if the process limit failed: harmless either way."""
    program = ("import os, time\n"
               "for _ in range(20):\n"
               "    if os.fork() == 0:\n"
               "        time.sleep(30)\n"
               "        os._exit(0)\n")
    start = time.monotonic()
    result = run_python(program, timeout=3)
    assert result.error == "exception" and "BlockingIOError" in result.detail, result
    assert time.monotonic() - start < 3


@needs_bwrap
def test_a_thread_bomb_starts_no_thread():
    result = run_python("import threading\nthreading.Thread(target=lambda: None).start()", timeout=3)
    assert not result.passed and "can't start new thread" in result.detail, result


@needs_bwrap
def test_a_memory_bomb_stops_at_the_limit():
    start = time.monotonic()
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))", memory_mb=128, timeout=5)
    assert result.error == "memory", result
    assert time.monotonic() - start < 5


@needs_bwrap
def test_endless_output_stops_at_the_file_size_limit():
    start = time.monotonic()
    result = run_python("while True:\n    print('x' * 1000)", timeout=10)
    assert not result.passed and "File too large" in result.detail, result
    assert time.monotonic() - start < 10


@needs_bwrap
def test_a_sleep_past_the_timeout_is_killed():
    start = time.monotonic()
    result = run_python("import time\ntime.sleep(60)", timeout=1)
    assert result.error == "timeout"
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("sandboxed", [pytest.param(True, marks=needs_bwrap), False])
def test_memory_and_time_are_limited(sandboxed):
    assert run_python("x = bytearray(4 * 1024 ** 3)", memory_mb=256, sandboxed=sandboxed).error == "memory"
    assert run_python("while True:\n    pass", timeout=1, sandboxed=sandboxed).error == "timeout"


@needs_bwrap
def test_a_correct_mbpp_solution_passes_and_a_wrong_one_fails(data_dir):
    task = tasks.get("mbpp")
    for example in task.examples("test", data_dir, limit=3, seed=0):
        assert task.run_tests(example.target, example).passed, example.id
        wrong = task.run_tests(example.target.replace("return", "return None and", 1), example)
        assert not wrong.passed, example.id


def test_without_bubblewrap_no_code_runs_unless_opted_in(monkeypatch, user_files):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    target = user_files / "written.txt"
    with pytest.raises(TraitmapError) as refused:
        run_python(f"open({str(target)!r}, 'w')")
    assert not target.exists()
    message = str(refused.value)
    assert "bubblewrap" in message and 'code_execution = "unsandboxed"' in message and "\n" not in message
    assert run_python("assert 1 + 1 == 2", sandboxed=False).passed


# ---------------------------------------------------------------- through `traitmap run`

SNIPPETS = '''name = "snippets"
description = "Small Python functions with assert tests; the model's answers are planted by the test."
tags = ["code"]
kind = "generate"
metric = "pass@1"

[data]
path = "snippets"
splits = { train = "train.jsonl", test = "test.jsonl" }
id_field = "id"

[prompt]
input = "{text}"
cue = "Answer"
answer = "{code}"

[generate]
parser = "python_code"
gold = "{code}"
tests = "{tests}"
max_new_tokens = 32
timeout = 3
'''

STUDY = '''name = "contained"
base_model = "{model}"
task_dirs = ["{tasks}"]
sources = ["snippets"]
targets = ["snippets"]

[train]
steps = 1
examples = 2
batch_size = 2
max_length = 64

[eval]
examples = "all"
batch_size = 4
backend = "planted"
'''

ADD = "def add(a, b):\n    return a + b"
PLANTED: dict[str, str] = {}  # problem text -> the code the model "wrote" for it


class PlantedBackend(Backend):
    """Answers each code problem with the program planted for its text, for every model."""

    def answer(self, requests, progress=None):
        for index, request in enumerate(requests):
            code = next(code for text, code in PLANTED.items() if text in request.prompt)
            if progress:
                progress(1)
            yield index, Response(text=f"```python\n{code}\n```", tokens=len(code.split()))


def hostile_programs(user_files: Path, home_probe: Path, port: int) -> dict[str, str]:
    notes = user_files / "notes.txt"
    return {
        "write outside": f"open({str(user_files / 'written.txt')!r}, 'w').write('model was here')",
        "read the notes": f"assert open({str(notes)!r}).read() == {SECRET!r}",
        "delete the notes": f"import os\nos.remove({str(notes)!r})",
        "write home": f"open({str(home_probe)!r}, 'w').write('model was here')",
        "call home": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')",
        "fork": "import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)",
        "eat memory": "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))",
        "talk forever": "while True:\n    print('x' * 1000)",
        "sleep": "import time\ntime.sleep(60)",
    }


@pytest.fixture
def planted(monkeypatch):
    """`[eval] backend = "planted"` for this test only."""
    monkeypatch.setitem(BACKENDS.builtin, "planted", f"{__name__}:PlantedBackend")


def write_study(tmp_path: Path, model: Path, problems: dict[str, str]) -> Path:
    """A code task whose test rows are `problems` (text -> planted answer) plus a right and a
    wrong `add`; every row's tests check `add`."""
    data, task_dir = tmp_path / "data" / "snippets", tmp_path / "tasks"
    data.mkdir(parents=True)
    task_dir.mkdir()
    (task_dir / "snippets.toml").write_text(SNIPPETS)
    PLANTED.clear()
    PLANTED.update(problems, **{"add right": ADD, "add wrong": ADD.replace("+", "-")})
    tests = "assert add(2, 3) == 5"
    rows = [{"id": text, "text": f"Problem: {text}.", "code": ADD, "tests": tests} for text in PLANTED]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "train.jsonl").write_text("".join(json.dumps({**r, "id": f"train-{i}"}) + "\n" for i, r in enumerate(rows[:2])))
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(model=model, tasks=task_dir))
    return study


def traitmap_on(data: Path, monkeypatch, capsys, *args) -> tuple[int, str]:
    """`traitmap ARGS` in this process with `data` as the data folder: (exit code, all it printed)."""
    monkeypatch.setenv("TRAITMAP_DATA_DIR", str(data))
    code, out, err = traitmap(monkeypatch, capsys, *args)
    return code, out + err


def scores(out: Path) -> dict[str, float]:
    records = Study.load(out).records()
    return records.groupby("example_id")["correct"].max().to_dict()


@needs_bwrap
@pytest.mark.slow  # a whole study whose nine answers each run into a sandbox limit
@pytest.mark.usefixtures("one_torch_thread", "planted")
def test_hostile_answers_are_contained_in_a_real_run(tmp_path, tiny_model_dir, user_files, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "run_python", functools.partial(sandbox.run_python, memory_mb=256))
    home_probe = Path.home() / f"traitmap-sandbox-probe-{uuid.uuid4().hex}"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    try:
        study = write_study(tmp_path, tiny_model_dir, hostile_programs(user_files, home_probe, server.getsockname()[1]))
        start = time.monotonic()
        code, output = traitmap_on(tmp_path / "data", monkeypatch, capsys, "run", study, "--out", tmp_path / "out",
                                   "--no-analyze")
        assert code == 0, output
        assert time.monotonic() - start < 120
        assert sorted(p.name for p in user_files.iterdir()) == ["notes.txt"]
        assert (user_files / "notes.txt").read_text() == SECRET
        assert not home_probe.exists()
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
        home_probe.unlink(missing_ok=True)
    found = scores(tmp_path / "out")
    assert found.pop("add right") == 1.0 and found.pop("add wrong") == 0.0
    assert set(found.values()) == {0.0}, found
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["config"]["eval"]["code_execution"] == "sandboxed"


@pytest.mark.usefixtures("one_torch_thread", "planted")
def test_running_unsandboxed_is_an_opt_in_recorded_in_the_config(tmp_path, tiny_model_dir, monkeypatch, capsys):
    study = write_study(tmp_path, tiny_model_dir, {})
    out = tmp_path / "out"
    with monkeypatch.context() as without_bwrap:
        without_bwrap.setattr(shutil, "which", lambda name, *args, **kwargs: None)
        code, output = traitmap_on(tmp_path / "data", monkeypatch, capsys, "run", study, "--out", out, "--no-analyze")
        assert code == 2 and not out.exists(), output
        assert "bubblewrap" in output and "--unsandboxed-code" in output and len(output.strip().splitlines()) == 1
        code, output = traitmap_on(tmp_path / "data", monkeypatch, capsys, "run", study, "--out", out, "--no-analyze",
                                   "--unsandboxed-code")
        assert code == 0, output
    assert scores(out) == {"add right": 1.0, "add wrong": 0.0}
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["eval"]["code_execution"] == "unsandboxed"
    if sandbox.sandbox_problem() is None:  # a later sandboxed run of the same study resumes it
        code, output = traitmap_on(tmp_path / "data", monkeypatch, capsys, "run", study, "--out", out, "--no-analyze")
        assert code == 0, output
        assert json.loads((out / "config.json").read_text())["config"]["eval"]["code_execution"] == "sandboxed"
