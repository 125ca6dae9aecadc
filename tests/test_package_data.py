"""`rualign demo` from an installed wheel: the demo experiment and the samples it names ship as package data.

The wheel is built from a copy of the project (pyproject.toml, README.md, src/) without build isolation,
so the test needs no network and leaves no build/ or egg-info in the working tree. It is then unpacked
(a pure-Python wheel unpacked is what pip installs) and the demo's dry run is made from there, with the
source tree out of reach: nothing may be read relative to a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# What the demo reads besides itself: every bundled: name in demo.yaml, as a file inside the package.
DEMO_SAMPLES = ["rualign/data/samples/grandmaster.train.jsonl", "rualign/data/samples/eval_prompts.json",
                "rualign/eval/prompts/judge_pairwise_v1.yaml"]

# Run in a fresh interpreter from the unpacked wheel: proves where rualign, the demo file and the samples
# come from, then prints the demo's plan.
_FROM_WHEEL = """
import sys
from pathlib import Path

import rualign
from rualign.cli import main
from rualign.commands.demo import demo_config
from rualign.data.sources import bundled_path

root = Path(sys.argv[1]).resolve()
for what, path in [("rualign", rualign.__file__), ("demo.yaml", demo_config()),
                   ("grandmaster sample", bundled_path("grandmaster"))]:
    assert Path(path).resolve().is_relative_to(root), f"{what} comes from {path}, not from the wheel at {root}"
sys.exit(main(["demo", "--dry-run", "--out", sys.argv[2]]))
"""


def _bundled_names(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_bundled_names(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_bundled_names(v) for v in node)) if node else set()
    return {node.split(":", 1)[1]} if isinstance(node, str) and node.startswith("bundled:") else set()


def test_demo_config_is_package_data():
    from importlib import resources

    from rualign.commands.demo import demo_config

    packaged = resources.files("rualign").joinpath("configs", "demo.yaml")
    assert packaged.is_file() and demo_config() == Path(str(packaged))
    # Every bundled: name the demo uses is one of the files DEMO_SAMPLES expects in the wheel.
    names = _bundled_names(yaml.safe_load(packaged.read_text(encoding="utf-8")))
    assert names == {"grandmaster", "eval_prompts"}
    assert all(any(f"/{name}." in path for path in DEMO_SAMPLES) for name in names)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copy(ROOT / "README.md", project)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(project)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = list(out.glob("rualign-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_demo_and_its_samples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [path for path in ["rualign/configs/demo.yaml", *DEMO_SAMPLES] if path not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    packaged = zipfile.ZipFile(wheel).read("rualign/configs/demo.yaml").decode("utf-8")
    assert packaged == (ROOT / "src" / "rualign" / "configs" / "demo.yaml").read_text(encoding="utf-8")


def test_demo_dry_run_from_the_unpacked_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"  # no configs/ here: a checkout-relative path would not be found
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _FROM_WHEEL, str(site), str(tmp_path / "out")], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    out = " ".join(done.stdout.split())
    assert "4 experiment(s), 14 stage(s): 14 would run, 0 cached" in out  # base, 2 SFT, control
