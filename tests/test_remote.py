"""`check`, `inspect`, `diff` and `update --from` on checkpoints at URLs, through the real CLI,
against real servers on 127.0.0.1: what a run costs in requests and bytes, what the cache and
the replay rest on, and what a network failure does to a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from servers import RangeServer, S3Server, allocated, sparse_safetensors, sparse_torch_save

from ckptlint.core.constants import CACHE_DIRECTORY
from ckptlint.readers import remote

BIG = '''
from torch import nn


class Big(nn.Module):
    def __init__(self):
        super().__init__()
        print("building Big")
        self.embed = nn.Embedding(524288, 1024)  # 2 GiB of float32
        self.head = nn.Linear(1024, 8)
'''
SMALL = '''
from torch import nn


class Small(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        print("building Small")
        self.head = nn.Linear(4, width)
'''
BIG_ENTRY = 'name = "big"\ntarget = "big:Big"'
MiB = 1 << 20


def _big_state() -> dict:
    return {"embed.weight": torch.empty(524288, 1024), "head.weight": torch.zeros(8, 1024),
            "head.bias": torch.zeros(8)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    sparse_safetensors(root / "big.safetensors", {
        "embed.weight": ("F32", (524288, 1024)), "head.weight": ("F32", (8, 1024)),
        "head.bias": ("F32", (8,))})
    sparse_torch_save(root / "big.pt", _big_state())
    save_file({"head.weight": torch.zeros(8, 4), "head.bias": torch.zeros(8)},
              root / "small.safetensors")
    return root


@pytest.fixture(scope="module")
def server(served: Path):
    with RangeServer(served) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server: RangeServer, monkeypatch: pytest.MonkeyPatch):
    remote.new_run()
    monkeypatch.setenv("CKPTLINT_REMOTE_TIMEOUT", "2")
    server.mode = "honest"
    server.reset()


def _built(run) -> set[str]:
    return {line.split()[-1] for line in run.err.splitlines() if line.startswith("building ")}


def test_the_2_gb_files_are_real_and_cost_no_disk(served: Path) -> None:
    """What the servers serve is what the libraries write: safetensors reads its header,
    torch.load maps the archive; neither file takes more than a few blocks of disk."""
    from safetensors import safe_open

    with safe_open(str(served / "big.safetensors"), "pt") as handle:
        assert handle.get_slice("embed.weight").get_shape() == [524288, 1024]
    state = torch.load(served / "big.pt", mmap=True, weights_only=True)
    assert state["embed.weight"].shape == (524288, 1024)
    for name in ("big.safetensors", "big.pt"):
        assert (served / name).stat().st_size > 2 * 1024 * MiB
        assert allocated(served / name) < MiB


@pytest.mark.parametrize("name", ["big.safetensors", "big.pt"])
def test_check_against_a_2_gb_url_costs_under_1_mb_and_4_requests(project, server: RangeServer,
                                                                  name: str) -> None:
    project.write("big.py", BIG)
    project.configure(BIG_ENTRY)
    run = project.run("check", "big", "--against", server.url(name))
    assert run.code == 0, run.err
    assert run.out.startswith("All clear")
    assert server.total_requests <= 4 and server.bytes_served < MiB, (server.requests,
                                                                      server.bytes_served)
    assert server.requests["HEAD"] == 1


def test_an_unchanged_remote_checkpoint_costs_one_metadata_request(project, server: RangeServer,
                                                                   served: Path) -> None:
    project.write("big.py", BIG)
    project.configure(BIG_ENTRY)
    against = ("check", "big", "--against", server.url("big.safetensors"))
    assert _built(project.run(*against)) == {"Big"}
    server.reset()
    again = project.run(*against)
    assert (again.code, _built(again)) == (0, set())  # answered from the cache
    assert server.requests == {"HEAD": 1}
    os.utime(served / "big.safetensors")  # a new version: the server's ETag moves
    server.reset()
    changed = project.run(*against)
    assert (changed.code, _built(changed)) == (0, {"Big"})
    assert server.requests["GET"] >= 1


# -- checkpoints = [URL] in pyproject.toml: the replay -------------------------------------------

def plain_answer(project, env: dict[str, str] | None = None) -> tuple[int, bool, str]:
    """Plain `ckptlint check` in a fresh interpreter; whether the engine had to load."""
    code = ("import sys\nfrom ckptlint.commands.cli import main\ncode = main(['check'])\n"
            "print(code, 'ckptlint.run.engine' in sys.modules)")
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                         text=True, env={**environ, **(env or {})}, timeout=300)
    *printed, last = out.stdout.splitlines()
    code, engine = last.split()
    return int(code), engine == "True", "\n".join(printed) + out.stderr


@pytest.fixture
def listed(project, server: RangeServer, served: Path):
    """A project whose model must keep loading small.safetensors from the server."""
    save_file({"head.weight": torch.zeros(8, 4), "head.bias": torch.zeros(8)},
              served / "small.safetensors")  # as a test before may have changed it
    project.write("small.py", SMALL)
    project.configure(f'name = "small"\ntarget = "small:Small"\n'
                      f'checkpoints = ["{server.url("small.safetensors")}"]')
    assert project.run("update").code == 0
    assert plain_answer(project)[0] == 0  # records the clean run
    server.reset()
    return project


def test_the_replay_revalidates_the_remote_file_with_one_request(listed, server: RangeServer):
    code, engine, printed = plain_answer(listed)
    assert (code, engine) == (0, False) and printed.startswith("All clear")
    assert server.requests == {"HEAD": 1}  # one metadata request, no data


def test_a_changed_remote_file_stops_the_replay(listed, server: RangeServer, served: Path):
    save_file({"head.weight": torch.zeros(3, 4), "head.bias": torch.zeros(3)},
              served / "small.safetensors")
    code, engine, printed = plain_answer(listed)
    assert (code, engine) == (1, True) and "CKL103" in printed


def test_a_server_that_cannot_be_asked_stops_the_replay(listed, server: RangeServer):
    server.mode = "fail-always"
    code, engine, printed = plain_answer(listed, {"CKPTLINT_REMOTE_TIMEOUT": "1"})
    assert (code, engine) == (2, True)
    assert "CKL206" in printed and "HTTP 503; tried 3 times" in printed


def test_a_network_failure_is_that_checkpoint_s_finding_and_the_others_are_checked(project):
    closed = RangeServer(Path("."))
    url = f"http://127.0.0.1:{closed.port}/gone.safetensors"
    closed.httpd.server_close()
    project.write("small.py", SMALL)
    project.configure(f'name = "a"\ntarget = "small:Small"\ncheckpoints = ["{url}"]',
                      'name = "b"\ntarget = "small:Small"')
    assert project.run("update").code == 0
    run = project.run("check", "--format", "json")
    assert run.code == 2
    report = json.loads(run.out)
    findings = {(f["model"], f["code"]) for f in report["findings"]}
    assert findings == {("a", "CKL206")}
    message = report["findings"][0]["message"]
    assert message.startswith(f"{url}: could not be read over the network (")
    assert {m["name"]: m["verdict"] for m in report["models"]}["b"] == "loads"


def test_verify_asks_the_server_once_and_only_for_remote_inputs(server: RangeServer,
                                                               served: Path,
                                                               tmp_path: Path) -> None:
    from ckptlint.core import inputs
    from ckptlint.core.urls import RemotePath
    from ckptlint.run import replay

    url = server.url("small.safetensors")
    doc = {**inputs.EMPTY, "remote": {url: remote.identity(RemotePath(url))}}
    remote.new_run()
    server.reset()
    assert replay.verified(doc, str(tmp_path)) and server.requests == {"HEAD": 1}
    assert replay.verified(doc, str(tmp_path)) and server.requests == {"HEAD": 1}  # same run
    os.utime(served / "small.safetensors", ns=(10**18, 10**18))  # a new version
    remote.new_run()
    assert not replay.verified(doc, str(tmp_path))
    assert not replay.verified({**inputs.EMPTY, "remote": {url: None}}, str(tmp_path))
    assert not inputs.verify(doc, str(tmp_path))  # nobody to ask: never taken as unchanged
    # a document without remote inputs loads nothing remote (the replay stays small)
    code = ("import sys; from ckptlint.core import inputs; from ckptlint.run import replay; "
            "print(replay.verified(dict(inputs.EMPTY), '.'), "
            "'ckptlint.readers.remote' in sys.modules, 'fsspec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["True", "False", "False"]


def test_an_http_folder_is_one_sentence(server: RangeServer) -> None:
    from ckptlint.core.errors import CheckpointError
    from ckptlint.readers import read_checkpoint

    with pytest.raises(CheckpointError) as info:
        read_checkpoint(server.url("releases/"))
    assert str(info.value).endswith(": is an http(s) folder, which cannot be listed: name the "
                                    "checkpoint file (or its *.index.json) itself")
    assert server.total_requests == 0


# -- the other commands --------------------------------------------------------------------------

def test_inspect_diff_and_update_from_take_urls(project, server: RangeServer,
                                                tmp_path: Path) -> None:
    url = server.url("small.safetensors")
    shown = project.run("inspect", url, "--no-fits")
    assert shown.code == 0 and shown.out.startswith(f"{url}: safetensors, 2 tensors")
    local = tmp_path / "wider.safetensors"
    save_file({"head.weight": torch.zeros(9, 4), "head.bias": torch.zeros(9)}, local)
    diff = project.run("diff", url, str(local))
    assert diff.code == 1 and "CKL103" in diff.out and url in diff.out
    project.write("small.py", SMALL)
    project.configure('name = "small"\ntarget = "small:Small"')
    update = project.run("update", "small", "--from", url)
    assert update.code == 0, update.err
    assert "head.weight" in (project.root / "signatures" / "small.toml").read_text()
    remap = project.run("remap", "small", "--against", url)
    assert remap.code == 0, remap.err


def test_convert_takes_a_url_and_the_file_loads_strictly(project, server: RangeServer,
                                                       served: Path) -> None:
    """A torch.save file of the code before `fc` became `head`, at a URL with credentials."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    torch.manual_seed(0)
    old = {"fc.weight": torch.randn(8, 4), "fc.bias": torch.randn(8)}
    torch.save(old, served / "old-small.pt")
    project.write("small.py", SMALL)
    project.configure('name = "small"\ntarget = "small:Small"')
    url = server.url("old-small.pt").replace("http://", "http://bob:hunter2@") + "?sig=s3cret"
    run = project.run("convert", url, "new.safetensors")
    assert run.code == 0, run.out + run.err
    assert run.out.startswith("wrote new.safetensors: 2 tensors")
    assert f"from {server.url('old-small.pt')}?… (2 keys renamed)" in run.out
    namespace: dict = {}
    exec(compile(SMALL, "small.py", "exec"), namespace)
    model = namespace["Small"]()
    model.load_state_dict(load_file(project.root / "new.safetensors"), strict=True)
    assert torch.equal(model.head.weight, old["fc.weight"])
    assert torch.equal(model.head.bias, old["fc.bias"])
    with safe_open(str(project.root / "new.safetensors"), "pt") as f:
        meta = json.dumps(f.metadata())
    for text in (run.out, run.err, meta):
        assert "hunter2" not in text and "s3cret" not in text and "bob" not in text


