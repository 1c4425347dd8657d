"""A renamed BERT (transformers' BertModel, small config): `remap --apply` and `convert` both
make the old checkpoint load for real, every tensor equal."""

from __future__ import annotations

import pytest
import torch
from oldfiles import load_module, module
from safetensors.torch import load_file

BEFORE = '''
from torch import nn
from transformers import BertConfig, BertModel


class Classifier(nn.Module):
    def __init__(self, hidden=32, layers=2, classes=3):
        super().__init__()
        config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=64, vocab_size=100, max_position_embeddings=32)
        self.bert = BertModel(config)
        self.head = nn.Linear(hidden, classes)
'''
# the refactor: the encoder is `encoder` now and the head `classifier`
AFTER = BEFORE.replace("self.bert = ", "self.encoder = ").replace("self.head = ",
                                                                   "self.classifier = ")
ENTRY = 'name = "classifier"\ntarget = "models:Classifier"'


def _renamed(key: str) -> str:
    return key.replace("bert.", "encoder.", 1) if key.startswith("bert.") else \
        key.replace("head.", "classifier.", 1)


@pytest.fixture
def bert_project(project):
    import transformers  # noqa: F401  imported once here: every forked build inherits it

    torch.manual_seed(0)
    old = module(BEFORE)["Classifier"]()
    torch.save(old.state_dict(), project.root / "release.pt")
    project.write("models.py", AFTER)
    project.configure(ENTRY)
    return project, old.state_dict()


def _assert_equal(loaded: dict, old: dict) -> None:
    assert set(loaded) == {_renamed(k) for k in old}
    for key, value in old.items():
        assert torch.equal(loaded[_renamed(key)], value), key


def test_remap_apply_loads_the_old_bert_checkpoint(bert_project):
    project, old = bert_project
    run = project.run("remap", "classifier", "--against", "release.pt", "--apply")
    assert run.code == 0, run.out + run.err
    model = load_module(project.root / "models.py", "bert_models").Classifier()
    model.load_state_dict(torch.load(project.root / "release.pt", weights_only=True), strict=True)
    _assert_equal(model.state_dict(), old)
    text = (project.root / "models.py").read_text()
    assert "(r'^bert\\.', r'encoder.')," in text and "(r'^head\\.', r'classifier.')," in text
    again = project.run("remap", "classifier", "--against", "release.pt", "--apply")
    assert again.code == 0 and "nothing changed" in again.out
    assert (project.root / "models.py").read_text() == text


def test_convert_writes_a_bert_checkpoint_that_loads(bert_project):
    project, old = bert_project
    run = project.run("convert", "release.pt", "release-v2.safetensors")
    assert run.code == 0, run.out + run.err
    model = load_module(project.root / "models.py", "bert_models").Classifier()
    model.load_state_dict(load_file(project.root / "release-v2.safetensors"), strict=True)
    _assert_equal(model.state_dict(), old)
