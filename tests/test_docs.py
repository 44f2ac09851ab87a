"""The examples of README.md and docs/*.md run, and do what they say.

How the examples are run (the same rules are in docs/index.md, for whoever writes a page):

- Every fenced block opened with `` ```python `` is code that runs. The blocks of one file run in
  order, in one namespace that the file's blocks share (``__name__`` is ``"docs_example"``, so an
  ``if __name__ == "__main__":`` guard does not fire), in a fresh Python subprocess per file.
- A block immediately preceded by the line ``<!-- no-run -->`` (blank lines between are allowed) is
  shown but not run: a fragment that blocks forever (``nq.run()``), a backend the tests do not
  have, or code that is not complete on its own. Use it sparingly.
- The literal URL ``postgresql://app@localhost/app`` in a block is replaced by the URL of the test
  database (the ``pg_url`` fixture of tests/pgfixtures.py). Such files are marked ``postgres``.
  Without that fixture they are skipped, except under ``CI=true`` where that is a failure. The
  files share one database: give the queues of a page names of their own.
- Each block must finish within ``BLOCK_SECONDS`` (aim for well under a second or two) and leave no
  neoq thread running (``neoq.testing.neoq_threads()``) once it is done.
- A failure names the file and the line where the block starts; tracebacks point at the lines of
  the Markdown file itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The placeholder database URL that docs write; replaced by the test database's URL.
PG_PLACEHOLDER = "postgresql://app@localhost/app"

#: The marker line that keeps the next block from running.
NO_RUN = "<!-- no-run -->"

#: The longest one block may take. Examples should take well under a second or two; this is generous
#: because CI runs on small shared machines.
BLOCK_SECONDS = 5.0

#: A block still running after this long is stuck: its threads' stacks are dumped and it is ended.
HANG_SECONDS = 30.0

#: How long a block's neoq threads get to end after the block returns.
THREAD_GRACE = 2.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a Markdown file."""

    path: str
    #: The 1-based line of the block's first line of code (the line after the opening fence).
    line: int
    code: str
    run: bool


def extract_blocks(text: str, path: str = "<md>") -> list[Block]:
    """Return the ```python blocks of Markdown ``text`` in order, marking the ``<!-- no-run -->`` ones."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        language = info.split()[0].lower() if info else ""
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end].lstrip())
            end += 1
        if language == "python":
            previous = index - 1
            while previous >= 0 and not lines[previous].strip():
                previous -= 1
            skip = previous >= 0 and lines[previous].strip() == NO_RUN
            blocks.append(Block(path, index + 2, "\n".join(body) + "\n", run=not skip))
        index = end + 1
    return blocks


def doc_files() -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# The subprocess that runs one file's blocks. It reads {"blocks": [[path, line, code], ...]} on stdin.
_RUNNER = r"""
import faulthandler, json, sys, time, traceback
from neoq.testing import neoq_threads

spec = json.load(sys.stdin)
namespace = {"__name__": "docs_example", "__builtins__": __builtins__}
for path, line, code in spec["blocks"]:
    where = f"{path}:{line}"
    print(f"--- running the block at {where}", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(spec["hang_seconds"], exit=True)
    start = time.monotonic()
    try:
        exec(compile("\n" * (line - 1) + code, path, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {where} raised", file=sys.stderr)
        sys.exit(1)
    finally:
        faulthandler.cancel_dump_traceback_later()
    elapsed = time.monotonic() - start
    end = time.monotonic() + spec["thread_grace"]
    while neoq_threads() and time.monotonic() < end:
        time.sleep(0.01)
    if neoq_threads():
        print(f"FAILED: the block at {where} left neoq threads running: {neoq_threads()}", file=sys.stderr)
        sys.exit(1)
    if elapsed > spec["block_seconds"]:
        print(f"FAILED: the block at {where} took {elapsed:.2f}s; the limit is {spec['block_seconds']}s",
              file=sys.stderr)
        sys.exit(1)
"""


def run_blocks(blocks: list[Block], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``blocks`` in order in one fresh interpreter; return the finished process."""
    spec = {
        "blocks": [[block.path, block.line, block.code] for block in blocks],
        "block_seconds": BLOCK_SECONDS,
        "hang_seconds": HANG_SECONDS,
        "thread_grace": THREAD_GRACE,
    }
    return subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=HANG_SECONDS * (len(blocks) + 1),
    )


def _pg_url(request: pytest.FixtureRequest) -> str:
    try:
        url: str = request.getfixturevalue("pg_url")
    except pytest.FixtureLookupError:
        reason = "these examples need PostgreSQL, and tests/pgfixtures.py has no pg_url fixture yet"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (under CI=true that is a failure, not a skip)")
        pytest.skip(reason)
    return url


def _params() -> list[object]:
    params: list[object] = []
    for path in doc_files():
        blocks = extract_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        if not any(block.run for block in blocks):
            continue
        needs_pg = any(PG_PLACEHOLDER in block.code for block in blocks if block.run)
        marks = [pytest.mark.postgres] if needs_pg else []
        params.append(pytest.param(path, id=str(path.relative_to(ROOT)), marks=marks))
    return params


@pytest.mark.parametrize("path", _params())
def test_examples_run(path: Path, request: pytest.FixtureRequest) -> None:
    relative = str(path.relative_to(ROOT))
    blocks = [block for block in extract_blocks(path.read_text(encoding="utf-8"), relative) if block.run]
    if any(PG_PLACEHOLDER in block.code for block in blocks):
        url = _pg_url(request)
        blocks = [Block(block.path, block.line, block.code.replace(PG_PLACEHOLDER, url), block.run) for block in blocks]
    env = {key: value for key, value in os.environ.items() if key != "NEOQ_URL"}
    result = run_blocks(blocks, env)
    if result.returncode != 0:
        pytest.fail(
            f"an example of {relative} failed (exit {result.returncode}):\n{result.stderr}\n"
            f"--- its standard output:\n{result.stdout}",
            pytrace=False,
        )


# -- the extractor and the runner themselves ------------------------------------------------------

_SAMPLE = """\
# Title

```python
x = 1
```

<!-- no-run -->
```python
nq.run()
```

- a list item:

    ```python
    y = x + 1
    ```

```sh
echo not python
```

````python
z = "```"
````
"""


def test_extract_blocks_finds_lines_skips_and_indents() -> None:
    blocks = extract_blocks(_SAMPLE, "sample.md")
    assert [(b.line, b.code, b.run) for b in blocks] == [
        (4, "x = 1\n", True),
        (9, "nq.run()\n", False),
        (15, "y = x + 1\n", True),
        (23, 'z = "```"\n', True),
    ]


def test_runner_shares_a_namespace_and_names_the_failing_line() -> None:
    blocks = [Block("sample.md", 4, "x = 1\n", True), Block("sample.md", 15, "y = x + 1\nassert y == 3\n", True)]
    result = run_blocks(blocks)
    assert result.returncode == 1
    assert 'File "sample.md", line 16' in result.stderr
    assert "the block at sample.md:15 raised" in result.stderr
    assert run_blocks([*blocks[:1], Block("sample.md", 15, "assert x + 1 == 2\n", True)]).returncode == 0


def test_runner_refuses_a_block_that_leaves_threads_running() -> None:
    code = (
        "import threading\n"
        "threading.Thread(target=threading.Event().wait, args=(5,), name='neoq-leak', daemon=True).start()\n"
    )
    result = run_blocks([Block("leak.md", 3, code, True)])
    assert result.returncode == 1
    assert "left neoq threads running: ['neoq-leak']" in result.stderr
