"""Shared parts of every method: input checks, targets, the model guard, batching.

Every attribution method of the course follows one calling contract (``method(model, x, target=None, **parameters)``);
the helpers here make that contract cheap to keep. Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu
from torch import nn


def describe(value) -> str:
    """A short description of ``value`` for error messages: type, and dtype and shape for arrays. Chapter 00."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy and friends
        return f"a {type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def check_model(model) -> nn.Module:
    """Raise a ``TypeError`` unless ``model`` is a ``torch.nn.Module``. Chapter 00."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {describe(model)}")
    return model


def sample_ndim(model: nn.Module, x: torch.Tensor) -> int:
    """Number of dimensions of one sample the model expects (3 for images, 2 for series, 1 for vectors).

    Read from the model's first convolution; a model without one is read from its
    first linear layer, whose ``in_features`` tells one sample from a batch. Chapter 00.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return 3
        if isinstance(module, nn.Conv1d):
            return 2
    linear = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    batched = linear is None or math.prod(x.shape[1:]) == linear.in_features
    if not batched and math.prod(x.shape) == linear.in_features:
        return x.ndim  # exactly one sample's worth of features: unbatched
    return max(x.ndim - 1, 1)


def check_input(model: nn.Module, x, name: str = "x") -> tuple[torch.Tensor, bool]:
    """Validate ``x`` and return a batched copy of it, plus whether it came unbatched.

    ``x`` must be a finite floating-point tensor ``(N, C, H, W)`` or ``(N, C, L)`` with the dtype and device of the
    model's parameters; one sample without the batch dimension is accepted. The copy keeps the caller's tensor safe from
    a model that writes into its input (an in-place ReLU first). Chapter 00.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a float tensor (N, C, H, W) or (N, C, L), got {describe(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {describe(x)}")
    per_sample = sample_ndim(model, x)
    if x.ndim == per_sample:
        x, unbatched = x.unsqueeze(0), True
    elif x.ndim == per_sample + 1:
        unbatched = False
    else:
        layout = {3: "(N, C, H, W) or (C, H, W)", 2: "(N, C, L) or (C, L)"}.get(per_sample, "(N, ...)")
        raise ValueError(f"{name}: expected a tensor of shape {layout} for this model, got {describe(x)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected at least one sample with values, got {describe(x)}")
    if not torch.isfinite(torch.stack(torch.aminmax(x))).all():  # NaN or inf reach the min or max; one pass
        raise ValueError(f"{name}: expected finite values, got a tensor containing NaN or inf")
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    if p is not None and (x.dtype, x.device) != (p.dtype, p.device):
        raise TypeError(
            f"{name}: expected a {p.dtype} tensor on {p.device}, like the model's parameters, got {describe(x)} on "
            f"{x.device}; convert one of them, e.g. x.to(next(model.parameters()))"
        )
    return x.detach().clone(), unbatched


def check_spatial(x: torch.Tensor, one_d: bool = False) -> None:
    """Raise a ``ValueError`` unless the batched ``x`` has positions: images (N, C, H, W) or series (N, C, L)
    (only series with ``one_d``), for methods that hide, rank or compare positions. Chapter 00."""
    layout = "(N, C, L)" if one_d else "(N, C, H, W) or (N, C, L)"
    if x.ndim not in ((3,) if one_d else (3, 4)):
        raise ValueError(f"x: expected inputs {layout} (or one unbatched sample), got {describe(x)}")


Target = int | torch.Tensor | None  # the class to explain: None (the predicted one), an int, or a LongTensor (N,)


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """Turn ``target`` into a LongTensor ``(N,)`` of class indices.

    ``None`` means the predicted class (argmax of ``logits``), an ``int`` is used
    for every sample, a tensor must hold one index per sample. Chapter 00.
    """
    check_logits(logits)
    if logits.ndim != 2:
        raise ValueError(
            f"model: expected logits of shape (N, classes), got an output of shape {tuple(logits.shape)}; "
            "end the model with nn.Flatten() (after global pooling, say)"
        )
    n, n_classes = logits.shape
    if target is None:
        return logits.argmax(dim=-1).detach()
    if isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)):
        raise TypeError(f"target: expected None, an int or a LongTensor of shape ({n},), got {describe(target)}")
    if isinstance(target, int):
        target = torch.full((n,), target, dtype=torch.long, device=logits.device)
    elif target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"target: expected an integer tensor of shape ({n},), got {describe(target)}")
    elif target.ndim == 0:
        target = target.expand(n)
    elif target.shape != (n,):
        raise ValueError(f"target: expected shape ({n},) (one class per sample), got {describe(target)}")
    target = target.to(device=logits.device, dtype=torch.long)
    bad = (target < 0) | (target >= n_classes)
    if bad.any():
        raise ValueError(
            f"target: expected class indices in [0, {n_classes - 1}] (the model has {n_classes} classes), "
            f"got {target[bad][0].item()}"
        )
    return target


def check_logits(logits) -> torch.Tensor:
    """Raise a ``TypeError`` unless the model's output ``logits`` is a tensor (not a tuple, dict, ...). Chapter 00."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"model: expected a model that returns a tensor of logits (N, classes), got one that returns "
            f"{describe(logits)}; wrap it, e.g. nn.Sequential(model, PickFirst()) with a module returning out[0]"
        )
    return logits