def test_secrets_in_urls_are_neither_printed_nor_stored(project, server: RangeServer) -> None:
    project.write("small.py", SMALL)
    project.configure('name = "small"\ntarget = "small:Small"')
    secret = server.url("small.safetensors").replace("http://", "http://bob:hunter2@") \
        + "?X-Amz-Signature=s3cret"
    for argv in (("check", "small", "--against", secret), ("inspect", secret),
                 ("check", "small", "--against", secret.replace("small.", "gone."))):
        run = project.run(*argv)
        assert run.code in (0, 2), run.err
        for text in (run.out, run.err):
            assert "hunter2" not in text and "s3cret" not in text and "bob" not in text
    cache = project.root / CACHE_DIRECTORY
    stored = "".join(p.read_text() for p in cache.rglob("*") if p.is_file()) if cache.exists() \
        else ""
    assert "hunter2" not in stored and "s3cret" not in stored


def test_credentials_in_pyproject_are_refused(project) -> None:
    project.write("small.py", SMALL)
    project.configure('name = "small"\ntarget = "small:Small"\n'
                      'checkpoints = ["https://me:pw@example.com/m.safetensors"]')
    run = project.run("check")
    assert run.code == 2 and "pw" not in run.err
    assert ("lists https://example.com/m.safetensors with credentials in it; put them where "
            "its filesystem looks") in run.err


