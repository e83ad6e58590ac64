"""glibc malloc tunables (slimfg/launch.py): set once, never over a user's, and they
make freed memory reusable without page faults."""

import os
import subprocess
import sys

import pytest

from slimfg import launch

glibc = pytest.mark.skipif(not launch.glibc(), reason="glibc only")
PRINT_AND_REEXEC = (
    "import os; from slimfg import launch; print(os.environ.get('GLIBC_TUNABLES')); launch.reexec()"
)
# faults while a 256 MB tensor is allocated and written a second time, after the first is freed
REALLOC_FAULTS = """
import resource, torch
n = 64 << 20  # float32 elements: 256 MB
torch.empty(n).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(n).fill_(2.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def env_without_tunables(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # `make test` sets it
    return {**env, **extra}


def output(cmd: list[str], env: dict) -> list[str]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


@glibc
def test_reexec_runs_the_command_again_once_with_the_tunables():
    lines = output([sys.executable, "-c", PRINT_AND_REEXEC], env_without_tunables())
    assert lines == ["None", launch.TUNABLES]


def test_reexec_keeps_a_value_the_user_set():
    lines = output([sys.executable, "-c", PRINT_AND_REEXEC], env_without_tunables(GLIBC_TUNABLES=""))
    assert lines == [""]


@glibc
def test_tunables_let_freed_memory_be_reused_without_faults():
    default = int(output([sys.executable, "-c", REALLOC_FAULTS], env_without_tunables(GLIBC_TUNABLES=""))[0])
    launched = [sys.executable, "-m", "slimfg.launch", sys.executable, "-c", REALLOC_FAULTS]
    tuned = int(output(launched, env_without_tunables())[0])
    # glibc's default maps a fresh 256 MB block: at least one fault per 2 MB page (128)
    assert default >= 128 and tuned < default / 10


@glibc
def test_the_slimfg_command_runs_once_more_with_the_tunables_then_the_cli():
    """`slimfg.cli.run`, the console script and `python -m slimfg`."""
    code = (
        "import os, sys; print(os.environ.get('GLIBC_TUNABLES'), flush=True); sys.argv[1:] = ['--version'];"
        "from slimfg import cli; cli.run()"
    )
    lines = output([sys.executable, "-c", code], env_without_tunables())
    assert lines[:2] == ["None", launch.TUNABLES] and "version" in lines[2] and len(lines) == 3