def check_differentiable(output: torch.Tensor, what: str = "logits") -> torch.Tensor:
    """Raise a ``ValueError`` unless autograd can differentiate the model's ``output`` (computed from an input
    that requires gradients); ``what`` names it in the message. Chapter 00."""
    if not output.requires_grad:
        raise ValueError(
            f"model: expected {what} that autograd can differentiate with respect to x, got {what} without a "
            "gradient (the forward pass runs under torch.no_grad or detaches); for a black box use a method "
            "that needs only outputs (chapters 02 and 03, guide.choose(access='outputs'))"
        )
    return output


def output_like(attribution: torch.Tensor, x: torch.Tensor, unbatched: bool) -> torch.Tensor:
    """``attribution`` detached, as an ordinary tensor (contiguous, writable: no expanded view) with the dtype and
    device of ``x``, unbatched if ``x`` was. Chapter 00."""
    attribution = attribution.detach().to(dtype=x.dtype, device=x.device).contiguous()
    return attribution[0] if unbatched else attribution


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """Raise unless ``value`` is an ``int`` of at least ``minimum``. Chapter 00."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


VALUES_PER_PASS = 64 * 3 * 64 * 64  # a default pass with gradients: 64 course images, 5 photos at 224 x 224


def samples_per_pass(x: torch.Tensor, batch_size: int | None) -> int:
    """``batch_size`` (checked), or by default as many samples like x's as hold ``VALUES_PER_PASS`` values, so that
    the many gradient passes of a method stay within a laptop's memory on a large network at 224 x 224. Chapter 10.
    """
    if batch_size is None:
        return max(1, VALUES_PER_PASS // x[0].numel())
    return check_positive_int("batch_size", batch_size)


def check_number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """Raise unless ``value`` is a finite real number >= ``minimum`` (> with ``strict``). Chapter 04."""
    relation = ">" if strict else ">="
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite number {relation} {minimum}, got {describe(value)}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name}: expected a number {relation} {minimum}, got {value}")
    return float(value)


def check_seed(seed) -> int:
    """``seed`` as a non-negative int: an int as given, or one drawn from a ``torch.Generator``. Chapter 04."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(2**62, (1,), generator=seed, device=seed.device))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected a non-negative int or a torch.Generator, got {describe(seed)}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int or a torch.Generator, got {seed}")
    return seed


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Yield slices that cover ``range(n)`` in pieces of at most ``batch_size``. Chapter 00."""
    check_positive_int("batch_size", batch_size)
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def available_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (Docker, Binder). Chapter 00."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return n if quota is None else max(1, min(n, int(quota)))


def _cpu_quota(cgroup: str) -> float | None:
    """quota / period of cgroup v2 (``cpu.max``) or v1 (``cpu/cpu.cfs_quota_us``); None where there is no quota."""
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            words = Path(cgroup, quota_file).read_text().split()
            if period_file is not None:
                words += Path(cgroup, period_file).read_text().split()
        except OSError:
            continue
        quota, period = words[:2]
        return None if quota in ("max", "-1") else int(quota) / int(period)
    return None


def set_threads(n: int = 2) -> int:
    """Let torch use ``n`` CPU threads, fewer if the process may use fewer CPUs or ``OMP_NUM_THREADS`` is smaller.

    Returns the number set. The course's budgets are measured with 2 threads. More threads than CPUs
    (Binder gives one) make every small operation wait for the scheduler. ``make test`` sets
    ``OMP_NUM_THREADS=1`` so that two notebooks run side by side on two cores. Chapter 00.
    """
    check_positive_int("n", n)
    n = min(n, available_cpus())
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) > 0:
        n = min(n, int(limit))
    torch.set_num_threads(n)
    return n


def _raised_here(error: BaseException) -> bool:
    """Whether ``error`` is one of the package's own clear errors (raised by its code, not inside torch)."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    ours = bool(frames) and os.path.dirname(os.path.abspath(frames[-1].filename)) == package
    named = re.match(r"[A-Za-z_][\w.,' \[\]]*: ", str(error)) is not None  # "name: expected ...", not torch's
    return ours and named and isinstance(error, (ValueError, TypeError, NotImplementedError))


