"""The layer rules, checked on every run.

Native (csrc/): includes point down only. core/ is used by every part and includes nothing outside
itself; an op (ops/<op>/) includes core/ and itself, never another op, the envs or the trainer; the
envs include core/ and envs/ only; train/ may include anything.

Python (fastppo/): import-linter's contracts in pyproject.toml (front > presets > algos > evaluation >
envs | ops > _backend; theory stands alone)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CSRC = ROOT / "csrc"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".h", ".cpp", ".cu", ".cuh"):
            continue
        rel = path.relative_to(root).parts
        layer = rel[0] if len(rel) > 1 else None  # None: module.cpp, the one module that registers every part
        for target in INCLUDE.findall(path.read_text()):
            t = Path(target).parts
            where = f"{path.relative_to(root)} includes \"{target}\""
            if layer == "core" and t[0] != "core":
                bad.append(f"{where}: core/ includes nothing outside core/")
            elif layer == "ops":
                if t[0] in ("train", "envs"):
                    bad.append(f"{where}: an op must not include {t[0]}/")
                elif t[0] == "ops" and t[:2] != rel[:2]:
                    bad.append(f"{where}: an op must not include another op")
            elif layer == "envs" and t[0] in ("train", "ops"):
                bad.append(f"{where}: the env layer must not include {t[0]}/")
            if t[0] not in ("core", "ops", "envs", "train"):
                bad.append(f"{where}: includes are relative to csrc/ and name a layer")
    return bad


@pytest.mark.skipif(not CSRC.is_dir(), reason=f"no csrc/ next to the tests ({CSRC}): not a source checkout")
def test_includes_point_down_the_layers():
    assert _violations(CSRC) == []


def test_the_rule_catches_each_kind_of_violation(tmp_path):
    cases = {
        "core/a.h": '#include "envs/vec_env.h"',
        "ops/gae/gae.cpp": '#include "ops/ppo_loss/ppo_loss.h"',
        "ops/ppo_loss/x.h": '#include "train/mlp.h"',
        "envs/e.h": '#include "train/policy_act.h"',
        "envs/f.h": '#include "ops/gae/gae.h"',
    }
    for name, text in cases.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "ok.cpp").write_text('#include "envs/env_batch.h"\n#include "ops/ppo_loss/ppo_loss.h"\n')
    (tmp_path / "ops" / "gae" / "ok.h").write_text('#include "core/common.h"\n#include "ops/gae/gae_math.h"\n')
    assert len(_violations(tmp_path)) == len(cases)


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="no pyproject.toml: not a source checkout")
def test_python_imports_keep_the_layers(monkeypatch):
    """lint-imports on the installed package, with the contracts of pyproject.toml."""
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
