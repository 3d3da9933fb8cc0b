"""How a stage's entry point reports failures (the launching stage repeats a worker's error)."""

import pytest

from bar.specs import InputError
from bar.stages import entry


def fail(exc):
    def main():
        raise exc

    return main


def test_a_workers_unexpected_error_reaches_the_error_file_with_its_traceback(tmp_path, monkeypatch):
    error = tmp_path / "error"
    monkeypatch.setenv("BAR_ERROR_FILE", str(error))
    with pytest.raises(RuntimeError, match="boom"):
        entry(fail(RuntimeError("boom")))
    text = error.read_text()
    assert text.startswith("unexpected error in a worker:") and "RuntimeError: boom" in text and "in main" in text


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    error = tmp_path / "error"
    monkeypatch.setenv("BAR_ERROR_FILE", str(error))
    with pytest.raises(SystemExit) as exit_:
        entry(fail(InputError("specs/x.yaml: bad")))
    assert exit_.value.code == 2 and error.read_text() == "specs/x.yaml: bad"
    assert capsys.readouterr().err == "error: specs/x.yaml: bad\n"


def test_outside_a_worker_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("BAR_ERROR_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError):
        entry(fail(KeyError("k")))
    assert list(tmp_path.iterdir()) == []
