"""The committed Python stubs under protos/ are what `make protos` makes now.

A .proto edited without regenerating (or a stub edited by hand) would let the
services and the gateway disagree with the contract they claim to serve.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def _regenerate(into: Path) -> subprocess.CompletedProcess[str]:
    """The `protos` target of the Makefile, writing into `into`."""
    proto_files = sorted(
        str(path.relative_to(ROOT)) for path in PROTOS.rglob("*.proto")
    )
    # protoc finds the mypy-protobuf plugins (protoc-gen-mypy*) on PATH; they
    # are installed beside this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    return subprocess.run(  # noqa: S603 - fixed arguments, our own interpreter
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            f"--python_out={into}",
            f"--grpc_python_out={into}",
            f"--mypy_out=quiet:{into}",
            f"--mypy_grpc_out=quiet:{into}",
            *proto_files,
        ],
        cwd=ROOT,
        env=environment,
        check=False,
        capture_output=True,
        text=True,
    )


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    result = _regenerate(tmp_path)
    assert result.returncode == 0, result.stderr
    fresh = _generated_files(tmp_path)
    committed = _generated_files(PROTOS)

    assert fresh, "protoc generated nothing"
    assert sorted(committed) == sorted(fresh), "stubs missing or left over"
    stale = [name for name, content in fresh.items() if committed[name] != content]
    assert not stale, f"run `make protos`; out of date: {stale}"
