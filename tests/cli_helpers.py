"""Run the real ``neoq`` command in a subprocess and follow its output with deadlines."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

TESTS_DIR = Path(__file__).resolve().parent


def neoq_env(**extra: str) -> dict[str, str]:
    """Return an environment for ``neoq`` subprocesses: no inherited NEOQ_URL, unbuffered output."""
    env = {key: value for key, value in os.environ.items() if key != "NEOQ_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_neoq(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | str = TESTS_DIR, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m neoq ARGS`` to completion and return it (stdout and stderr as text)."""
    return subprocess.run(
        [sys.executable, "-m", "neoq", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else neoq_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


class NeoqProcess:
    """A running ``python -m neoq ...``; stdout lines are queued, stderr lines collected."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], cwd: Path | str = TESTS_DIR) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "neoq", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout.put), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], sink: Callable[[str], object]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 10) -> str:
        """Return the next stdout line starting with ``prefix``; fail after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no stdout line {prefix!r} within {timeout}s; {self.describe()}")
            try:
                line = self.stdout.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def expect_log(self, text: str, timeout: float = 10) -> str:
        """Return the first stderr line containing ``text``, waiting up to ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            for line in list(self.stderr):
                if text in line:
                    return line
            if time.monotonic() >= end:
                raise AssertionError(f"no stderr line with {text!r} within {timeout}s; {self.describe()}")
            time.sleep(0.01)

    def wait(self, timeout: float = 10) -> int:
        """Wait for the process to exit and return its status; kill it and fail after ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"neoq did not exit within {timeout}s; {self.describe()}") from None
        for reader in self._readers:
            reader.join(5)
        while not self.stdout.empty():
            self.seen.append(self.stdout.get_nowait())
        return code

    def send(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        self.proc.send_signal(signum)

    def close(self) -> None:
        """Kill the process if it still runs (test cleanup)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def describe(self) -> str:
        """Return what the process printed so far, for failure messages."""
        return f"stdout={self.seen!r} stderr={self.stderr[-20:]!r}"
