"""Clean exit (issue 11): livekit's native runtime never lives in a process that finalizes.

The abort seen at the end of CI (``thread 'tokio-rt-worker' panicked ... panic in a function that cannot
unwind ... aborting``) came from livekit's FFI runtime calling into a finalizing interpreter. The echo
canceller now runs AEC3 in a child process that leaves with ``os._exit`` (bot/aec.py), so the test run and
every command never load ``liblivekit_ffi.so`` at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPO


def _livekit_loaded(pid: int | str = "self") -> bool:
    return "liblivekit_ffi" in Path(f"/proc/{pid}/maps").read_text()


def test_the_canceller_works_without_loading_livekit_here():
    from bot.aec import WebRtcEchoCanceller

    aec = WebRtcEchoCanceller(16000)
    try:
        child = aec.process.pid
        rng = np.random.default_rng(0)
        far = (rng.standard_normal(3200) * 3000).astype("<i2")
        out = b""
        for i in range(0, 3200, 320):
            aec.far(far[i:i + 320].tobytes(), 16000)
            out += aec.near((far[i:i + 320] // 2).tobytes())
        assert len(out) == 3200 * 2  # every 10 ms frame came back
        assert _livekit_loaded(child)  # the runtime is in the child ...
        assert not _livekit_loaded()  # ... and never in this process
    finally:
        aec.close()
    assert aec.process.returncode == 0  # it left on its own when its socket closed


def test_a_process_using_aec_exits_cleanly_every_time():
    """Three short processes that use the canceller and exit while it is still open: no abort, exit 0."""
    code = ("import numpy as np\nfrom bot.aec import WebRtcEchoCanceller\n"
            "c = WebRtcEchoCanceller(16000)\n"
            "x = (np.random.default_rng(0).standard_normal(320) * 3000).astype('<i2').tobytes()\n"
            "c.far(x, 16000); c.near(x); print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
        assert "panicked" not in done.stderr and "abort" not in done.stderr.lower()
