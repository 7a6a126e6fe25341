"""What a researcher sees, in a real terminal (tmux, read back with capture-pane): a watch
run is a header, a timing line, the job's output and a footer, nothing else; a `sed -i`
edit's temp file is never named; a waiting job's reason is one line updated in place; the
verbose mode keeps every state line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cli import c3ctl
from tests.harness.screen import TMUX, Screen

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed (scripts/bootstrap --dev)"),
]

RUN_SH = 'echo "version $(cat version.txt)"\necho "a warning" >&2\n'
HEADER = re.compile(r"^── run (\d+) · (j-[0-9a-f]+) · (.+) · (\d+ B|[\d.]+ KiB) sent ──$")
TIMING = re.compile(
    r"^first output \d+ ms after (the save|watch started) \(push \d+ ms · queue \d+ ms · "
    r"fetch \d+ ms · env \d+ ms · start \d+ ms\)$"
)
FOOTER = re.compile(r"^● COMPLETED (j-[0-9a-f]+) · \d+\.\d s · £\d+\.\d\d$")


def _project(root: Path, name: str) -> Path:
    root.mkdir()
    (root / ".c3").write_text(f"project: {name}\nscript: run.sh\n")
    (root / "run.sh").write_text(RUN_SH)
    (root / "version.txt").write_text("1\n")
    return root


def _footers(lines: list[str]) -> int:
    return sum(1 for line in lines if line.startswith("● "))


def test_watch_shows_header_timing_output_footer_and_nothing_else(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(tmp_path / "screen", "screen")
    env = {k: v for k, v in stack_env.items() if k != "NO_COLOR"}  # colour, as on a desk
    with Screen([sys.executable, "-m", "c3ctl.main", "watch"], env=env, cwd=project) as screen:
        screen.wait_until(lambda ls: _footers(ls) == 1, "the first run's footer")
        # sed -i writes a temp file (./sedXXXXXX) next to the file and renames it over.
        subprocess.run(["sed", "-i", "s/1/2/", "version.txt"], cwd=project, check=True)
        lines = screen.wait_until(lambda ls: _footers(ls) == 2, "the second run's footer")

        assert len(lines) == 10, "\n".join(lines)
        first, second = lines[:5], lines[5:]
        runs = []
        for number, (header, timing, out, err, footer) in enumerate((first, second), start=1):
            match = HEADER.match(header)
            assert match, header
            assert int(match.group(1)) == number
            assert TIMING.match(timing), timing
            assert out == f"version {number}"
            assert err == "a warning"
            footer_match = FOOTER.match(footer)
            assert footer_match and footer_match.group(1) == match.group(2), footer
            runs.append(match)
        shipped = sum(p.stat().st_size for p in project.iterdir())
        assert runs[0].group(3) == f"3 files ({shipped} B)"  # .c3, run.sh, version.txt
        assert runs[1].group(3) == "version.txt"  # the edit, not sed's temp file
        assert not any("sed" in line for line in lines)
        assert "after watch started" in first[1] and "after the save" in second[1]

        # On a terminal the job's stderr is told apart by colour, its stdout is not.
        coloured = screen.lines(escapes=True)
        warning = next(line for line in coloured if "a warning" in line)
        version = next(line for line in coloured if "version 2" in line)
        assert "\x1b[31m" in warning and "\x1b[31m" not in version


def test_a_waiting_job_shows_its_reason_on_one_line(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = _project(tmp_path / "waiting", "waiting")
    argv = [sys.executable, "-m", "c3ctl.main", "run", "--gpu", "a100", "--", "true"]
    with Screen(argv, env=stack_env, cwd=project) as screen:
        lines = screen.wait_until(lambda ls: any(line.startswith("PENDING: ") for line in ls),
                                  "the waiting reason")
        assert len(lines) == 2, "\n".join(lines)
        header, waiting = lines
        assert header.startswith("── j-") and header.endswith(" sent ──")
        assert waiting == "PENDING: no capacity for gpu class a100"
        job_id = header.split()[1]
        assert c3ctl(stack_env, "cancel", job_id).returncode == 0
        assert screen.exit_code() == 143  # canceled
        lines = screen.lines()
        # The waiting line was rewritten in place by the footer: no trace of it is left.
        assert lines[0] == header and lines[1].startswith(f"● CANCELED {job_id}"), lines
        assert not any("PENDING" in line for line in lines)


def test_verbose_keeps_every_state_line(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = _project(tmp_path / "verbose", "verbose")
    argv = [sys.executable, "-m", "c3ctl.main", "deploy", "-f", "-v"]
    with Screen(argv, env=stack_env, cwd=project) as screen:  # NO_COLOR is set
        assert screen.exit_code() == 0
        text = "\n".join(screen.lines())
    for expected in (r"^pushed 3 files \(\d+ B\): \d+ hashed, \d+ new, \d+ B sent in [\d.]+s$",
                     r"^submitted j-[0-9a-f]+ \(verbose, gpu any\)$",
                     r"^● PENDING$", r"^● SCHEDULING assigned to agent a-",
                     r"^c3: picked up by ", r"^● RUNNING running on ",
                     r"^c3: workspace ready", r"^version 1$",
                     r"^\[stderr\] a warning$",  # NO_COLOR: a prefix tells stderr apart
                     r"^c3: 0 artifact files committed to /jobs/j-", r"^● COMPLETED",
                     r"^artifacts: c3ctl pull j-"):
        assert re.search(expected, text, re.M), f"{expected!r} not in:\n{text}"
