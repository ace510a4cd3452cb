"""Getting data safely: downloads from a local HTTP server, hostile archives and pickles,
CIFAR and Fashion-MNIST loading, and an end-to-end CLI run on a tiny CIFAR folder.

No test touches the network: files are served from 127.0.0.1.
"""
import functools
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading

import numpy as np
import pytest

from ffnumpy import data as data_mod
from ffnumpy.data import DataError, channel_stats, load_dataset, standardize
from ffnumpy.download import UnsafeFileError, load_pickle, read_tar_members
from ffnumpy.train import main as train_main
from tests.conftest import make_tiny_cifar, make_tiny_mnist

# --- a local server ---

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /missing/... answers 404, /short/... promises more bytes than it sends."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/missing/"):
            self.send_error(404)
            return
        if self.path.startswith("/short/"):
            body = (self.server.root / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # then the connection closes
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, folder it serves); downloads switched back on for this test, into
    tmp_path/data/ as ffnumpy's own data_cache/."""
    monkeypatch.delenv("FFNUMPY_OFFLINE", raising=False)
    monkeypatch.setattr(data_mod, "DATA_CACHE", tmp_path / "data")
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.root = root
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _serve_fashion(monkeypatch, served, sources, md5s=None):
    """Put a tiny Fashion-MNIST in ``served``; point the loader at ``sources``."""
    make_tiny_mnist(served)
    files = sorted(p.name for p in served.glob("*.gz"))
    monkeypatch.setitem(data_mod.SOURCES, "fashion-mnist", tuple(sources))
    monkeypatch.setitem(data_mod.MD5, "fashion-mnist",
                        md5s or {f: _md5(served / f) for f in files})
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION", served / "not-there")
    return files


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- downloads ---

def test_good_download_is_verified_and_placed(server, monkeypatch, tmp_path):
    url, served = server
    files = _serve_fashion(monkeypatch, served, [url])
    data = load_dataset("fashion-mnist", tmp_path / "data")
    assert data.x_train.shape == (240, 784) and data.n_classes == 10
    folder = tmp_path / "data" / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == files  # no partial files left
    assert all(_md5(folder / f) == _md5(served / f) for f in files)


def test_checksum_mismatch_deletes_the_file_and_says_so(server, monkeypatch, tmp_path):
    url, served = server
    files = _serve_fashion(monkeypatch, served, [url])
    wrong = {f: "0" * 32 for f in files}
    monkeypatch.setitem(data_mod.MD5, "fashion-mnist", wrong)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("fashion-mnist", tmp_path / "data")
    assert not (tmp_path / "data").exists()  # no file, and no empty folder made for it


