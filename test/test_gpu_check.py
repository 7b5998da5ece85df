"""scripts/gpu_check.sh on a machine without an NVIDIA GPU: it says so and exits 0."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'gpu_check.sh'


def has_gpu() -> bool:
    smi = shutil.which('nvidia-smi')
    if smi is None:
        return False
    listed = subprocess.run([smi, '-L'], capture_output=True, text=True, check=False)
    return listed.stdout.startswith('GPU')


@pytest.mark.skipif(has_gpu(), reason='an NVIDIA GPU is here: the script would install and run')
def test_gpu_check_without_a_gpu_exits_cleanly(tmp_path: Path) -> None:
    venv = tmp_path / 'venv'
    done = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'VENV': str(venv)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ('gpu_check: no NVIDIA GPU on this machine (nvidia-smi '
                                   'missing or lists none); nothing to check.')
    assert not venv.exists()  # nothing was installed
