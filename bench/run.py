"""ckptlint benchmarks: every figure is measured beside its baseline in the same run.

    python bench/run.py            # everything (writes ~8 GB of checkpoints to a temp dir)
    python bench/run.py --quick    # skip the 2 GB checkpoints (readers, convert)
    python bench/run.py --only remote   # one section (cache, meta, against, cold, renames,
                                        # readers, convert, remote)

Prints one table per question with the ratio that answers it. Timings are medians of several
runs; the machine is noisy, so read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def _time_command(argv: list[str], cwd: Path, runs: int = 5, env: dict | None = None) -> float:
    return _medians([argv], cwd, runs, env)[0]


def _time_pair(argv: list[str], floor: list[str], cwd: Path, runs: int = 11) -> tuple[float, float]:
    """Medians of `argv` and of its floor, run alternately: a ratio of two fast commands
    measured minutes apart says more about the machine's noise than about either."""
    ours, base = _medians([argv, floor], cwd, runs)
    return ours, base


def _medians(commands: list[list[str]], cwd: Path, runs: int, env: dict | None = None) -> list:
    """Each command's median wall time over `runs` rounds, the commands taking turns.

    As users run them: with bytecode caching on (these machines set PYTHONDONTWRITEBYTECODE,
    which makes every run compile every module again), after a first round that writes the
    caches and is not counted.
    """
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ.update(env or {})
    times: list[list[float]] = [[] for _ in commands]
    for i in range(runs + 1):
        for which, command in enumerate(commands):
            start = time.perf_counter()
            subprocess.run(command, cwd=cwd, check=False, capture_output=True, env=environ)
            if i:
                times[which].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _child(code: str, cwd: Path = REPO) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object on its last line."""
    out = subprocess.run([PY, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(label: str, seconds: float, note: str = "") -> str:
    return f"  {label:<58} {seconds * 1000:>10.1f} ms  {note}"


# -- 1. warm no-op check vs cold, 10 models --------------------------------------------------------

def bench_cache(tmp: Path) -> None:
    project = tmp / "ten"
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text("")
    entries = []
    for i in range(10):
        (project / "models" / f"m{i}.py").write_text(textwrap.dedent(f'''
            from torch import nn


            class M{i}(nn.Module):
                def __init__(self, width={32 + i}):
                    super().__init__()
                    self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range({2 + i}))
                    self.norm = nn.LayerNorm(width)
            '''))
        entries.append(f'[[tool.ckptlint.models]]\nname = "m{i}"\ntarget = "models.m{i}:M{i}"\n')
    (project / "pyproject.toml").write_text("[tool.ckptlint]\n\n" + "\n".join(entries))
    ckptlint = [PY, "-m", "ckptlint"]
    subprocess.run(ckptlint + ["update"], cwd=project, check=True, capture_output=True)
    cold = _time_command(ckptlint + ["check", "--no-cache"], project, runs=3)
    subprocess.run(ckptlint + ["check"], cwd=project, check=True, capture_output=True)
    warm = _time_command(ckptlint + ["check"], project, runs=7)
    cached = _time_command(ckptlint + ["check", "--color", "never"], project, runs=7)
    floor = _time_command([PY, "-c", "pass"], project, runs=7)
    parse = _time_command([PY, "-c", "import tomllib; tomllib.load(open('pyproject.toml','rb'))"],
                          project, runs=7)
    parallel = _time_command(ckptlint + ["check", "--no-cache", "-j", "2"], project, runs=3)
    print("1. A repeated `ckptlint check` on unchanged code (10 models)")
    print(_row("cold check (--no-cache, builds all 10 on meta)", cold))
    print(_row("cold check, 2 worker processes (-j 2)", parallel, f"{parallel / cold:.2f}x cold"))
    print(_row("warm check (replays the last clean run)", warm, f"{cold / warm:.1f}x faster"))
    print(_row("warm check with options (per-model cache, no torch)", cached,
               f"{cold / cached:.1f}x faster"))
    print(_row("floor: python -c pass", floor))
    print(_row("floor: python -c pass + parse pyproject.toml", parse,
               f"warm = {warm / parse:.2f}x of it"))


# -- 2. 7B signature on meta vs naive CPU instantiation ---------------------------------------------

def bench_meta(quick: bool) -> None:
    meta = _child('''
        import json, resource, sys, time
        t0 = time.perf_counter()
        import torch
        t1 = time.perf_counter()
        sys.path.insert(0, ".")
        from pathlib import Path
        from ckptlint.build.builder import build
        from ckptlint.config import parse_config
        from ckptlint.core.records import ModelSpec
        config = parse_config(Path("pyproject.toml"))
        t2 = time.perf_counter()
        result = build(ModelSpec("llama_7b", "examples.llama:Llama"), config)
        t3 = time.perf_counter()
        print(json.dumps({"import": t1 - t0, "build": t3 - t2,
                          "params": result.signature.num_parameters,
                          "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        ''')
    size = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22 if not quick else 4)
    cpu = _child(f'''
        import json, resource, sys, time
        import torch
        sys.path.insert(0, ".")
        from examples.llama import Llama
        t = time.perf_counter()
        model = Llama(**{size!r})
        elapsed = time.perf_counter() - t
        print(json.dumps({{"build": elapsed, "params": sum(p.numel() for p in model.parameters()),
                          "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
        ''')
    per_param = cpu["build"] / cpu["params"]
    scaled = per_param * meta["params"]
    whole = _time_command([PY, "-m", "ckptlint", "check", "llama_7b", "--no-cache"], REPO, runs=3)
    torch_floor = _time_command([PY, "-c", "import torch"], REPO, runs=3)
    print("2. Signature of a 7B-parameter Llama without allocating its weights")
    print(_row(f"meta build + signature, {meta['params'] / 1e9:.2f}B params", meta["build"],
               f"peak RSS {meta['rss']:.0f} MB"))
    print(_row(f"naive: CPU instantiation, {cpu['params'] / 1e9:.2f}B params", cpu["build"],
               f"peak RSS {cpu['rss']:.0f} MB"))
    print(_row("naive scaled per parameter to 7B", scaled, f"meta is {scaled / meta['build']:.0f}x "
               "faster"))
    print(_row("whole `ckptlint check llama_7b --no-cache` process", whole,
               f"= {whole / (torch_floor + 1):.2f}x of (import torch + 1 s)"))
    print(_row("floor: python -c 'import torch'", torch_floor))


# -- 3. check --against a GPT-2-small checkpoint vs the naive unit test -----------------------------

GPT2_SMALL = dict(vocab_size=50257, n_layer=12, n_head=12, d_model=768, block_size=1024)


def bench_against(tmp: Path) -> None:
    project = tmp / "gpt2"
    project.mkdir()
    shutil.copytree(REPO / "examples", project / "examples")
    kwargs = ", ".join(f"{k} = {v}" for k, v in GPT2_SMALL.items())
    (project / "pyproject.toml").write_text(
        f'[tool.ckptlint]\n[[tool.ckptlint.models]]\nname = "gpt2"\n'
        f'target = "examples.gpt:TinyGPT"\nkwargs = {{ {kwargs} }}\n')
    ckpt = project / "gpt2.pt"
    figures = _child(f'''
        import json, sys, time
        t0 = time.perf_counter()
        import torch
        imported = time.perf_counter() - t0
        sys.path.insert(0, ".")
        from examples.gpt import TinyGPT
        torch.save(TinyGPT(**{GPT2_SMALL!r}).state_dict(), {str(ckpt)!r})

        from pathlib import Path
        from ckptlint.run import engine
        from ckptlint.config import parse_config
        config = parse_config(Path("pyproject.toml"))
        def ours():
            t = time.perf_counter()
            report = engine.check(config, ["gpt2"], against=Path({str(ckpt)!r}))
            assert not report.findings, report.findings
            return time.perf_counter() - t
        def naive():
            t = time.perf_counter()
            model = TinyGPT(**{GPT2_SMALL!r})
            model.load_state_dict(torch.load({str(ckpt)!r}, weights_only=True), strict=True)
            return time.perf_counter() - t
        ours(); naive()  # warm both: first-call imports are not what we compare
        a = sorted(ours() for _ in range(5))[2]
        b = sorted(naive() for _ in range(3))[1]
        print(json.dumps({{"ours": a, "naive": b, "import": imported}}))
        ''', cwd=project)
    whole_ours = _time_command([PY, "-m", "ckptlint", "check", "gpt2", "--no-cache", "--against",
                                str(ckpt)],
                               project, runs=3)
    naive_script = project / "naive.py"
    naive_script.write_text(textwrap.dedent(f'''
        import sys, torch
        sys.path.insert(0, ".")
        from examples.gpt import TinyGPT
        TinyGPT(**{GPT2_SMALL!r}).load_state_dict(torch.load({str(ckpt)!r}, weights_only=True))
        '''))
    whole_naive = _time_command([PY, str(naive_script)], project, runs=3)
    print("3. `ckptlint check --against` a GPT-2-small checkpoint vs the naive unit test")
    print(_row("ckptlint (read header, meta build, torch dry run, diff)", figures["ours"]))
    print(_row("naive (CPU instantiate + torch.load + load_state_dict)", figures["naive"],
               f"ckptlint is {figures['naive'] / figures['ours']:.0f}x faster"))
    torch_floor = _time_command([PY, "-c", "import torch"], project, runs=3)
    ours_over, naive_over = whole_ours - torch_floor, whole_naive - torch_floor
    print(_row("whole process: ckptlint check --against", whole_ours,
               f"overhead {ours_over:+.2f} s (target <= 0.2 s)"))
    print(_row("whole process: naive test script", whole_naive,
               f"overhead {naive_over:+.2f} s: "
               + (f"{naive_over / ours_over:.1f}x ckptlint's (target >= 5x)" if ours_over > 0
                  else "ckptlint's is none")))
    print(_row("floor: python -c 'import torch'", torch_floor,
               f"in-process import {figures['import'] * 1000:.0f} ms"))


# -- 4. reading a >= 2 GB checkpoint in each format ------------------------------------------------

def bench_readers(tmp: Path) -> None:
    folder = tmp / "big"
    folder.mkdir()
    _child(f'''
        import json, torch
        from safetensors.torch import save_file
        import torch.distributed.checkpoint as dcp
        state = {{f"layers.{{i}}.weight": torch.zeros(4096, 4096) for i in range(34)}}  # 2.3 GB
        torch.save(state, "{folder}/big.pt")
        torch.save(state, "{folder}/big_legacy.pt", _use_new_zipfile_serialization=False)
        save_file(state, "{folder}/big.safetensors")
        dcp.save(state, checkpoint_id="{folder}/big_dcp")
        print(json.dumps({{}}))
        ''')
    print("4. Reading the signature of a 2.3 GB checkpoint vs torch.load(weights_only=True)")
    for name in ("big.pt", "big_legacy.pt", "big.safetensors", "big_dcp"):
        path = folder / name
        ours = _child(f'''
            import json, resource, time
            from ckptlint.readers import read_checkpoint
            t = time.perf_counter()
            read = read_checkpoint({str(path)!r})
            print(json.dumps({{"t": time.perf_counter() - t, "n": len(read.signature.tensors),
                              "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
            ''')
        if name.endswith("_dcp"):
            load = "torch.distributed.checkpoint.format_utils.dcp_to_torch_save"
            theirs_code = f'''
                import json, resource, time, torch, torch.distributed.checkpoint.format_utils as f
                t = time.perf_counter()
                f.dcp_to_torch_save({str(path)!r}, {str(folder / "dcp_as_pt.pt")!r})
                elapsed = time.perf_counter() - t
                print(json.dumps({{"t": elapsed,
                       "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
                '''
        elif name.endswith(".safetensors"):
            load = "safetensors.torch.load_file"
            theirs_code = f'''
                import json, resource, time
                from safetensors.torch import load_file
                t = time.perf_counter()
                state = load_file({str(path)!r})
                print(json.dumps({{"t": time.perf_counter() - t,
                       "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
                '''
        else:
            load = "torch.load(weights_only=True)"
            theirs_code = f'''
                import json, resource, time, torch
                t = time.perf_counter()
                state = torch.load({str(path)!r}, weights_only=True)
                print(json.dumps({{"t": time.perf_counter() - t,
                       "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
                '''
        theirs = _child(theirs_code)
        print(_row(f"{name}: ckptlint reader ({ours['n']} tensors)", ours["t"],
                   f"peak RSS {ours['rss']:.0f} MB"))
        print(_row(f"{name}: {load}", theirs["t"],
                   f"peak RSS {theirs['rss']:.0f} MB; ckptlint {theirs['t'] / ours['t']:.0f}x "
                   "faster"))


# -- 5. the cold path: what a run pays beyond `import torch` ------------------------------------

def _project(root: Path, models: dict[str, str], entries: list[str]) -> Path:
    root.mkdir(parents=True)
    for name, source in models.items():
        (root / name).write_text(textwrap.dedent(source))
    (root / "pyproject.toml").write_text("[tool.ckptlint]\n\n" + "\n".join(entries))
    subprocess.run([PY, "-m", "ckptlint", "update"], cwd=root, check=True, capture_output=True)
    return root


def bench_cold(tmp: Path) -> None:
    ckptlint = [PY, "-m", "ckptlint"]
    torch_floor = _time_command([PY, "-c", "import torch"], REPO, runs=5)
    print("5. The cold path: overhead beyond `import torch` (target: <= 0.2 s each)")
    print(_row("floor: python -c 'import torch'", torch_floor))
    llama, llama_floor = _time_pair(ckptlint + ["check", "llama_7b", "--no-cache"],
                                    [PY, "-c", "import torch"], REPO, runs=3)
    print(_row("check llama_7b --no-cache (6.7B on meta)", llama,
               f"overhead {llama - llama_floor:+.2f} s"))

    # inspect inside the demo project: committed signatures, no torch
    import_check = [PY, "-c", "import torch; from safetensors.torch import save_file; "
                    "save_file({'tok.weight': torch.zeros(2, 2)}, 'x.safetensors')"]
    subprocess.run(import_check, cwd=tmp, check=True)
    shutil.copy(tmp / "x.safetensors", REPO / ".bench-x.safetensors")
    try:
        inspect, floor = _time_pair(ckptlint + ["inspect", ".bench-x.safetensors"],
                                    [PY, "-c", "pass"], REPO)
    finally:
        (REPO / ".bench-x.safetensors").unlink()
    print(_row("inspect FILE inside the demo project (4 models)", inspect,
               f"{inspect / floor:.2f}x python -c pass, {floor * 1000:.0f} ms (target <= 3x)"))

    # 200 models in 20 files: cold, warm, one changed, -j 1 vs -j 2
    files = {f"m{f}.py": "from torch import nn\n\n" + "".join(
        f"\nclass M{f}_{i}(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        f"        self.fc = nn.Linear({8 + i}, {8 + f})\n" for i in range(10)) for f in range(20)}
    entries = [f'[[tool.ckptlint.models]]\nname = "m{f}_{i}"\ntarget = "m{f}:M{f}_{i}"\n'
               for f in range(20) for i in range(10)]
    many = _project(tmp / "two-hundred", files, entries)
    # alternately: the two differ by less than the machine's noise between minutes
    cold2, cold = _time_pair(ckptlint + ["check", "--no-cache", "-j", "2"],
                             ckptlint + ["check", "--no-cache"], many, runs=5)
    subprocess.run(ckptlint + ["check"], cwd=many, capture_output=True)
    warm, warm_floor = _time_pair(ckptlint + ["check"], [PY, "-c", "pass"], many)
    changed = []
    for n in range(3):
        (many / "m0.py").write_text(files["m0.py"] + f"\n# edit {n}\n")
        start = time.perf_counter()
        subprocess.run(ckptlint + ["check"], cwd=many, capture_output=True)
        changed.append(time.perf_counter() - start)
    print(_row("200 models, cold (-j 1)", cold, f"overhead {cold - torch_floor:+.2f} s"))
    print(_row("200 models, cold (-j 2)", cold2, f"{cold2 / cold:.2f}x -j 1 (target <= 1x)"))
    print(_row("200 models, warm (replayed)", warm, f"{warm / warm_floor:.2f}x python -c pass"))
    print(_row("200 models, one file of 10 models changed", statistics.median(changed)))

    # a clean check of a model with 50,000 keys
    wide = _project(tmp / "wide", {"wide.py": """
        from torch import nn


        class Wide(nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = nn.ModuleList(nn.ModuleList(nn.Linear(2, 2) for _ in range(50))
                                            for _ in range(500))
        """}, ['[[tool.ckptlint.models]]\nname = "wide"\ntarget = "wide:Wide"\n'])
    clean, clean_floor = _time_pair(ckptlint + ["check", "--no-cache"],
                                    [PY, "-c", "import torch"], wide, runs=5)
    print(_row("clean check of 50,000 keys", clean,
               f"overhead {clean - clean_floor:+.2f} s (target <= 5 s)"))


# -- 6. reporting many renamed layers: linear in the number of keys ------------------------------

def bench_renames(tmp: Path) -> None:
    figures = _child('''
        import json, time
        from ckptlint.compare import diff
        from ckptlint.core.records import Signature, TensorSpec

        def sig(n, name):
            spec, norm = TensorSpec("float32", (8, 8), "parameter"), TensorSpec("float32", (8,))
            return Signature({k: v for i in range(n) for k, v in (
                (f"blocks.{i}.{name}.weight", spec), (f"blocks.{i}.{name}.bias", norm),
                (f"blocks.{i}.norm.weight", norm))})

        out = {}
        for n in (500, 1000, 2000):
            old, new = sig(n, "fc"), sig(n, "up")
            t = time.perf_counter()
            found = diff.compare("m", old, new)
            out[n] = time.perf_counter() - t
            assert [f.kind.slug for f in found] == ["renamed-key"], found[:3]
        # 25,000 keys the code no longer has, beside ten new same-shaped layers
        spec = TensorSpec("float32", (2, 2), "parameter")
        old = Signature({**{f"blocks.{i}.weight": spec for i in range(25_000)},
                         "head.weight": spec})
        new = Signature({**{f"extra.b{i}.weight": spec for i in range(10)}, "head.weight": spec})
        t = time.perf_counter()
        found = diff.compare("m", old, new)
        out["unexpected"] = time.perf_counter() - t
        assert sum(len(f.keys) or 1 for f in found if f.kind.slug == "unexpected-key") == 25_000
        print(json.dumps(out))
        ''')
    project = tmp / "renamed"
    project.mkdir()
    source = textwrap.dedent('''
        from torch import nn


        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 8)
                self.norm = nn.LayerNorm(8)


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = nn.ModuleList([Block() for _ in range(2000)])
        ''')
    (project / "m.py").write_text(source)
    (project / "pyproject.toml").write_text(
        '[tool.ckptlint]\n[[tool.ckptlint.models]]\nname = "net"\ntarget = "m:Net"\n')
    subprocess.run([PY, "-m", "ckptlint", "update"], cwd=project, check=True, capture_output=True)
    (project / "m.py").write_text(source.replace("self.fc", "self.up"))
    whole = _time_command([PY, "-m", "ckptlint", "check", "--no-cache"], project, runs=3)
    unexpected = tmp / "unexpected"
    unexpected.mkdir()
    source = textwrap.dedent('''
        from torch import nn


        class Net(nn.Module):
            def __init__(self, n=12_500):
                super().__init__()
                self.head = nn.Linear(2, 2)
                self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))
        ''')
    (unexpected / "m.py").write_text(source)
    (unexpected / "pyproject.toml").write_text(
        '[tool.ckptlint]\n[[tool.ckptlint.models]]\nname = "net"\ntarget = "m:Net"\n')
    subprocess.run([PY, "-m", "ckptlint", "update"], cwd=unexpected, check=True,
                   capture_output=True)
    (unexpected / "m.py").write_text(source.replace("n=12_500", "n=0"))
    gone = _time_command([PY, "-m", "ckptlint", "check", "--no-cache"], unexpected, runs=3)
    torch = _time_command([PY, "-c", "import torch"], project, runs=3)
    print("6. Reporting many changed keys (diff.compare in-process; the whole check in a process)")
    print("   target: 2,000 renamed layers and 25,000 unexpected keys each reported in < 2 s")
    for n, seconds in figures.items():
        label = "diff of 25,000 unexpected keys (and 10 added layers)" if n == "unexpected" \
            else f"diff of {n} renamed layers ({2 * int(n)} keys moved)"
        print(_row(label, seconds))
    print(_row("whole check, 2,000 renamed layers", whole,
               f"overhead {whole - torch:+.2f} s: meta build, torch's dry run, diff, locate"))
    print(_row("whole check, 25,000 keys no longer created", gone,
               f"overhead {gone - torch:+.2f} s"))
    print(_row("floor: python -c 'import torch'", torch))


# -- 7. convert a 2 GB torch.save file: memory bounded by the largest tensor ----------------------

def bench_convert(tmp: Path) -> None:
    project = tmp / "convert"
    project.mkdir()
    (project / "models.py").write_text(textwrap.dedent('''
        from torch import nn


        class Big(nn.Module):  # the file calls them `layers`: convert renames them
            def __init__(self):
                super().__init__()
                self.blocks = nn.ModuleList(nn.Linear(4096, 4096, bias=False) for _ in range(34))
        '''))
    (project / "pyproject.toml").write_text(
        '[tool.ckptlint]\n[[tool.ckptlint.models]]\nname = "big"\ntarget = "models:Big"\n')
    big = project / "big.pt"
    _child(f'''
        import json, torch
        state = {{f"layers.{{i}}.weight": torch.randn(4096, 4096) for i in range(34)}}
        torch.save(state, {str(big)!r})
        print(json.dumps({{}}))
        ''')
    largest = 4096 * 4096 * 4 / 2**20  # MiB, one tensor
    rss = "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"
    floor = _child(f"import json, resource, torch\nprint(json.dumps({{'rss': {rss}}}))")
    ours = _child(f'''
        import json, resource, time, torch
        from ckptlint.commands.cli import main
        t = time.perf_counter()
        code = main(["convert", "big.pt", "ours.safetensors"])
        print(json.dumps({{"t": time.perf_counter() - t, "code": code, "rss": {rss}}}))
        ''', cwd=project)
    assert ours["code"] == 0, ours
    theirs = _child(f'''
        import json, resource, time, torch
        from safetensors.torch import save_file
        t = time.perf_counter()
        state = torch.load("big.pt", weights_only=True)
        save_file({{k.replace("layers.", "blocks.", 1): v for k, v in state.items()}},
                  "theirs.safetensors")
        print(json.dumps({{"t": time.perf_counter() - t, "rss": {rss}}}))
        ''', cwd=project)
    size = big.stat().st_size / 1e9
    beyond = ours["rss"] - floor["rss"]
    print(f"7. `ckptlint convert` of a {size:.1f} GB torch.save file (34 tensors of "
          f"{largest:.0f} MiB) vs torch.load + save_file")
    print(_row("floor: python -c 'import torch'", 0, f"peak RSS {floor['rss']:.0f} MB"))
    print(_row("ckptlint convert (read, remap, stream, check --against OUT)", ours["t"],
               f"peak RSS {ours['rss']:.0f} MB: {beyond:.0f} MB beyond the floor = "
               f"{beyond / largest:.2f}x the largest tensor (target < 2x)"))
    print(_row("torch.load(weights_only=True) + save_file", theirs["t"],
               f"peak RSS {theirs['rss']:.0f} MB: "
               f"{(theirs['rss'] - floor['rss']) / largest:.0f}x the largest tensor"))
    for name in ("big.pt", "ours.safetensors", "theirs.safetensors"):
        (project / name).unlink()


# -- 8. a 2 GB checkpoint at a URL: what `check --against URL` transfers ------------------------

_BIG_MODEL = """
    from torch import nn


    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(524288, 1024)  # 2 GiB of float32
            self.head = nn.Linear(1024, 8)
    """


def bench_remote(tmp: Path) -> None:
    """The files and the server of tests/test_remote.py (sparse 2 GB files, http.server with
    ranges on 127.0.0.1): requests and bytes of a `check --against URL` beside a download."""
    import urllib.request

    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from servers import RangeServer, sparse_safetensors, sparse_torch_save

    folder = tmp / "served"
    folder.mkdir()
    sparse_safetensors(folder / "big.safetensors", {
        "embed.weight": ("F32", (524288, 1024)), "head.weight": ("F32", (8, 1024)),
        "head.bias": ("F32", (8,))})
    sparse_torch_save(folder / "big.pt", {"embed.weight": torch.empty(524288, 1024),
                                          "head.weight": torch.zeros(8, 1024),
                                          "head.bias": torch.zeros(8)})
    project = _project(tmp / "remote", {"big.py": _BIG_MODEL},
                       ['[[tool.ckptlint.models]]\nname = "big"\ntarget = "big:Big"\n'])
    print("8. `check --against URL` on a 2 GB checkpoint over HTTP (loopback) vs downloading it")
    with RangeServer(folder) as server:
        for name in ("big.safetensors", "big.pt"):
            url, size = server.url(name), (folder / name).stat().st_size
            server.reset()
            start = time.perf_counter()
            subprocess.run([PY, "-m", "ckptlint", "check", "big", "--against", url, "--no-cache"],
                           cwd=project, check=True, capture_output=True)
            check = time.perf_counter() - start
            server.settled()
            requests, sent = server.total_requests, server.bytes_served
            server.reset()
            start = time.perf_counter()
            subprocess.run([PY, "-m", "ckptlint", "check", "big", "--against", str(folder / name),
                            "--no-cache"], cwd=project, check=True, capture_output=True)
            local = time.perf_counter() - start
            start = time.perf_counter()
            with urllib.request.urlopen(url) as answer:
                while answer.read(8 << 20):
                    pass
            download = time.perf_counter() - start
            server.settled()
            print(_row(f"{name} ({size / 2**30:.2f} GiB): whole check --against URL process",
                       check, f"{requests} requests, {sent / 1024:.0f} kB"))
            print(_row(f"{name}: the same check on the local file", local,
                       f"URL costs {check - local:+.2f} s"))
            print(_row(f"{name}: full download on loopback", download,
                       f"{server.bytes_served / 2**30:.2f} GiB; {server.bytes_served / sent:,.0f}x "
                       "the bytes"))


SECTIONS = ("cache", "meta", "against", "cold", "renames", "readers", "convert", "remote")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 2 GB checkpoints")
    parser.add_argument("--only", choices=SECTIONS, help="run one section")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}")
    wanted = [args.only] if args.only else [s for s in SECTIONS
                                            if not (args.quick and s in ("readers", "convert"))]
    with tempfile.TemporaryDirectory(prefix="ckptlint-bench-") as tmp:
        folder = Path(tmp)
        runs = {"cache": lambda: bench_cache(folder), "meta": lambda: bench_meta(args.quick),
                "against": lambda: bench_against(folder), "cold": lambda: bench_cold(folder),
                "renames": lambda: bench_renames(folder),
                "readers": lambda: bench_readers(folder), "convert": lambda: bench_convert(folder),
                "remote": lambda: bench_remote(folder)}
        for section in wanted:
            runs[section]()


if __name__ == "__main__":
    main()
