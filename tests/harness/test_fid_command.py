"""`harness fid prefetch`: never touches the network in tests (dry run, or a mocked download)."""

import io
import socket
import urllib.request

import pytest

from plugins._metrics import inception
from plugins.errors import HarnessError
from tests.harness.cli_support import run_cli as _run


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_socket)




def test_prefetch_dry_run_prints_the_url_destination_and_env_var_and_writes_nothing(capsys, tmp_path):
    code, out, _ = _run(capsys, "fid", "prefetch", "--dry-run", "--dest", str(tmp_path))
    dest = tmp_path / inception.WEIGHTS_NAME
    assert code == 0 and inception.WEIGHTS_URL in out and str(dest) in out
    assert f"export {inception.ENV_VAR}={dest}" in out and "weights_path" in out
    assert list(tmp_path.iterdir()) == []


def test_prefetch_downloads_to_dest_and_prints_where_to_point_the_config(capsys, tmp_path, monkeypatch):
    fetched = []

    def fake_download(dest):
        fetched.append(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"weights")
        return dest

    monkeypatch.setattr(inception, "download_weights", fake_download)
    dest = tmp_path / "w" / "inception.pt"
    code, out, _ = _run(capsys, "fid", "prefetch", "--dest", str(dest))
    assert code == 0 and fetched == [dest] and dest.read_bytes() == b"weights"
    assert f"{inception.ENV_VAR}={dest}" in out
    code, out, _ = _run(capsys, "fid", "prefetch", "--dest", str(dest))      # already there: no second fetch
    assert code == 0 and fetched == [dest] and "already exists" in out


def test_a_download_that_is_not_torchscript_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>not weights</html>"))
    dest = tmp_path / inception.WEIGHTS_NAME
    with pytest.raises(HarnessError, match="not give a loadable TorchScript"):
        inception.download_weights(dest)
    assert list(tmp_path.iterdir()) == []
