"""torch is an optional extra: importing fastoptim (and everything it imports) never
imports torch; only ``fastoptim.torch`` does."""

import subprocess
import sys

from conftest import subprocess_env


def test_import_fastoptim_does_not_import_torch():
    code = ("import sys, fastoptim, fastoptim.optim, fastoptim.nn, fastoptim.lr_scheduler, "
            "fastoptim.checkpoint, fastoptim.model_selection, fastoptim.cli, fastoptim.bench; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), check=True, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout
