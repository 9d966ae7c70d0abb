"""Running a magenta cell over a sequence: the eager reference loop and the fast paths.

Three ways to run a cell, all computing the same function:

- ``eager``: a Python loop over :meth:`MagentaCell.step` (the reference);
- ``native``: PyTorch's fused LSTM (cuDNN on a GPU) for the plain ``lstm`` cell whenever recurrent
  dropout is inactive, its maths being then identical. Magenta's weights are mapped onto
  ``nn.LSTM``'s layout on the fly (gate order ``i, f, g, o``, forget bias folded into the bias), so
  gradients flow back to the magenta-layout parameters;
- ``compiled``: the same loop with the step compiled by ``torch.compile`` (``mode="reduce-overhead"``
  adds CUDA graphs), for the other cells and for ``lstm`` under recurrent dropout;
- ``fused``: the whole recurrence of any of the three cells as one autograd Function with a
  hand-written backward (:mod:`sketchlab.models.sketch_rnn.fused`; each step's element-wise work in C++
  kernels where they are built, :mod:`sketchlab.models.sketch_rnn.step_kernels`), the fastest path on a CPU;
  a bidirectional ``lstm`` encoder runs both directions in one such loop, skipping the padding.

Which one runs is :meth:`CellRunner.path`: ``fast=False`` is always eager; ``fast=True`` takes the
native/compiled paths (made for a GPU: cuDNN, CUDA graphs) on any device; ``fast="auto"`` (the default
config) picks per device: on a CPU the fused path for every cell (the compiled step's gain there is
small and its warm-up long), except a wide hyper cell on a large batch in a process that does not keep
freed memory (see :data:`FUSED_HYPER_MAX_WORK`), elsewhere as ``True``.

Sequences are time-major here: ``(T, B, features)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

from sketchlab.memory import freed_memory_kept
from sketchlab.models.sketch_rnn.cells import HyperLSTMCell, LSTMCell, MagentaCell, State
from sketchlab.models.sketch_rnn.fused import fused_run, fused_run_many, supports_fused, supports_fused_many

StepFn = Callable[[Tensor, State, "Tensor | None"], State]

FAST_CHOICES = (False, True, "auto")
#: ``fast="auto"`` on a CPU runs a hyper cell fused only while batch x hidden size is at most this, unless
#: the process keeps freed memory (:func:`sketchlab.memory.freed_memory_kept`, the trainer's default on a
#: CPU). The fused hyper recurrence's tapes are large (over 2 GiB freed at once at magenta's sizes); when
#: glibc hands them back, the next call first-touches them again.
#: ``scripts/bench_recurrence.py --cells hyper`` (T 250, 1 thread), fused over eager speed:
#: - freed memory kept (2026-12-02, sixth session, AVX2 VM): 1.21, 1.09, 1.07 at 100x256, 100x384, 100x512;
#: - not kept: 0.76 at 100x512 (0.98 M page faults a call against eager's 0.33 M); trimmed above 2 GiB
#:   (the setting before the sixth session): 0.57-0.96 at 100x256-100x512, 1.09-1.33 up to 32,768.
#: - with the C++ step kernels (2026-12-07, eighth session, Intel VM): kept, 1.95, 1.36, 1.26 at 16x256, 100x256,
#:   100x512; not kept (their first version), 0.96, 0.70, 0.65 at 64x512, 100x384, 100x512: the threshold stays.
#: The lstm and layer_norm cells were within about 10 % of eager or faster at every size measured.
FUSED_HYPER_MAX_WORK = 32768
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: The torch.compile modes that replay CUDA graphs.
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


def reverse_sequence(x: Tensor, lengths: Tensor) -> Tensor:
    """``tf.reverse_sequence`` on time-major ``x``: reverse each column's first ``lengths[b]`` steps."""
    steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (T, 1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (T, B)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


def run_loop(cell: MagentaCell, x: Tensor, state: State, step: StepFn | None = None,
             lengths: Tensor | None = None, collect: bool = True,
             context: Tensor | None = None) -> tuple[Tensor | None, State]:
    """Run ``cell`` over ``x`` (T, B, input) from ``state``; the outputs (T, B, hidden) and the final state.

    With ``lengths`` the state stops changing after each sequence's last step (``dynamic_rnn`` with
    ``sequence_length``), so the final state is the one at step ``lengths[b] - 1``. A ``context``
    (B, c) is appended to every step's input (see :meth:`MagentaCell.project_input`).
    """
    step = step or cell.step
    steps, batch = x.shape[0], x.shape[1]
    xp = cell.project_input(x, context)
    masks = cell.dropout_masks(steps, batch, xp)
    # unbind, not xp[t]: indexing's backward would build a zero (T, B, ...) gradient for every step
    xp_t = xp.unbind(0)
    masks_t = (None,) * steps if masks is None else masks.unbind(0)
    outputs = []
    for t in range(steps):
        new = step(xp_t[t], state, masks_t[t])
        if lengths is not None:
            alive = (t < lengths).unsqueeze(-1)
            new = tuple(torch.where(alive, n, s) for n, s in zip(new, state))
        state = new
        if collect:
            outputs.append(cell.output(state))
    return (torch.stack(outputs) if collect else None), state


# -- the native LSTM kernel -----------------------------------------------------------------------

def _native_gate_order(w: Tensor) -> Tensor:
    """Magenta's gate blocks ``i, j, f, o`` (last axis) reordered to ``nn.LSTM``'s ``i, f, g, o``."""
    i, j, f, o = w.chunk(4, dim=-1)
    return torch.cat([i, f, j, o], dim=-1)


def native_lstm_params(cell: LSTMCell, suffix: str = "") -> dict[str, Tensor]:
    """``nn.LSTM`` parameters equal to magenta's LSTMCell (differentiable functions of its weights)."""
    n, b = cell.hidden_size, cell.bias
    bias = torch.cat([b[:2 * n], b[2 * n:3 * n] + cell.forget_bias, b[3 * n:]])
    return {f"weight_ih_l0{suffix}": _native_gate_order(cell.w_xh).t(),
            f"weight_hh_l0{suffix}": _native_gate_order(cell.w_hh).t(),
            f"bias_ih_l0{suffix}": _native_gate_order(bias),
            f"bias_hh_l0{suffix}": torch.zeros_like(bias)}


class NativeLSTM:
    """Runs one or two (bidirectional) magenta LSTMCells through ``nn.LSTM``'s fused kernel.

    The ``nn.LSTM`` is only a template: its own parameters are never used (``functional_call``
    substitutes the mapped ones) and it is not registered as a submodule, so it adds nothing to the
    model's parameters or state dict.
    """

    def __init__(self, cells: Sequence[LSTMCell]) -> None:
        if len(cells) not in (1, 2) or any(c.hidden_size != cells[0].hidden_size for c in cells):
            raise ValueError("NativeLSTM runs one cell, or two of equal size (forward, backward)")
        self.cells = list(cells)
        # on the meta device: no memory, and building it draws nothing from the random stream
        self.template = nn.LSTM(cells[0].input_size, cells[0].hidden_size, bidirectional=len(cells) == 2,
                                device="meta")

    def params(self) -> dict[str, Tensor]:
        out = native_lstm_params(self.cells[0])
        if len(self.cells) == 2:
            out.update(native_lstm_params(self.cells[1], "_reverse"))
        return out

    def _call(self, *args: object) -> tuple:
        with warnings.catch_warnings():
            # cuDNN copies the mapped weights into its flat buffer on every call, and warns about it;
            # the copy is the price of keeping magenta's layout as the one set of parameters
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            return functional_call(self.template, self.params(), args)

    def run(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Unidirectional: outputs (T, B, hidden) and the final ``(h, c)`` from ``state`` (zeros if None)."""
        hx = None if state is None else (state[0].unsqueeze(0).contiguous(), state[1].unsqueeze(0).contiguous())
        out, (h, c) = self._call(x, hx)
        return out, (h[0], c[0])

    def final_hidden(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Bidirectional over padded sequences of ``lengths``: ``[h_fw, h_bw]`` (B, 2 * hidden) from zeros."""
        cpu_lengths = lengths.detach().to("cpu", torch.int64)
        if int(cpu_lengths.min()) < 1:
            raise ValueError("every sequence needs at least one step for the encoder (found a length < 1)")
        packed = pack_padded_sequence(x, cpu_lengths, enforce_sorted=False)
        _, (h, _) = self._call(packed)
        return torch.cat([h[0], h[1]], dim=-1)


def check_fast(fast: bool | str) -> bool | str:
    """``fast`` as False | True | "auto" (strings "true"/"false" from a command line are accepted)."""
    if isinstance(fast, str) and fast.lower() in ("true", "false"):
        fast = fast.lower() == "true"
    if fast not in FAST_CHOICES or (fast == 1 and not isinstance(fast, bool)):
        raise ValueError(f"fast must be false, true or auto, got {fast!r}")
    return fast


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile_mode '{mode}': choose one of {', '.join(COMPILE_MODES)}")
    return mode


#: Graphs one step function may need: every cell instance (encoder forward/backward, decoder) in
#: train/eval (with/without dropout mask), with/without autocast, at a couple of batch sizes.
STEP_RECOMPILE_LIMIT = 64


def compile_step(cell: MagentaCell, mode: str = "default") -> StepFn:
    """``torch.compile`` of the cell's step (``mode`` as torch.compile's; "default" is inductor's default).

    All cells of a class share one code object, and dynamo counts recompilations per code object, so
    its limit (8 by default) is raised to :data:`STEP_RECOMPILE_LIMIT` rather than let it fall back
    to eager silently.
    """
    check_compile_mode(mode)
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, STEP_RECOMPILE_LIMIT)
    return torch.compile(cell.step, mode=None if mode == "default" else mode)


class CellRunner(nn.Module):
    """A magenta cell and the way to run it (see :meth:`path`): eager reference or the fast paths."""

    def __init__(self, cell: MagentaCell, fast: bool | str = False, compile_mode: str = "default") -> None:
        super().__init__()
        self.cell = cell
        self.fast = check_fast(fast)
        self.compile_mode = check_compile_mode(compile_mode)
        # plain attributes, not submodules: they hold no parameters of their own
        self._compiled: StepFn | None = None
        self._native: dict[int, NativeLSTM] = {}

    def __getstate__(self) -> dict:
        # compiled functions don't pickle: copies and pickles rebuild their caches on first use
        state = dict(super().__getstate__())  # a copy: the default returns the live __dict__
        state.update(_compiled=None, _native={})
        return state

    def _device_type(self) -> str:
        return next(self.cell.parameters()).device.type

    def _compiles(self) -> bool:
        """Whether the step is the compiled one: ``fast=True``, or ``auto`` off the CPU."""
        return self.fast is True or (self.fast == "auto" and self._device_type() != "cpu")

    def path(self, batch: int | None = None) -> str:
        """What a training/eval run takes right now: ``eager`` | ``fused`` | ``native`` | ``compiled``.

        It depends on the device, train/eval mode (recurrent dropout), autocast (the fused Function is
        float32-only code; under autocast the loop runs instead) and, for a hyper cell on a CPU, on
        ``batch`` and the allocator (:data:`FUSED_HYPER_MAX_WORK`; None: a small batch).
        """
        if self.fast is False:
            return "eager"
        device = self._device_type()
        if self.fast == "auto" and device == "cpu":
            if not supports_fused(self.cell) or torch.is_autocast_enabled(device):
                return "eager"
            wide = batch is not None and batch * self.cell.hidden_size > FUSED_HYPER_MAX_WORK
            pays = not (isinstance(self.cell, HyperLSTMCell) and wide) or freed_memory_kept()
            return "fused" if pays else "eager"
        return "native" if self.uses_native() else "compiled"

    def uses_native(self) -> bool:
        """Whether a plain run goes through the native LSTM kernel right now (depends on train/eval)."""
        cell = self.cell
        return (self._compiles() and isinstance(cell, LSTMCell)
                and not (cell.training and cell.recurrent_dropout > 0))

    def native(self, *others: LSTMCell) -> NativeLSTM:
        """The native-kernel runner of this cell (plus ``others`` for a bidirectional one), cached."""
        if len(others) not in self._native:
            assert isinstance(self.cell, LSTMCell)
            self._native[len(others)] = NativeLSTM([self.cell, *others])
        return self._native[len(others)]

    @property
    def uses_cudagraphs(self) -> bool:
        return self._compiles() and self.compile_mode in CUDAGRAPH_MODES

    @property
    def step(self) -> StepFn:
        """The step function: the compiled one on the compiled path, else the cell's own."""
        if not self._compiles():
            return self.cell.step
        if self._compiled is None:
            self._compiled = compile_step(self.cell, self.compile_mode)
        return self._compiled

    @property
    def sampling_step(self) -> StepFn:
        """The step for autoregressive sampling: the compiled one, unless it replays CUDA graphs (there
        each call's outputs would be overwritten by the next replay while still in use)."""
        return self.cell.step if self.uses_cudagraphs else self.step

    def run(self, x: Tensor, state: State, context: Tensor | None = None) -> tuple[Tensor, State]:
        """Outputs (T, B, hidden) and final state over the whole of ``x`` (T, B, input), with an optional
        per-sequence ``context`` (B, c) appended to every step's input."""
        path = self.path(x.shape[1])
        if path == "native":  # nn.LSTM takes whole input rows
            if context is not None:
                x = torch.cat([x, context.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=-1)
            return self.native().run(x, state)
        if path == "fused":
            return fused_run(self.cell, x, state, context=context)
        outputs, state = run_loop(self.cell, x, state, self.step, context=context)
        assert outputs is not None
        return outputs, state


def bidirectional_final_hidden(fw: CellRunner, bw: CellRunner, x: Tensor, lengths: Tensor) -> Tensor:
    """Magenta's encoder read-out: ``[h_fw, h_bw]`` (B, 2 * hidden) of ``bidirectional_dynamic_rnn``.

    The forward cell stops at each sequence's last step; the backward cell reads the sequence
    reversed within its length, so it ends on the first step. Both start from zeros. The loop runs
    over all T steps (states frozen past each length), keeping shapes fixed for compiled/graphed steps.
    """
    if fw.path() == "native" and bw.path() == "native":
        assert isinstance(bw.cell, LSTMCell)
        return fw.native(bw.cell).final_hidden(x, lengths)
    batch = x.shape[1]
    x_rev = reverse_sequence(x, lengths)
    if fw.path(batch) == "fused" and bw.path(batch) == "fused" and supports_fused_many([fw.cell, bw.cell]):
        # both directions in one loop (they share the lengths): half the small ops per step
        zero = fw.cell.zero_state(batch, x)
        (_, state_fw), (_, state_bw) = fused_run_many([fw.cell, bw.cell], [x, x_rev], [zero, zero], lengths)
        return torch.cat([state_fw[0], state_bw[0]], dim=-1)

    def final(runner: CellRunner, inputs: Tensor) -> State:
        start = runner.cell.zero_state(batch, inputs)
        if runner.path(batch) == "fused":
            return fused_run(runner.cell, inputs, start, lengths)[1]
        return run_loop(runner.cell, inputs, start, runner.step, lengths, collect=False)[1]

    state_fw = final(fw, x)
    state_bw = final(bw, x_rev)
    return torch.cat([fw.cell.output(state_fw), bw.cell.output(state_bw)], dim=-1)
