"""C++ kernels for the per-step element-wise work of the fused recurrences on a CPU.

:mod:`sketchlab.models.sketch_rnn.fused` runs each time step as a few matrix products and, around them,
chains of small element-wise ops (a layer-norm LSTM step is about fourteen forward and ten backward;
the HyperLSTM adds its gate formation). At Sketch-RNN's sizes those ops cost more in fixed overhead and
trips through memory than in arithmetic. ``csrc/step_kernels.cpp`` does each chain in one pass per batch
row, with the same maths and the same buffers; the Python code in ``fused.py`` stays the reference and
runs wherever the kernels do not (float64, a GPU, a machine without a compiler). Why hand-written:
``torch.compile`` of one layer-norm LSTM step took 75 µs against the eager step's 55 on the Intel VM (its
per-call overhead exceeds what it fuses), and no library ships these cells' steps.

The kernels are built once per machine with ``torch.utils.cpp_extension`` (g++ and ninja; about half a
minute), into PyTorch's extension cache (:func:`build_directory`), for the vector width that ATen itself
uses on this CPU (``torch.backends.cpu.get_cpu_capability()``). ``make setup`` builds them; otherwise the first fused
run does. If the build fails, a warning names the reason and the Python steps run (slower, same maths).
``SKETCHLAB_STEP_KERNELS=0`` turns them off. Which one a training used is its ``sketchlab.step_kernels`` tag:
the two agree to float32 rounding, so, as with the weights' layout, a run repeats its own losses exactly
on its own machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

try:
    import fcntl
except ImportError:  # Windows has no fcntl: builds there are not guarded against each other
    fcntl = None

#: Environment variable: "0" runs the Python steps even where the kernels build.
ENV_SWITCH = "SKETCHLAB_STEP_KERNELS"
SOURCE = Path(__file__).with_name("csrc") / "step_kernels.cpp"
# ATen's vector classes pick their width from CPU_CAPABILITY_*, which ATen's own build sets per kernel
# file; an extension sets it itself, with the matching instruction-set flags.
_CAPABILITY_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl",
               "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
}


def capability() -> str:
    """The vector width the kernels are built for: ``AVX512``, ``AVX2`` (ATen's own choice on this CPU) or
    ``DEFAULT`` (anything else: ATen's portable vectors)."""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in _CAPABILITY_FLAGS else "DEFAULT"


def build_flags(cap: str) -> list[str]:
    """The compiler flags for capability ``cap`` (no ``-ffast-math``: the maths must stay IEEE). ``-fopenmp``
    for ``at::parallel_for``: the module then links ``libgomp.so.1``, which resolves to the one torch has
    already loaded, so both share torch's threads."""
    return ["-O3", "-fopenmp", *_CAPABILITY_FLAGS.get(cap, ["-DCPU_CAPABILITY=DEFAULT"])]


def build_directory(cap: str) -> Path:
    """Where the kernels for ``cap`` are built: under ``$TORCH_EXTENSIONS_DIR`` (else
    ``~/.cache/torch_extensions``), one folder per capability, PyTorch version and Python version (a module
    built against other headers must not be imported)."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions")).expanduser()
    versions = f"torch{torch.__version__.replace('+', '_')}_py{sys.version_info[0]}{sys.version_info[1]}"
    return root / f"sketchlab_step_kernels_{cap.lower()}_{versions}"


def build(cap: str | None = None, verbose: bool = False) -> ModuleType:
    """Compile (or find already built) and import the kernels for ``cap`` (default: this CPU's)."""
    from torch.utils.cpp_extension import load  # imports setuptools: only when building

    cap = cap or capability()
    if shutil.which("ninja") is None:  # PyTorch runs `ninja` from PATH: the pip package's, in a venv not activated
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    folder = build_directory(cap)
    folder.mkdir(parents=True, exist_ok=True)
    # PyTorch guards a build with a lock file that a killed build leaves behind, after which every later
    # load waits for ever. An OS lock instead (released when its process dies), and under it any such
    # stale file is removed: no other sketchlab process can be building here meanwhile.
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        (folder / "lock").unlink(missing_ok=True)
        return load(name=f"sketchlab_step_kernels_{cap.lower()}", sources=[str(SOURCE)],
                    extra_cflags=build_flags(cap), extra_ldflags=["-fopenmp"], build_directory=str(folder),
                    verbose=verbose)


_failure: str | None = None


@functools.cache
def _loaded() -> ModuleType | None:
    global _failure
    if os.environ.get(ENV_SWITCH, "1") == "0":
        _failure = f"off ({ENV_SWITCH}=0)"
        return None
    try:
        return build()
    except Exception as err:  # no compiler, no ninja, a failed build: the Python steps still work
        _failure = f"not built: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        warnings.warn(f"sketchlab: the C++ step kernels of the fused recurrences could not be built ({_failure}); "
                      f"the Python steps run instead (same maths, slower). They need g++ and ninja "
                      f"(pip install ninja).", RuntimeWarning, stacklevel=3)
        return None


def kernels_for(t: Tensor) -> ModuleType | None:
    """The kernels module if they run ``t``'s steps (float32 on a CPU, not switched off, built), else None."""
    if t.dtype != torch.float32 or t.device.type != "cpu":
        return None
    return _loaded()


def describe() -> str:
    """What CPU float32 fused runs use in this process: ``cpp-avx512`` (say) or ``python (why)``."""
    return f"cpp-{capability().lower()}" if _loaded() is not None else f"python ({_failure})"


def used() -> str | None:
    """:func:`describe` if a fused run in this process has asked for the kernels, else None (for a run's
    ``sketchlab.step_kernels`` tag: a model without such a recurrence neither builds nor tags them)."""
    return describe() if _loaded.cache_info().currsize else None

