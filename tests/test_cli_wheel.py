"""A wheel built with `pip wheel .` and installed (not editable) into a fresh venv puts `detres` on the PATH, with
every tool inside it (the tools/ folder shipped as detres_tools), run from outside any checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _sources(dest: Path) -> None:
    """A copy of the checkout's files (tracked and new, not ignored), so the build leaves the checkout untouched."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def _running_site_packages() -> list[str]:
    """The site-packages folders this interpreter imports from (torch and the other dependencies live there)."""
    return [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


def _see_running_site_packages(venv: Path) -> None:
    """Let the new venv import the dependencies of the *running* interpreter, wherever they are installed.

    `venv --system-site-packages` is not that: run from inside a venv it exposes the *base* interpreter's packages
    (no torch in a user's fresh venv). A .pth file in the new venv's site-packages that lists the running
    interpreter's site-packages folders is: plain path lines are appended to sys.path after the venv's own
    site-packages, so the installed wheel's detres is found first, and the .pth files inside those folders (such as
    the editable install's, which would point back to the checkout) are not processed."""
    lib = next((venv / "lib").glob("python3*")) / "site-packages"
    (lib / "running_interpreter.pth").write_text("".join(f"{p}\n" for p in _running_site_packages()))


@pytest.mark.slow
def test_wheel_installs_the_detres_command_with_its_tools(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to list its files")
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    _sources(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # no build isolation: the installed setuptools builds it, nothing is downloaded
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dist)], cwd=src, env=env, check=True, capture_output=True)
    wheel = next(dist.glob("detres-*.whl"))
    # pip of the running interpreter installs into the new venv (no copy of pip in it); the .pth comes after, so that
    # pip does not see the running interpreter's own detres as already installed
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], env=env, check=True, capture_output=True)
    _see_running_site_packages(venv)
    detres = venv / "bin" / "detres"
    assert detres.is_file()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    version = subprocess.run(["detres", "--version"], cwd=outside, env=env, capture_output=True, text=True,
                             check=True).stdout
    assert version.startswith("detres 0.1.0 (") and "torch " in version
    assert str(venv) in version  # the wheel's copy, not the checkout's
    info = subprocess.run(["detres", "model-info", "--depth", "18", "--size", "64"], cwd=outside, env={**env,
                          "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True).stdout
    assert info.splitlines()[1].split()[0] == "18"
    listing = subprocess.run(["detres", "--help"], cwd=outside, env=env, capture_output=True, text=True).stdout
    assert "  infer " in listing and "  train-cls " in listing