@pytest.mark.parametrize("blocked, url, sentence", [
    ("fsspec", "http://127.0.0.1:1/m.safetensors",
     "http://127.0.0.1:1/m.safetensors: is a URL, and reading URLs needs fsspec, which is not "
     "installed: pip install fsspec aiohttp (ckptlint's `remote` extra)"),
    ("s3fs", "s3://bucket/m.safetensors",
     "s3://bucket/m.safetensors: is a s3:// URL, and reading it needs s3fs, which is not "
     "installed: pip install s3fs"),
    ("aiohttp", "https://example.com/m.safetensors",
     "https://example.com/m.safetensors: is a https:// URL, and reading it needs aiohttp, which "
     "is not installed: pip install aiohttp"),
])
def test_a_missing_package_is_one_sentence_saying_what_to_install(tmp_path: Path, blocked: str,
                                                                 url: str, sentence: str) -> None:
    code = (f"import sys\nsys.modules[{blocked!r}] = None  # as if it were not installed\n"
            f"from ckptlint.commands.cli import main\nsys.exit(main(['inspect', {url!r}]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (2, "", f"ckptlint: error: {sentence}\n")


# -- an 8-shard checkpoint on S3 ------------------------------------------------------------------

SHARDED = '''
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(8, 8)


class Sharded(nn.Module):
    def __init__(self):
        super().__init__()
        print("building Sharded")
        self.layers = nn.ModuleList(Block() for _ in range(8))
'''


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("sharded")
    weight_map = {}
    for i in range(8):
        name = f"model-{i + 1:05d}-of-00008.safetensors"
        width = 8 if i != 5 else 9  # one layer of the release differs from the code
        shard = {f"layers.{i}.attn.weight": torch.zeros(width, 8),
                 f"layers.{i}.attn.bias": torch.zeros(width)}
        save_file(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with S3Server(delay=0.05) as server:
        env = server.environment(tmp_path_factory.mktemp("aws"))
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            import boto3

            client = boto3.client("s3")
            client.create_bucket(Bucket="release")
            for path in folder.iterdir():
                client.upload_file(str(path), "release", f"llm/{path.name}")
        yield server, folder, env


def test_check_against_an_8_shard_index_on_s3_equals_the_local_folder(project, s3,
                                                                      monkeypatch) -> None:
    server, folder, env = s3
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    project.write("sharded.py", SHARDED)
    project.configure('name = "sharded"\ntarget = "sharded:Sharded"')
    index = "s3://release/llm/model.safetensors.index.json"
    server.reset()
    over_s3 = project.run("check", "sharded", "--against", index, "--no-cache")
    assert server.most_in_flight >= 4  # the shards were read concurrently
    assert server.requests == {"HEAD": 9, "GET": 9}  # index and shards: metadata + one range
    local = folder / "model.safetensors.index.json"
    on_disk = project.run("check", "sharded", "--against", str(local), "--no-cache")
    assert over_s3.code == on_disk.code == 1
    assert over_s3.out == on_disk.out.replace(str(local), index)
    assert "`layers.5.attn.weight` f32[9, 8] → f32[8, 8]" in over_s3.out


DCP_MODEL = '''
import torch
from torch import nn


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        print("building Flat")
        self.w = nn.Parameter(torch.zeros(3, 2))
'''


def test_a_cached_remote_folder_is_revalidated_without_reading_it(project, s3, tmp_path,
                                                                  monkeypatch) -> None:
    """A DCP folder on S3: the key is its listing, the entry holds its `.metadata`'s version;
    a warm run asks for both and reads neither."""
    import boto3
    import torch.distributed.checkpoint as dcp

    server, _, env = s3
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dcp.save({"w": torch.zeros(3, 2)}, checkpoint_id=str(tmp_path / "dcp"))
    client = boto3.client("s3")
    for path in (tmp_path / "dcp").iterdir():
        client.upload_file(str(path), "release", f"flat/{path.name}")
    project.write("flat.py", DCP_MODEL)
    project.configure('name = "flat"\ntarget = "flat:Flat"\ncheckpoints = ["s3://release/flat"]')
    assert project.run("update").code == 0
    first = project.run("check", "--color", "never")
    assert (first.code, _built(first)) == (0, {"Flat"}), first.out + first.err
    entry = json.loads((project.root / CACHE_DIRECTORY / "v2" / "flat.json").read_text())
    assert list(entry["inputs"]["remote"]) == ["s3://release/flat/.metadata"]
    server.reset()
    second = project.run("check", "--color", "never")
    assert (second.code, _built(second)) == (0, set())
    assert not [p for method, p in server.paths if method == "GET" and p.startswith("/release/")]
    client.upload_file(str(tmp_path / "dcp" / ".metadata"), "release", "flat/.metadata")
    third = project.run("check", "--color", "never")  # a new version of .metadata: read again
    assert (third.code, _built(third)) == (0, {"Flat"})


def test_a_local_index_naming_a_url_stays_local(tmp_path: Path, server: RangeServer) -> None:
    """The assumption that lets a local file's reading skip the remote recorder (and the
    remote reader's import): a shard named by a URL in a local index is a local path, which
    does not exist, and no request is made."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    url = server.url("small.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"w": url}}))
    before = server.total_requests
    probe = ("import sys\nfrom pathlib import Path\n"
             "from ckptlint.core.errors import CheckpointError\n"
             "from ckptlint.readers import read_checkpoint\n"
             "try:\n    read_checkpoint(Path(sys.argv[1]))\n"
             "except CheckpointError as exc:\n    print('refused:', exc)\n"
             "print('ckptlint.readers.remote' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].startswith("refused:") and str(folder) in out[0], out
    assert out[-1] == "False"
    assert server.total_requests == before