def _expected_input(model: nn.Module) -> str:
    """What the model's first convolution or linear layer expects, for error messages."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return f"its first convolution '{name}' expects {m.in_channels} channels"
        if isinstance(m, nn.Linear):
            return f"its first linear layer '{name}' expects {m.in_features} features per sample"
    return "see the error below"


def _diagnose(model: nn.Module, x, name: str, error: BaseException) -> None:
    """Raise a clear error if ``x`` does not fit ``model`` or the model's output is not differentiable logits.

    Called when a method failed with ``error``: one sample of ``x`` is run through the model alone. If that
    also fails, or returns something other than logits (N, classes) with a gradient, the message says so
    (naming ``x`` or ``model``) instead of the error from deep inside; otherwise it returns and ``error`` stands.
    """
    if _raised_here(error) or not isinstance(model, nn.Module):
        return
    try:
        batch, _ = check_input(model, x, name)
    except (TypeError, ValueError):
        return
    with model_guard(model), torch.enable_grad():
        probe = batch[:1].clone().requires_grad_(True)
        try:
            logits = model(probe.clone())
        except Exception as failure:
            raise ValueError(
                f"{name}: the model cannot take {describe(batch)}: {_expected_input(model)}; the forward pass "
                f"raised {type(failure).__name__}: {failure}"
            ) from failure
    check_logits(logits)
    if logits.ndim != 2:
        resolve_target(None, logits)  # raises its message about the shape of the logits
    check_differentiable(logits)


_MODEL_INPUTS = ("x", "background", "auxiliary")
ACCESS = ("outputs", "gradients", "layers")  # what a method needs from the model, least first


def contract(method: Callable | None = None, *, signed=None, needs=None, random=None, sums_to=None) -> Callable:
    """Decorator of every public method with arguments ``model`` and ``x``: a clear error when the call fails
    because ``model`` is not a module, ``x`` (or a ``background`` or ``auxiliary`` data set the method also runs
    through the model) does not fit the model or the model does not return logits.

    The checks cost nothing on a successful call: the diagnosis runs only after a failure, and an error the
    package raised itself (a ``ValueError`` or ``TypeError`` naming an argument) passes unchanged.

    ``signed`` declares what the method's maps mean, so that ``plot`` picks their colours (``is_signed``): True
    for evidence for and against the target, zero meaning no evidence; False for unsigned scores whose zero is
    not "no evidence" (magnitudes, expected probabilities, ranks); a function of some of the method's keyword
    settings returning one of them (``gradient.saliency``: ``lambda abs: not abs``); or None, the default, for a
    method that returns no attribution map. An attribution method also declares what it ``needs`` from the
    model (one of ``ACCESS``: "outputs" for a black box, "gradients", or "layers": a rule for every layer type),
    whether it is ``random`` (depends on a seed) and what its attributions sum to (``sums_to``, text, or None);
    ``guide`` reads them from here. Used bare (``@contract``) or with them (``@contract(signed=False, ...)``);
    the decorated method carries them as attributes (``method.signed``, ``method.needs``...). Chapter 00.
    """
    if method is None:
        return functools.partial(contract, signed=signed, needs=needs, random=random, sums_to=sums_to)
    signature = inspect.signature(method)
    _check_declaration(signed, signature, method.__qualname__)
    if needs not in (None, *ACCESS) or random not in (None, True, False) or not isinstance(sums_to, (str, type(None))):
        raise TypeError(f"contract of {method.__qualname__}: expected needs in {ACCESS}, random a bool and sums_to "
                        f"text, got {needs!r}, {random!r}, {sums_to!r}")  # fmt: skip

    @functools.wraps(method)
    def checked(*args, **kwargs):
        arguments = signature.bind_partial(*args, **kwargs).arguments
        model = check_model(arguments.get("model"))
        try:
            return method(*args, **kwargs)
        except Exception as error:
            for name in _MODEL_INPUTS:  # x first; then the other inputs the method runs through the model
                if name in arguments:
                    value = arguments[name]
                    _diagnose(model, getattr(value, "images", value), name, error)  # a data set: its images
            raise

    checked.signed, checked.needs, checked.random, checked.sums_to = signed, needs, random, sums_to
    return checked


def _check_declaration(signed, signature: inspect.Signature, name: str) -> None:
    """TypeError unless ``signed`` is None, a bool, or a function of keyword settings that the method has."""
    if signed is None or isinstance(signed, bool):
        return
    if not callable(signed):
        expected = f"True, False, None or a function of settings of {name}"
        raise TypeError(f"signed: expected {expected}, got {describe(signed)}")
    settings = [p for p, v in signature.parameters.items() if v.default is not v.empty]
    unknown = [p for p in inspect.signature(signed).parameters if p not in settings]
    if unknown:
        raise TypeError(f"signed: expected a function of settings of {name} ({settings}), got one of {unknown}")


def is_signed(method, name: str = "method") -> bool:
    """Whether the maps of ``method`` are signed evidence (True) or unsigned scores (False), as it declares.

    ``method`` is a method of the package (declared with ``contract``) or a ``functools.partial`` of one, whose
    settings a declaration that depends on them reads: ``partial(gradient.saliency, abs=False)`` is signed,
    ``gradient.saliency`` (``abs=True``) is not. ``name`` names the argument in errors. Chapter 00.
    """
    function, args, keywords = method, (), {}
    if isinstance(method, functools.partial):
        function, args, keywords = method.func, method.args, method.keywords
    declared = getattr(function, "signed", None)
    if declared is None or not (isinstance(declared, bool) or callable(declared)):
        what = f"{function.__module__}.{function.__qualname__}" if inspect.isfunction(function) else describe(method)
        raise TypeError(
            f"{name}: expected a method that declares whether its maps are signed (e.g. xai_course.occlusion.rise), "
            f"or a functools.partial of one, got {what}, which declares nothing (returns no map, or is your own "
            "function); pass signed=True (evidence for and against) or signed=False (unsigned scores) instead"
        )
    if isinstance(declared, bool):
        return declared
    try:
        settings = inspect.signature(function).bind_partial(*args, **keywords)
    except TypeError as error:
        what = function.__qualname__
        raise TypeError(f"{name}: the settings of {describe(method)} do not fit {what}: {error}") from error
    settings.apply_defaults()
    return bool(declared(**{p: settings.arguments[p] for p in inspect.signature(declared).parameters}))


def target_gradient(
    model, x, target, forward: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The batched input, the gradient of the target logit with respect to it, and whether x came
    unbatched.

    The model is evaluated in eval mode; the guard puts its flags back afterwards.
    ``forward(model, x)``, run instead of ``model(x)``, lets a method change the backward pass
    of some layers (the deconvnet's ReLU rules, ``backward.relu_rule``). Chapter 00.
    """
    check_model(model)
    x, unbatched = check_input(model, x)
    with model_guard(model), torch.enable_grad():
        inputs = x.requires_grad_(True)  # check_input's copy
        run = forward or nn.Module.__call__
        logits = run(model, inputs.clone())  # a copy: a model may write into its input
        target = resolve_target(target, logits)
        check_differentiable(logits)
        score = logits.gather(1, target.unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(score, inputs)
    return x.detach(), grad, unbatched


def type_names(types: tuple) -> str:
    """The names of ``types`` for a message: "Conv2d, Linear". Chapter 01."""
    return ", ".join(t.__name__ for t in types)


def is_model_input(a: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``a`` holds the values of the model input ``x`` in their order: x, a copy or a reshape (nn.Flatten).

    Compared by value, so that a model whose first layer is an in-place ReLU is read as its non-in-place twin.
    Chapter 01.
    """
    return a is x or (a.shape[0] == x.shape[0] and a.numel() == x.numel() and torch.equal(a.reshape(-1), x.reshape(-1)))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` on ``x``, computed in batches without gradients; x is never written to. Chapter 00."""
    return torch.cat([check_logits(model(x[s].clone())) for s in batch_slices(x.shape[0], batch_size)])  # copies


# ----------------------------------------------------------------------------- what hidden values become

Baseline = float | str | torch.Tensor  # a float, "mean", "blur", "uniform", "impute" or a tensor: see baseline_like
BASELINES = ("mean", "blur", "uniform", "impute")


def baseline_like(
    x: torch.Tensor, baseline: Baseline, *, seed: int | None = None, hidden=None, name: str = "baseline"
) -> torch.Tensor:
    """What hidden values become, a tensor of the shape of ``x`` (N, C, *spatial): the baseline.

    Every method that hides part of the input (Kernel SHAP's absent players, occlusion's windows and
    masks, deletion, insertion and ROAD) fills it from here. ``baseline`` is a float (a constant), "mean"
    (each sample's mean per channel), "blur" (``gaussian_blur``, RISE's insertion substrate),
    "uniform" (noise uniform between x's smallest and largest value; only where the method has a
    ``seed``), "impute" (``linear_imputation`` of the positions ``hidden`` from the visible ones, ROAD's
    substrate; only where the method says which positions it hides), or a float tensor broadcastable to x
    (one sample or a batch). ``name`` names the argument in errors. Chapter 00.
    """
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, check_number(name, baseline, -math.inf))
    if isinstance(baseline, str) and baseline == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
    if isinstance(baseline, str) and baseline == "blur":
        return gaussian_blur(x)
    if isinstance(baseline, str) and baseline == "uniform" and seed is not None:
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)
        return x.min() + (x.max() - x.min()) * noise
    if isinstance(baseline, str) and baseline == "impute" and hidden is not None:
        return linear_imputation(x, hidden)
    given = {"uniform": seed is not None, "impute": hidden is not None}
    kinds = ", ".join(repr(b) for b in BASELINES if given.get(b, True))
    expected = f"a float, {kinds} or a float tensor broadcastable to {tuple(x.shape)}"
    if isinstance(baseline, torch.Tensor) and baseline.is_floating_point():
        try:
            filled = baseline.detach().to(x).expand_as(x).clone()  # a copy: the model may write into its input
        except RuntimeError:
            raise ValueError(f"{name}: expected {expected}, got {describe(baseline)}") from None
        if not torch.isfinite(filled).all():
            raise ValueError(f"{name}: expected finite values, got {describe(baseline)} containing NaN or inf")
        return filled
    error = ValueError if isinstance(baseline, (str, torch.Tensor)) else TypeError
    raise error(f"{name}: expected {expected}, got {describe(baseline)}")