def test_truncated_transfer_leaves_nothing(server, monkeypatch, tmp_path):
    url, served = server
    _serve_fashion(monkeypatch, served, [url + "short/"])
    with pytest.raises(DataError, match="cut short|truncated|IncompleteRead"):
        load_dataset("fashion-mnist", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_failing_first_source_falls_back_to_the_second(server, monkeypatch, tmp_path):
    url, served = server
    _serve_fashion(monkeypatch, served, [url + "missing/", url])
    data = load_dataset("fashion-mnist", tmp_path / "data")
    assert data.x_test.shape == (60, 784)


def test_no_network_names_the_file_and_where_to_put_it(server, monkeypatch, tmp_path):
    _, served = server
    _serve_fashion(monkeypatch, served, [f"http://127.0.0.1:{_closed_port()}/"])
    with pytest.raises(DataError) as exc:
        load_dataset("fashion-mnist", tmp_path / "data")
    message = str(exc.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "data" / "fashion-mnist") in message and "--data-dir" in message


def test_offline_switch_refuses_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION", tmp_path / "not-there")
    with pytest.raises(DataError, match="downloads are off"):
        load_dataset("fashion-mnist", tmp_path / "data")


def test_cifar_download_loads_without_extracting(server, monkeypatch, tmp_path):
    url, served = server
    make_tiny_cifar(served.parent / "build", "cifar10")
    tarball = served.parent / "build" / "cifar10" / "cifar-10-python.tar.gz"
    os.replace(tarball, served / tarball.name)
    monkeypatch.setitem(data_mod.SOURCES, "cifar10", (url,))
    monkeypatch.setitem(data_mod.MD5, "cifar10", {tarball.name: _md5(served / tarball.name)})
    data = load_dataset("cifar10", tmp_path / "data")
    assert data.x_train.shape == (200, 3072) and data.image_shape == (3, 32, 32)
    assert [p.name for p in (tmp_path / "data" / "cifar10").iterdir()] == [tarball.name]


# --- local copies ---

def test_fashion_found_where_debian_installs_it(tmp_path, monkeypatch):
    make_tiny_mnist(tmp_path / "usr-share")
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION", tmp_path / "usr-share")
    data = load_dataset("fashion-mnist", tmp_path / "empty-root")
    assert data.x_train.shape == (240, 784) and data.name == "fashion-mnist"


@pytest.mark.parametrize("name, n_classes", [("cifar10", 10), ("cifar100", 100)])
@pytest.mark.parametrize("tar", [True, False])
def test_cifar_local_copy(tmp_path, name, n_classes, tar):
    root = make_tiny_cifar(tmp_path / "data", name, tar=tar)
    data = load_dataset(name, root)
    assert data.n_classes == n_classes
    assert data.x_train.shape == (200, 3072) and data.x_test.shape == (50, 3072)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() <= data.x_train.max() <= 1
    assert data.y_train.max() < n_classes


def test_cifar_images_are_channel_planes(tmp_path):
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    raw = pickle.loads((root / "cifar10" / "cifar-10-batches-py" / "data_batch_1").read_bytes(),
                       encoding="bytes")
    data = load_dataset("cifar10", root)
    image = data.x_train[0].reshape(3, 32, 32)
    np.testing.assert_allclose(image * 255, raw[b"data"][0].reshape(3, 32, 32), atol=1e-4)


def test_standardize_gives_zero_mean_unit_std(tmp_path):
    data = load_dataset("cifar10", make_tiny_cifar(tmp_path / "data", tar=False))
    std_data, stats = standardize(data)
    mean, std = channel_stats(std_data.x_train, data.image_shape)
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    np.testing.assert_allclose(std, 1, atol=1e-4)
    again, _ = standardize(data, stats)  # the saved statistics reproduce the transform
    np.testing.assert_array_equal(again.x_test, std_data.x_test)


# --- hostile and malformed files ---

def _tar_with(path, name, payload=b"x", kind=tarfile.REGTYPE, linkname=""):
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        info.size = len(payload) if kind == tarfile.REGTYPE else 0
        t.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("name, kind, linkname", [
    ("../escaped", tarfile.REGTYPE, ""),
    ("cifar-10-batches-py/../../escaped", tarfile.REGTYPE, ""),
    ("/tmp/escaped-absolute", tarfile.REGTYPE, ""),
    ("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"),
    ("cifar-10-batches-py/hard", tarfile.LNKTYPE, "../../escaped"),
])
def test_tar_member_escaping_the_folder_is_refused(tmp_path, name, kind, linkname):
    archive = tmp_path / "evil.tar.gz"
    _tar_with(archive, name, kind=kind, linkname=linkname)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnsafeFileError, match="outside|link"):
        read_tar_members(archive, "cifar-10-batches-py", ["data_batch_1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


def test_hostile_archive_through_the_loader_is_a_data_error(tmp_path):
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    _tar_with(folder / "cifar-10-python.tar.gz", "../../escaped")
    with pytest.raises(DataError, match="outside"):
        load_dataset("cifar10", tmp_path / "data")
    assert not (tmp_path / "escaped").exists()


def test_refused_archive_from_a_read_only_folder_leaves_no_folder(tmp_path, monkeypatch):
    """A read-only copy is extracted into data_cache/<name>/; refused, it leaves nothing."""
    folder = tmp_path / "shared" / "cifar10"
    folder.mkdir(parents=True)
    _tar_with(folder / "cifar-10-python.tar.gz", "../../escaped")
    folder.chmod(0o555)
    (tmp_path / "shared").chmod(0o555)
    monkeypatch.setattr(data_mod, "DATA_CACHE", tmp_path / "cache")
    try:
        with pytest.raises(DataError, match="outside"):
            load_dataset("cifar10", tmp_path / "shared")
    finally:
        (tmp_path / "shared").chmod(0o755)
        folder.chmod(0o755)
    assert not (tmp_path / "cache").exists()


def test_fashion_not_found_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION", tmp_path / "not-there")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_truncated_archive_is_a_clear_error(tmp_path):
    root = make_tiny_cifar(tmp_path / "data")
    tarball = root / "cifar10" / "cifar-10-python.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[:2000])
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_dataset("cifar10", root)
    assert not (root / "cifar10" / "cifar-10-batches-py").exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _RunsCode(marker)}, protocol=2))
    with pytest.raises(UnsafeFileError, match="refusing"):
        load_pickle(path)
    assert not marker.exists()


def test_pickle_that_runs_code_through_the_loader(tmp_path):
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    marker = tmp_path / "pwned"
    batch = root / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(DataError, match="could run code"):
        load_dataset("cifar10", root)
    assert not marker.exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.update({b"data": b[b"data"][:, :100]}), "shape"),
    (lambda b: b.update({b"data": b[b"data"].astype(np.float64)}), "uint8"),
    (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "integers"),
    (lambda b: b.update({b"labels": [12] * len(b[b"labels"])}), "expected 0..9"),
    (lambda b: b.pop(b"data"), "expected a dict"),
])
def test_malformed_cifar_batch(tmp_path, mutate, message):
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    path = root / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    mutate(batch)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", root)


def test_truncated_and_forged_pickles(tmp_path):
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    path = root / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_dataset("cifar10", root)
    # BINBYTES8 opcode claiming 2**60 bytes: an error, not an allocation.
    path.write_bytes(b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b"abc")
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_dataset("cifar10", root)


def test_missing_batch_in_extracted_folder(tmp_path):
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    (root / "cifar10" / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5.*not found"):
        load_dataset("cifar10", root)


# --- end to end ---

@pytest.mark.parametrize("name, extra", [
    ("cifar10", ["--algo", "symba"]),
    ("cifar100", ["--algo", "ff", "--labels", "overlay"]),
    ("cifar10", ["--algo", "symba", "--icp-per-channel", "--standardize"]),
])
def test_cli_trains_on_a_tiny_cifar_folder(tmp_path, name, extra):
    root = make_tiny_cifar(tmp_path / "data", name)
    metrics = train_main([name, "--data-dir", str(root), "--epochs", "2", "--width", "32",
                          "--batch-size", "64", "--out", str(tmp_path / "run")] + extra)
    assert len(metrics["epochs"]) == 2 and metrics["config"]["augment"] is None
    assert 0.0 <= metrics["final_test_error"] <= 1.0
    assert np.isfinite(metrics["epochs"][-1]["loss"]).all()


def test_cli_missing_dataset_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["cifar100", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cifar-100-python.tar.gz" in err
    assert not (tmp_path / "run").exists()
