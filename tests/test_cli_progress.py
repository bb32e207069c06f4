"""tqdm bars on a terminal only: a redirected stderr (a log file) gets no bar, a terminal (a pty) gets one, and
--progress / DETRES_PROGRESS=1 forces them. Every bar in detres/ and tools/ goes through detres.cli.progress."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOP = "from detres.cli.progress import progress\nfor _ in progress(range(200), desc='counting'): pass\n"


def _stderr_of(env_extra: dict, *, terminal: bool) -> bytes:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    if "DETRES_PROGRESS" not in env_extra:
        env.pop("DETRES_PROGRESS", None)
    if not terminal:
        done = subprocess.run([sys.executable, "-c", LOOP], env=env, capture_output=True, check=True)
        return done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        subprocess.run([sys.executable, "-c", LOOP], env=env, stdout=subprocess.DEVNULL, stderr=follower, check=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty is drained once the child has exited
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(leader)


def test_no_bar_in_a_redirected_log_a_bar_on_a_terminal_and_forced_on_request(tmp_path):
    assert _stderr_of({}, terminal=False) == b""
    assert b"counting" in _stderr_of({}, terminal=True) and b"200/200" in _stderr_of({}, terminal=True)
    assert b"200/200" in _stderr_of({"DETRES_PROGRESS": "1"}, terminal=False)
    assert _stderr_of({"DETRES_PROGRESS": "0"}, terminal=True) == b""


def test_progress_option_sets_the_switch_for_the_loops_and_their_children(monkeypatch):
    from detres.cli import add_progress, tool_parser
    from detres.cli.progress import bars_disabled

    monkeypatch.delenv("DETRES_PROGRESS", raising=False)
    parser = tool_parser("x")
    add_progress(parser)
    assert bars_disabled() is None  # tqdm decides: off unless stderr is a terminal
    assert parser.parse_args(["--progress"]).progress is True
    assert os.environ["DETRES_PROGRESS"] == "1" and bars_disabled() is False
    assert bars_disabled(enabled=False) is True  # e.g. not the main process


def test_every_bar_goes_through_the_one_helper():
    sources = [*(REPO / "detres").rglob("*.py"), *(REPO / "tools").glob("*.py")]
    direct = [str(p.relative_to(REPO)) for p in sources
              if "from tqdm" in p.read_text() or "import tqdm" in p.read_text()]
    assert direct == ["detres/cli/progress.py"]
