"""Checkpoints at URLs, read from real servers on 127.0.0.1 that the tests start and stop.

The HTTP server (tests/servers.py, http.server) counts requests and bytes and misbehaves on
demand; the S3 server is moto's, reached through s3fs with fake credentials from the
environment. Nothing is mocked: the readers see what the servers send.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from servers import RangeServer, S3Server, sparse_safetensors
from test_readers_zip import HOSTILE, VALID

from ckptlint.core.errors import CheckpointError
from ckptlint.readers import read_checkpoint, remote, remoteinfo
from ckptlint.core.urls import RemotePath

STATE = {"embed.weight": torch.zeros(16, 8), "head.weight": torch.zeros(4, 8),
         "head.bias": torch.zeros(4)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    save_file(STATE, root / "model.safetensors")
    torch.save(STATE, root / "model.pt")
    torch.save(STATE, root / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({**STATE, "table": torch.zeros(50_000)}, root / "large.pt")  # several blocks
    return root


@pytest.fixture(scope="module")
def server(served: Path):
    with RangeServer(served) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Each test is one run: nothing remote is remembered from another test."""
    remote.new_run()
    monkeypatch.setenv("CKPTLINT_REMOTE_TIMEOUT", "2")
    if "server" in request.fixturenames:
        running = request.getfixturevalue("server")
        running.mode = "honest"
        running.reset()
    yield
    remote.new_run()


def _shapes(read) -> dict:
    return {k: v.shape for k, v in read.signature.tensors.items()}


@pytest.mark.parametrize("name, fmt", [("model.safetensors", "safetensors"),
                                       ("model.pt", "torch-zip"), ("legacy.pt", "torch-legacy")])
def test_each_format_reads_over_http_as_it_reads_locally(server: RangeServer, served: Path,
                                                         name: str, fmt: str) -> None:
    read = read_checkpoint(server.url(name))
    assert read.format == fmt and read.signature == read_checkpoint(served / name).signature
    assert _shapes(read) == {k: tuple(v.shape) for k, v in STATE.items()}
    # one metadata request, then the ranges: a file this small is one block
    assert server.requests == {"HEAD": 1, "GET": 1}


def test_reads_in_one_run_share_one_metadata_request_and_the_blocks(server: RangeServer) -> None:
    for _ in range(3):
        read_checkpoint(server.url("model.pt"))
    assert server.requests == {"HEAD": 1, "GET": 1}
    remote.new_run()  # the next run asks again
    read_checkpoint(server.url("model.pt"))
    assert server.requests == {"HEAD": 2, "GET": 2}


def test_a_big_header_costs_its_bytes_and_no_more(server: RangeServer, served: Path) -> None:
    """A 7B-model-sized header (thousands of tensors) over a huge sparse data region: the
    reads cover exactly the header's blocks."""
    tensors = {f"layers.{i}.mlp.w{j}": ("BF16", (4096, 11008)) for i in range(32) for j in range(3)}
    tensors |= {f"layers.{i}.norm{j}.weight": ("F32", (4096,))
                for i in range(32) for j in range(40)}
    path = sparse_safetensors(served / "wide.safetensors", tensors)
    with open(path, "rb") as handle:  # (not read_bytes: the data region is 8 GB of holes)
        header = 8 + int.from_bytes(handle.read(8), "little")
    read = read_checkpoint(server.url("wide.safetensors"))
    assert len(read.signature.tensors) == len(tensors)
    assert header > remote.BLOCK and server.bytes_served < header + 2 * remote.BLOCK
    assert server.requests["GET"] <= 2


def test_scattered_zip_headers_are_fetched_together(server: RangeServer, served: Path) -> None:
    """Twelve 160 kB storages: their local headers lie in twelve blocks, which the zip reader
    announces at once (`files.prefetch`), so they are fetched concurrently, once each."""
    state = {f"layers.{i}.weight": torch.zeros(40_000) for i in range(12)}
    torch.save(state, served / "scattered.pt")
    server.delay = 0.05
    try:
        read = read_checkpoint(server.url("scattered.pt"))
    finally:
        server.delay = 0.0
    assert set(read.signature.tensors) == set(state)
    assert server.most_in_flight > 1
    fetched = [r for _, r in server.ranges]
    assert len(fetched) == len(set(fetched)) <= 2 + len(state)  # the head, the tail, headers
    assert server.bytes_served < (2 + len(state)) * remote.BLOCK


# -- the server is untrusted too -------------------------------------------------------------------