def linear_imputation(x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) or (N, C, L) with each ``hidden`` position replaced by the weighted mean of its neighbours.

    The imputation of ROAD (Rong, Leemann, Borisov, Kasneci & Kasneci 2022). The hidden values v of one
    sample solve one sparse linear system: for every hidden position p, v_p = sum_q w_q v_q / sum_q w_q
    over its neighbours q inside the grid, hidden (unknowns) or visible (x's values). On an image the
    weights are 1/6 for the four neighbours sharing an edge and 1/12 for the four sharing a corner; along
    a series the two neighbours weigh the same. Every channel uses the same system. ``hidden`` is a bool
    tensor (N, *spatial), or one (*spatial) for every sample; each sample keeps at least one visible
    position (a system without any known value has no unique solution). Chapter 08.
    """
    spatial = tuple(x.shape[2:])
    expected = f"a bool tensor of shape {(x.shape[0], *spatial)} or {spatial} with a visible position per sample"
    if not isinstance(hidden, torch.Tensor) or hidden.dtype != torch.bool or len(spatial) not in (1, 2):
        raise ValueError(f"hidden: expected {expected} for x (N, C, H, W) or (N, C, L), got {describe(hidden)}")
    try:
        hidden = hidden.expand(x.shape[0], *spatial).reshape(x.shape[0], -1).cpu().numpy()
    except RuntimeError:
        raise ValueError(f"hidden: expected {expected}, got {describe(hidden)}") from None
    if hidden.all(axis=1).any():
        raise ValueError(f"hidden: expected {expected}, got a sample with every position hidden")
    grid = np.indices(spatial).reshape(len(spatial), -1)  # the coordinates of every position, (d, P)
    offsets = np.array([o for o in np.ndindex(*(3,) * len(spatial)) if o != (1,) * len(spatial)]) - 1  # neighbours
    w = 2.0 ** -np.abs(offsets).sum(1)  # edge 1/2, corner 1/4: in the ratio 1/6 : 1/12
    values = x.detach().flatten(2).double().cpu().numpy()  # (N, C, P)
    for n, mask in enumerate(hidden):
        p = np.flatnonzero(mask)
        unknown = np.full(mask.size, -1)
        unknown[p] = np.arange(p.size)  # the index of each hidden position among the unknowns v
        q = grid[:, p] + offsets[:, :, None]  # the neighbours' coordinates (offset, d, unknown)
        o, i = np.nonzero(((q >= 0) & (q < np.array(spatial)[:, None])).all(1))  # the pairs inside the grid
        j = np.ravel_multi_index(tuple(q[o, :, i].T), spatial)  # the neighbour's position
        k, known = unknown[j], unknown[j] < 0  # the neighbour's unknown, or none: visible
        # sum_q w_q (v_i - v_q) = 0 for every unknown i; a visible neighbour's w_q x_q goes to the right-hand side
        a = sparse.csc_matrix((np.concatenate([w[o], -w[o][~known]]), (np.concatenate([i, i[~known]]),
                               np.concatenate([i, k[~known]]))), (p.size, p.size))  # fmt: skip
        b = sparse.csr_matrix((w[o][known], (i[known], j[known])), (p.size, mask.size)) @ values[n].T
        # A is symmetric positive definite: a symmetric ordering, no pivoting
        lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        values[n][:, p] = lu.solve(b).T
    return torch.from_numpy(values).to(x).view_as(x)


def gaussian_blur(x: torch.Tensor, klen: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Blur each channel of ``x`` (N, C, H, W) or (N, C, L) with RISE's kernel and zero padding.

    The insertion substrate of Petsiuk et al. (klen 11, sigma 5): along each axis, scipy's Gaussian
    filter of a unit impulse; zero padding darkens the border as in their code. ``klen`` is odd, so
    the result has the shape of ``x``. Chapter 00.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (3, 4):
        raise TypeError(f"x: expected a float tensor (N, C, H, W) or (N, C, L), got {describe(x)}")
    if check_positive_int("klen", klen) % 2 == 0:
        raise ValueError(f"klen: expected an odd kernel length (centred, keeps the shape of x), got {klen}")
    check_number("sigma", sigma, 0.0, strict=True)
    impulse = np.zeros(klen)
    impulse[klen // 2] = 1.0
    k = torch.from_numpy(ndimage.gaussian_filter1d(impulse, sigma)).to(x)
    n_spatial, c = x.ndim - 2, x.shape[1]
    conv = F.conv2d if n_spatial == 2 else F.conv1d
    for axis in range(n_spatial):
        shape = [1] * n_spatial
        shape[axis] = klen
        padding = tuple(klen // 2 if d == axis else 0 for d in range(n_spatial))
        x = conv(x, k.view(1, 1, *shape).expand(c, 1, *shape), padding=padding, groups=c)
    return x


# ----------------------------------------------------------------------------- the model guard


@dataclass
class _Snapshot:
    """What an explanation changes while it runs, and ``model_guard`` puts back."""

    flags: dict  # module -> (training, inplace)
    tensors: dict  # id -> (parameter or buffer, its grad, its requires_grad)
    buffers: dict  # id -> (buffer, a copy of its values)


def _snapshot(model: nn.Module) -> _Snapshot:
    # vars(m): a plain attribute lookup; getattr(m, "inplace", None) raises inside nn.Module for most modules
    flags = {m: (m.training, vars(m).get("inplace")) for m in model.modules()}
    buffers = list(model.buffers())
    tensors = {id(t): (t, t.grad, t.requires_grad) for t in [*model.parameters(), *buffers]}
    copies = {id(b): (b, b.detach().clone()) for b in buffers}  # small: running statistics, counters
    return _Snapshot(flags, tensors, copies)


def _set(obj, name: str, value) -> None:
    """``obj.name = value``, only if it differs: setting a module attribute costs a few microseconds."""
    if getattr(obj, name) != value:
        setattr(obj, name, value)


def _restore(s: _Snapshot) -> None:
    for m, (training, inplace) in s.flags.items():
        _set(m, "training", training)
        if inplace is not None:
            _set(m, "inplace", inplace)
    for t, grad, requires_grad in s.tensors.values():
        if t.grad is not grad:
            t.grad = grad
        _set(t, "requires_grad", requires_grad)
    for b, values in s.buffers.values():
        if not torch.equal(b, values):  # only then: a write would break the caller's autograd graphs of the model
            with torch.no_grad():
                b.copy_(values)


# Explanations change the model while they run (hooks, eval mode, frozen parameters): they run one at a time in a
# process (re-entrant: a method may call another), so that none sees another's changes.
EXPLAINING = threading.RLock()


@contextlib.contextmanager
def model_guard(model: nn.Module):
    """Within the block, ``model`` is in eval mode with frozen parameters (``requires_grad=False``): an explanation
    needs the network's function, not its training. When the block ends, even on an exception, the guard puts
    back what an explanation changes while it runs.

    It restores every ``training`` and ``inplace`` flag, the gradients and ``requires_grad`` flags of the
    parameters and buffers, and the values of the buffers (a forward pass in training mode updates
    BatchNorm's running statistics). Hooks are the job of whoever registers them: the package registers
    its own through handles and removes them in ``finally`` (``backward.modified``). Parameters are never
    written to, so they are not copied. The guard holds ``EXPLAINING``: an explanation in a second thread
    waits for the first, so that neither sees the other's rules, frozen parameters or eval mode. Chapter 00.
    """
    check_model(model)
    with EXPLAINING:
        snapshot = _snapshot(model)
        try:
            if any(training for training, _ in snapshot.flags.values()):
                model.eval()
            for t, _, _ in snapshot.tensors.values():
                _set(t, "requires_grad", False)
            yield model
        finally:
            _restore(snapshot)


@contextlib.contextmanager
def explaining(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int = 256):
    """The steps every method opens with once it has checked ``x`` (``check_input``) and its settings.

    Guards the model (``model_guard``: eval mode, parameters frozen, everything put back afterwards), runs
    it on x without gradients and resolves ``target`` against the logits; yields (target (N,), logits).
    A method then computes inside the block and shapes its output like x (``output_like``). Chapter 00.
    """
    with model_guard(model):
        logits = predict(model, x, batch_size)
        yield resolve_target(target, logits), logits
