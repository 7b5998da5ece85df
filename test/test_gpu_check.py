"""scripts/gpu_check.sh on a machine without an NVIDIA GPU: it says so and exits 0."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'gpu_check.sh'


@pytest.mark.parametrize('nvidia_smi', [None, 'echo "No devices were found"; exit 6'],
                         ids=['no nvidia-smi', 'nvidia-smi lists none'])
def test_gpu_check_without_a_gpu_exits_cleanly(tmp_path: Path, nvidia_smi: str | None) -> None:
    # The script sees only this folder on its PATH, whatever GPU the machine has.
    tools = tmp_path / 'bin'
    tools.mkdir()
    for tool in ('dirname', 'grep'):
        (tools / tool).symlink_to(shutil.which(tool))
    if nvidia_smi is not None:
        (tools / 'nvidia-smi').write_text(f'#!{shutil.which("bash")}\n{nvidia_smi}\n')
        (tools / 'nvidia-smi').chmod(0o755)
    venv = tmp_path / 'venv'
    done = subprocess.run([shutil.which('bash'), str(SCRIPT)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, 'VENV': str(venv), 'PATH': str(tools)},
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ('gpu_check: no NVIDIA GPU on this machine (nvidia-smi '
                                   'missing or lists none); nothing to check.')
    assert not venv.exists()  # nothing was installed
