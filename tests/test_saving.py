"""Saved models and checkpoints: headers checked with the command line's rules, and a
loaded model that predicts from raw images by itself (its standardisation included)."""
import numpy as np
import pytest

from ffnumpy.checkpoint import CheckpointError, load_archive, save_archive
from ffnumpy.data import load_dataset, standardize
from ffnumpy.predict import main as predict_main
from ffnumpy.saving import load_model
from ffnumpy.train import main
from tests.conftest import finished_tiny_run

TINY = ["mnist", "--epochs", "1", "--batch-size", "64", "--width", "32"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return finished_tiny_run(tmp_path_factory.mktemp("saving"), TINY)


def set_config(key, value):
    def change(meta):
        meta["config"][key] = value
    return change


def drop(key):
    def change(meta):
        del meta[key]
    return change


def put(key, value):
    def change(meta):
        meta[key] = value
    return change


TAMPERED = {
    "batch_size 0": (set_config("batch_size", 0), "batch-size must be at least 1"),
    "dtype float16": (set_config("dtype", "float16"), "float16"),
    "layers a string": (set_config("layers", "2"), "layers is '2' (str), expected a int"),
    "lr a bool": (set_config("lr", True), "lr is True"),
    "seed -5": (set_config("seed", -5), "seed must be an integer >= 0"),
    "no config": (drop("config"), "no 'config' entry"),
    "config a list": (put("config", [1, 2]), "not a mapping"),
    "no n_classes": (drop("n_classes"), "n_classes is None"),
    "image_shape a string": (put("image_shape", "28x28"), "image_shape is '28x28'"),
    "bad standardization": (put("standardization", {"mean": [0.1], "std": [0.0]}),
                            "standardization"),
    "no next_step": (drop("next_step"), "next_step is None"),
    "no metrics": (drop("metrics"), "metrics is missing"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_tampered_checkpoint_is_one_line(finished_run, tmp_path, capsys, name):
    change, message = TAMPERED[name]
    run = tmp_path / "run"
    run.mkdir()
    arrays, meta = load_archive(finished_run / "checkpoint.npz")
    meta["next_epoch"] = 1  # unfinished, so that --resume reads everything
    change(meta)
    save_archive(run / "checkpoint.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="checkpoint.npz: ") as exc_info:
        load_model(run)
    assert message in str(exc_info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize("name", ["batch_size 0", "dtype float16", "layers a string",
                                  "no config", "no n_classes"])
def test_tampered_model_file_is_one_line(finished_run, tmp_path, capsys, name):
    change, message = TAMPERED[name]
    arrays, meta = load_archive(finished_run / "model.npz")
    change(meta)
    save_archive(tmp_path / "model.npz", arrays, meta)
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(tmp_path / "model.npz")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("step, message", [(10**6, "past the end of an epoch of 4 steps"),
                                           (2, "'stats_sum' is missing")])
def test_checkpoint_position_outside_the_epoch(finished_run, tmp_path, capsys, step, message):
    """240 images in batches of 64: 4 steps an epoch."""
    run = tmp_path / "run"
    run.mkdir()
    arrays, meta = load_archive(finished_run / "checkpoint.npz")
    save_archive(run / "checkpoint.npz", arrays, {**meta, "next_epoch": 1, "next_step": step})
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_header_that_is_not_an_object(tmp_path):
    payload = {"__meta__": np.array('["a list"]')}
    np.savez(tmp_path / "list.npz", **payload)
    with pytest.raises(CheckpointError, match="not an object"):
        load_archive(tmp_path / "list.npz")


def readme_snippet():
    """The README's "From Python" code block."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("```python\nimport ffnumpy")
    return text[start + len("```python\n"):text.index("```", start + 3)]


@pytest.mark.parametrize("algo", ["symba", "bp"])
def test_readme_snippet_agrees_with_predict_for_a_standardized_run(tmp_path, monkeypatch,
                                                                  capsys, algo):
    """A loaded model predicts from raw images by itself: the README's snippet, which
    never mentions standardisation, prints the error that ffnumpy.predict prints."""
    from tests.conftest import make_tiny_mnist

    data_dir = make_tiny_mnist(tmp_path / "data" / "mnist").parent
    run = tmp_path / "run"
    main([*TINY, "--epochs", "3", "--algo", algo, "--standardize", "--data-dir", str(data_dir),
          "--out", str(run)])
    error = predict_main([str(run), "--data-dir", str(data_dir)])
    capsys.readouterr()
    monkeypatch.setenv("FFNUMPY_DATA_DIR", str(data_dir))
    snippet = readme_snippet().replace("data_cache/runs/<run>", str(run))
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip() == f"test error: {100 * error:.2f}%"
    # predict standardises raw images with the saved statistics, exactly as training did
    model, _, meta = load_model(run)
    data = load_dataset("mnist", str(data_dir))
    assert model.input_stats == meta["standardization"] is not None
    pred = model.predict(data.x_test)
    model.input_stats = None
    np.testing.assert_array_equal(pred, model.predict(standardize(data, meta["standardization"])
                                                      [0].x_test))
