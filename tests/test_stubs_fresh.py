"""The committed stubs in c3/v1 must be exactly what scripts/gen-proto produces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


ROOT = Path(__file__).resolve().parent.parent
# Version stamps depend on the installed grpcio-tools/protobuf, not on the .proto files.
VERSION_LINES = re.compile(
    r"^(GRPC_GENERATED_VERSION = .*|# Protobuf Python Version: .*|\s+\d+,\s*$|\s+'',\s*$)",
    re.M,
)


def _normalise(text: str) -> str:
    return VERSION_LINES.sub("<version>", text)


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        check=True, capture_output=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "c3" / "v1").glob("*_pb2*"))
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "c3" / "v1").glob("*_pb2*"))
    assert generated == committed, "stub files differ: run scripts/gen-proto and commit"
    for rel in generated:
        fresh = _normalise((tmp_path / rel).read_text())
        current = _normalise((ROOT / rel).read_text())
        assert fresh == current, f"{rel} is stale: run scripts/gen-proto and commit the result"


def test_every_proto_has_stubs() -> None:
    protos = {p.stem for p in (ROOT / "proto" / "c3" / "v1").glob("*.proto")}
    stubs = {p.name.removesuffix("_pb2.py") for p in (ROOT / "c3" / "v1").glob("*_pb2.py")}
    assert protos == stubs