def misbehaving(size: int) -> dict[str, str]:
    """mode -> what the sentence says about a file of `size` bytes read in one block."""
    return {
        "ignore-range": "answered a range request with the whole file (HTTP 200)",
        "more": f"announced {size + (1 << 20)} bytes for a request of {size} (bytes 0..{size - 1})",
        "endless": f"sent {size + 1} bytes for a request of {size} (bytes 0..{size - 1})",
        # a body cut short may be the network's doing: retried, then said as aiohttp says it
        "short": f"Not enough data to satisfy content length header (received {size // 2} of "
                 f"{size} bytes).'>; tried 3 times)",
        "size-smaller": f"says it is {size} bytes in one answer and {size - 1000} in its metadata",
        "size-larger": f"answered a request for bytes 0..{size + 999} with Content-Range 'bytes "
                       f"0-{size - 1}/{size}': not the bytes asked for",
        "etag-changes": "changed while it was read (its ETag went from",
        "gzip": "sent its bytes gzip-encoded although asked for them as they are",
        "fail-always": "could not be read over the network (HTTP 503; tried 3 times)",
        "hang": "could not be read over the network (no answer within 2 s; tried 3 times)",
        # (HEAD refused, so the first byte was asked for with a GET: refused as well)
        "forbidden": "cannot be read: the server refused access (HTTP 403); ckptlint uses the "
                     "credentials its filesystem finds in the usual places (environment, config "
                     "files)",
    }


MISBEHAVING = list(misbehaving(0))


@pytest.mark.parametrize("mode", MISBEHAVING)
def test_a_misbehaving_server_is_refused_in_one_sentence(server: RangeServer, served: Path,
                                                         mode: str) -> None:
    server.mode = mode
    # model.pt is one block, whose range is the whole file (a 200 answer is right for it)
    name = "large.pt" if mode == "ignore-range" else "model.pt"
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(server.url(name))
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert message.startswith(f"{server.url(name)}: ") and "\n" not in message
    assert misbehaving((served / name).stat().st_size)[mode] in message, message
    # never a hang: the slowest case is three deadlines and the two pauses between them
    assert elapsed < 3 * 2 + 3 * remoteinfo.BACKOFF + 2
    if mode in ("more", "endless"):  # however much it sends, ckptlint hangs up early
        assert server.settled()
        assert server.bytes_served < 16 << 20


def test_a_server_that_fails_twice_is_read_on_the_third_try(server: RangeServer) -> None:
    server.mode = "fail-twice"
    read = read_checkpoint(server.url("model.safetensors"))
    assert _shapes(read)["head.bias"] == (4,)
    assert server.requests["GET"] == 3


def test_a_failure_is_remembered_for_the_run(server: RangeServer) -> None:
    """The cache's metadata request and the reading share one failure: tried 3 times in all."""
    server.mode = "fail-always"
    for _ in range(2):
        with pytest.raises(CheckpointError, match=r"HTTP 503; tried 3 times\)$"):
            read_checkpoint(server.url("model.pt"))
    assert server.requests == {"HEAD": 3}


def test_a_server_without_head_is_asked_for_its_first_byte(server: RangeServer) -> None:
    """Presigned GET URLs answer GET only: the size comes from a one-byte range's answer."""
    server.mode = "no-head"
    read = read_checkpoint(server.url("model.pt"))
    assert read.format == "torch-zip"
    assert server.ranges[0][1] == "bytes=0-0"


def test_a_server_without_version_fields_still_serves_reads(server: RangeServer) -> None:
    server.mode = "no-etag"
    assert read_checkpoint(server.url("model.pt")).format == "torch-zip"
    assert remote.identity(RemotePath(server.url("model.pt"))) is None  # so never cached


def test_missing_file_and_closed_port(server: RangeServer) -> None:
    with pytest.raises(CheckpointError, match="/nothing.pt: does not exist$"):
        read_checkpoint(server.url("nothing.pt"))
    closed = RangeServer(Path("."))
    port = closed.port
    closed.httpd.server_close()  # the port is now closed: connections are refused
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(f"http://127.0.0.1:{port}/model.pt")
    assert str(info.value).startswith(f"http://127.0.0.1:{port}/model.pt: could not be read "
                                      "over the network (")
    assert "tried 3 times" in str(info.value)


def test_secrets_in_a_url_are_never_in_a_message(server: RangeServer) -> None:
    url = server.url("nothing.pt").replace("http://", "http://alice:hunter2@") + "?token=s3cret"
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(url)
    message = str(info.value)
    assert "hunter2" not in message and "s3cret" not in message and "alice" not in message
    assert message == f"{server.url('nothing.pt')}?…: does not exist"


# -- hostile files: refused over HTTP exactly as they are refused on disk ------------------------

@pytest.fixture(scope="module")
def zips(server: RangeServer, served: Path) -> dict[str, Path]:
    made = {}
    for case, (build, _, _) in HOSTILE.items():
        made[case] = served / f"hostile-{case}.pt"
        made[case].write_bytes(build())
    for case, build in VALID.items():
        made[case] = served / f"valid-{case}.pt"
        made[case].write_bytes(build())
    return made


