"""URLs as checkpoint locations: recognised, shown without secrets, walked like paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckptlint.core.paths import display, relative
from ckptlint.core.urls import RemotePath, has_secrets, is_url, location, scrub, shown


@pytest.mark.parametrize("text, url", [
    ("s3://bucket/model.safetensors", True), ("https://host/m.pt", True),
    ("hf://org/repo/model.safetensors", True), ("gs://b/k", True),
    ("file:///tmp/m.pt", False), ("checkpoints/m.pt", False), ("C:\\ckpt\\m.pt", False),
    ("/abs/m.pt", False), ("weird:name.pt", False),
])
def test_what_is_a_url(text: str, url: bool) -> None:
    assert is_url(text) is url


@pytest.mark.parametrize("url, seen", [
    ("https://alice:hunter2@host:8443/a/m.pt?X-Amz-Signature=abc#frag",
     "https://host:8443/a/m.pt?…"),
    ("https://host/m.pt", "https://host/m.pt"),
    ("s3://bucket/key/m.safetensors", "s3://bucket/key/m.safetensors"),
    ("http://[::1]:8080/m.pt", "http://[::1]:8080/m.pt"),
    ("http://host:notaport/m.pt", "http://host:notaport/m.pt"),
])
def test_shown_leaves_secrets_out(url: str, seen: str) -> None:
    assert shown(url) == seen == str(RemotePath(url))
    assert has_secrets(url) == (url != seen)


def test_scrub_takes_every_secret_out_of_a_message() -> None:
    url = "https://alice:hunter2@host/m.pt?token=s3cret"
    said = f"GET {url} failed; auth alice:hunter2; query token=s3cret"
    cleaned = scrub(said, url)
    assert "hunter2" not in cleaned and "s3cret" not in cleaned and "alice" not in cleaned
    assert cleaned.startswith("GET https://host/m.pt?… failed")


def test_a_remote_path_walks_like_a_path() -> None:
    index = RemotePath("s3://bucket/llm/v1/model.safetensors.index.json")
    assert index.name == "model.safetensors.index.json" and index.suffix == ".json"
    assert index.parent == RemotePath("s3://bucket/llm/v1")
    assert index.parent / "model-00001-of-00008.safetensors" == RemotePath(
        "s3://bucket/llm/v1/model-00001-of-00008.safetensors")
    # a presigned query signs one object: siblings are asked for without it
    signed = RemotePath("https://host/a/index.json?sig=1")
    assert (signed.parent / "shard.safetensors").url == "https://host/a/shard.safetensors"
    assert not hasattr(index, "__fspath__")  # never handed to `os` as a local path
    assert sorted([RemotePath("s3://b/2"), RemotePath("s3://b/10"), RemotePath("s3://b/1")])[0] \
        == RemotePath("s3://b/1")


def test_location_and_how_it_is_named(tmp_path: Path) -> None:
    assert location("s3://b/m.pt") == RemotePath("s3://b/m.pt")
    assert location("ckpt/m.pt", tmp_path) == tmp_path / "ckpt/m.pt"
    assert location("file:///tmp/a%20b.pt") == Path("/tmp/a b.pt")
    secret = RemotePath("https://u:p@host/m.pt?sig=1")
    assert relative(secret, tmp_path) == display(secret) == "https://host/m.pt?…"
