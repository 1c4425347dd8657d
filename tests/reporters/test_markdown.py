"""`--format markdown`: the job summary, its escaping, and its size caps on huge reports."""

from __future__ import annotations

import pytest

from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, Location, ModelReport, Report, TensorSpec
from ckptlint.reporters import RenderOptions, renderer
from ckptlint.reporters.markdown import MAX_BYTES, cell, code, inline, parameters, render

OPTIONS = RenderOptions()
LLAMA_TENSORS = (
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
    "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
)


def test_golden(report, golden):
    golden("sample.md", render(report, OPTIONS))


def test_registered():
    assert renderer("markdown") is render


def test_clean_report():
    clean = Report(models=(ModelReport("resnet18", old_parameters=11_689_512,
                                       new_parameters=11_689_512),))
    assert render(clean, OPTIONS) == (
        "## ckptlint: ✅ 1 model checked, no drift\n\n"
        "| Model | Status | Findings | Parameters |\n"
        "| :-- | :-- | --: | :-- |\n"
        "| `resnet18` | ✅ clean | 0 | 11.7M |\n")


@pytest.mark.parametrize(("old", "new", "expected"), [
    (124_439_808, 124_539_808, "124.4M → 124.5M (+0.1M, +0.08%)"),
    (124_439_808, 124_440_832, "124.4M → 124.4M (+1.0K, +<0.01%)"),
    (6_738_415_616, 6_476_271_616, "6.7B → 6.5B (-0.3B, -3.89%)"),
    (11_689_512, 11_689_512, "11.7M"),
    (12, 15, "12 → 15 (+3, +25.00%)"),
    (0, 1_000, "0 → 1.0K (+1.0K)"),
    (None, 1_024, "— → 1.0K"),
    (1_024, None, "1.0K → —"),
    (None, None, "—"),
])
def test_parameters(old, new, expected):
    assert parameters(old, new) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("gpt2", "`gpt2`"),
    ("a|b", "`a\\|b`"),
    ("a`b", "``a`b``"),
    ("`x", "`` `x ``"),
    ("a``|`b", "```a``\\|`b```"),
])
def test_table_cells_escape_pipes_and_backticks(text, expected):
    assert cell(code(text)) == expected


def test_model_name_with_pipe_and_backtick_keeps_the_table_intact():
    m = ModelReport("we|rd`name", (Finding(Kind.BUILD_ERROR, "we|rd`name", "boom"),))
    out = render(Report(models=(m,)), OPTIONS)
    assert "| ``we\\|rd`name`` | ⛔ error | 1 | — |" in out.splitlines()
    assert "<summary><code>we|rd`name</code>: ⛔ error, 1 finding</summary>" in out


@pytest.mark.parametrize(("text", "expected"), [
    ("`a.{0..3}.w` is f32[3]", "`a.{0..3}.w` is f32\\[3\\]"),
    ("NameError in <module>", "NameError in \\<module\\>"),
    ("breaks </details> here", "breaks \\</details\\> here"),
    ("line one\nline two\r\nthree", "line one line two three"),
    ("`<keep>` *x*", "`<keep>` \\*x\\*"),
    ("odd ` tick", "odd \\` tick"),
])
def test_messages_escape_markup_outside_code_spans(text, expected):
    assert inline(text) == expected


def test_diff_pairs_and_signs(report):
    out = render(report, OPTIONS)
    assert ("```diff\n"
            "+ blocks.{0..11}.attn.bias     f32[1, 1, 197, 197] buffer\n"
            "- blocks.{0..11}.attn.rel_pos  f32[197, 64]\n"
            "```\n") in out
    assert "- head.weight  f32[3, 4]\n+ head.weight  f32[3, 5]\n" in out


def _llama(name: str, extra_keys: int) -> ModelReport:
    """A 7B-scale drift: every layer's 9 tensors changed differently (nothing folds), plus
    thousands of distinct keys the code no longer creates."""
    findings = [
        Finding(Kind.SHAPE_MISMATCH, name,
                f"`model.layers.{i}.{t}` is f32[4096, {4096 + i}] in the checkpoint but "
                f"f32[4096, {4097 + i}] in the code: loading fails with \"size mismatch\"",
                key=f"model.layers.{i}.{t}", keys=(f"model.layers.{i}.{t}",),
                old=TensorSpec("float32", (4096, 4096 + i)),
                new=TensorSpec("float32", (4096, 4097 + i)),
                location=Location("src/llama/modeling.py", 100 + j, 9))
        for i in range(32) for j, t in enumerate(LLAMA_TENSORS)]
    findings += [
        Finding(Kind.UNEXPECTED_KEY, name,
                f"`adapters.a{k}.lora_A.weight` (f32[16, 4096]) is in the checkpoint but the "
                "code no longer creates it", key=f"adapters.a{k}.lora_A.weight",
                old=TensorSpec("float32", (16, 4096)), location=Location("src/llama/lora.py", 12))
        for k in range(3000)]
    return ModelReport(name, tuple(findings), old_parameters=6_738_415_616,
                       new_parameters=6_739_464_192)


def test_7b_report_stays_small_and_says_what_it_left_out():
    model = _llama("llama-7b", 3000)
    out = render(Report(models=(model,)), OPTIONS)
    assert len(out.encode()) < 100 * 1024
    assert "@@ 3,476 more lines not shown @@" in out  # 288 pairs + 3000 singles, 100 shown
    assert "- … and 3,258 more findings; run `ckptlint check llama-7b` to see them all" in out
    assert "| `llama-7b` | ❌ drift | 3,288 | 6.7B → 6.7B (+1.0M, +0.02%) |" in out


def test_many_huge_models_drop_whole_sections_under_the_cap():
    report = Report(models=tuple(_llama(f"llama-{i}", 3000) for i in range(12)),
                    notes=("a note that must survive",))
    out = render(report, OPTIONS)
    assert len(out.encode()) <= MAX_BYTES
    assert "more sections not shown to keep this summary under 64 KiB" in out
    assert out.count("| ❌ drift |") == 12  # the table is never cut for this
    assert out.rstrip().endswith("- a note that must survive")
    assert out.count("<details>") == out.count("</details>")