def _outcome(where: str | Path) -> str:
    try:
        return repr(read_checkpoint(where).signature)
    except CheckpointError as exc:
        return "refused: " + exc.message


@pytest.mark.parametrize("case", [*HOSTILE, *VALID])
def test_hostile_zip_over_http_is_refused_exactly_as_on_disk(server: RangeServer,
                                                             zips: dict[str, Path],
                                                             case: str) -> None:
    local = _outcome(zips[case])
    assert local.startswith("refused: ") == (case in HOSTILE)
    assert _outcome(server.url(zips[case].name)) == local


# -- S3 (moto) through s3fs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 on 127.0.0.1 (each request answered 0.1 s late, so that concurrent ones
    overlap), with an 8-shard safetensors checkpoint and a DCP folder uploaded."""
    folder = tmp_path_factory.mktemp("sharded")
    weight_map = {}
    for i in range(8):
        name = f"model-{i + 1:05d}-of-00008.safetensors"
        shard = {f"layers.{i}.attn.weight": torch.zeros(8, 8),
                 f"layers.{i}.attn.bias": torch.zeros(8)}
        save_file(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    with S3Server(delay=0.1) as server:
        env = server.environment(tmp_path_factory.mktemp("aws"))
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            import boto3

            client = boto3.client("s3")
            client.create_bucket(Bucket="release")
            for path in folder.iterdir():
                client.upload_file(str(path), "release", f"llm/v1/{path.name}")
            yield server, folder, client


@pytest.fixture
def s3_env(s3, monkeypatch: pytest.MonkeyPatch):
    server, folder, client = s3
    for name, value in server.environment(Path(folder)).items():
        monkeypatch.setenv(name, value)
    server.reset()
    return server, folder, client


INDEX = "s3://release/llm/v1/model.safetensors.index.json"


def test_sharded_checkpoint_on_s3_reads_its_shards_concurrently(s3_env) -> None:
    server, folder, _ = s3_env
    read = read_checkpoint(INDEX)
    local = read_checkpoint(folder / "model.safetensors.index.json")
    assert read.signature == local.signature and read.note == local.note == "8 shards (safetensors)"
    assert len(read.signature.tensors) == 16
    assert server.most_in_flight >= 4  # the shards' requests overlapped
    # the index (metadata + one range) and each shard (metadata + one range), nothing else
    assert server.requests == {"HEAD": 9, "GET": 9}


def test_the_s3_folder_itself_reads_as_its_index(s3_env) -> None:
    _, folder, _ = s3_env
    read = read_checkpoint("s3://release/llm/v1")
    assert read.signature == read_checkpoint(folder).signature
    assert read.note.startswith("read model.safetensors.index.json in the folder")


def test_a_missing_shard_on_s3_is_named_as_locally(s3_env, tmp_path: Path) -> None:
    _, folder, client = s3_env
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    index["weight_map"]["extra.weight"] = "model-00009-of-00008.safetensors"
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    for path in copy.iterdir():
        client.upload_file(str(path), "release", f"llm/broken/{path.name}")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint("s3://release/llm/broken/model.safetensors.index.json")
    assert str(info.value) == ("s3://release/llm/broken/model.safetensors.index.json: names shard "
                               "model-00009-of-00008.safetensors, which does not exist")


def test_a_dcp_folder_on_s3_reads_its_metadata_only(s3_env, tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    server, _, client = s3_env
    dcp.save({"w": torch.zeros(3, 2)}, checkpoint_id=str(tmp_path / "dcp"))
    for path in (tmp_path / "dcp").iterdir():
        client.upload_file(str(path), "release", f"dcp/{path.name}")
    server.reset()
    read = read_checkpoint("s3://release/dcp")
    assert read.format == "torch-dcp" and _shapes(read) == {"w": (3, 2)}
    assert not any(p.endswith(".distcp") for _, p in server.paths)


def test_a_missing_bucket_is_one_sentence(s3_env) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint("s3://no-such-bucket/model.safetensors")
    assert str(info.value) == "s3://no-such-bucket/model.safetensors: does not exist"


def test_a_peft_adapter_over_http_reads_as_on_disk(server: RangeServer, served: Path) -> None:
    """The adapter's config beside its weights is found over HTTP as it is on disk."""
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    get_peft_model(base, LoraConfig(r=2, target_modules=["0"])).save_pretrained(
        str(served / "adapter"))
    local = read_checkpoint(served / "adapter" / "adapter_model.safetensors")
    over = read_checkpoint(server.url("adapter/adapter_model.safetensors"))
    assert over.format == local.format != "safetensors"
    assert over.signature == local.signature
    assert over.note == local.note.replace(str(served), f"http://127.0.0.1:{server.port}")
