"""Differentially private training (DP-SGD) through Opacus; the only module that imports Opacus.

- `plan_privacy` checks a request before training, refusing what cannot be honoured, and calibrates the noise
  multiplier σ for the true Poisson sampling rate q = L / N of the logical batch L over the planned steps.
- `PrivateTraining` runs one logical step: it Poisson-samples the examples from secret randomness, takes the exact
  gradient of every example's loss for every trainable tensor (torch.func: vmap over grad, so the gradient of z
  through its fixed projections is exact for every method), lets Opacus' DPOptimizer clip each to C and accumulate
  them physical batch by physical batch, adds the noise σ·C once per logical step, steps, and counts the step in
  Opacus' accountant.
- `EpsilonCurve` gives the ε spent after k steps fast enough to report at every step.
- `privacy_report` is the Markdown report written beside the exports.

Opacus is imported inside the functions, so importing this module (the GUI's noise preview, the export of a
report) stays cheap."""

from __future__ import annotations

import bisect
import contextlib
import math
import secrets
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from ..config import ACCOUNTANTS, DEFAULT_DELTA, Privacy
from .distributed import Processes
from ..errors import PrivacyError, first_line  # PrivacyError: also config's refusal of ε, δ, C or σ
from ..models import attention_implementation

# The PRV accountant reports an upper bound on ε within `eps_error` of its estimate (Opacus' default: 0.01). Scaled
# to the ε at stake, the bound stays within 0.3% of it: 0.009 at ε = 3, never coarser than 0.01 or finer than 0.001.
RELATIVE_EPS_ERROR = 0.003


def eps_error_for(epsilon: float) -> float:
    return min(0.01, max(0.001, RELATIVE_EPS_ERROR * epsilon))


# The RDP accountant's orders: whole numbers only. For them the subsampled Gaussian's RDP has a closed form, which
# independent libraries reproduce to the last digits; Opacus' fractional orders rest on a truncated series whose
# result other libraries put slightly higher. The bound from whole orders is at most a few percent looser.
RDP_ORDERS = tuple(float(order) for order in range(2, 257))
# Refused as "unreachable": a calibrated σ above the logical batch size L. The noise on the averaged gradient
# (σ·C / L per coordinate) would then exceed the largest gradient any example may contribute (C).
MAX_NOISE_PER_EXAMPLE = 1.0


@contextlib.contextmanager
def _quiet_accountants() -> Iterator[None]:
    """Opacus' RDP bound warns when its best order is the largest (the tiny δ of the PRV domain search) or the
    smallest (a few steps at a large ε); the bound stays valid, and the PRV result does not depend on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        yield


def opacus_version() -> str:
    import opacus

    return opacus.__version__


def default_delta(train_examples: int) -> float:
    return min(DEFAULT_DELTA, 1.0 / (10 * train_examples))


@dataclass(frozen=True)
class PrivacyPlan:
    """A private run resolved before training: what is promised and how it is achieved."""

    epsilon_target: float | None
    delta: float
    delta_source: str
    noise_multiplier: float
    noise_source: str
    max_grad_norm: float
    sample_rate: float
    expected_batch_size: int  # the logical batch L = batch size x gradient accumulation
    steps: int
    accountant: str
    train_examples: int
    epsilon_planned: float  # ε spent once all the steps are taken
    epsilon_error: float  # the PRV accountant's accuracy: ε reported is an upper bound within this of its estimate

    def to_dict(self) -> dict:
        return asdict(self)


# --- ε after k steps ------------------------------------------------------------------------------------------
class EpsilonCurve:
    """ε spent after k steps of the Poisson-subsampled Gaussian mechanism (σ, q), for any k ≤ max_steps.

    Asking Opacus' accountant afresh costs up to a second (PRV) per step. Here the expensive parts are done once:
    RDP is linear in the steps, so one step's RDP is scaled by k; for PRV the single-step privacy random variable
    is discretized once, on the domain Opacus' PRVAccountant builds for max_steps (valid for fewer), and composed
    k times by FFT. At k = max_steps the value is exactly the accountant's.

    `live(k)` is what a running step reports: exact for RDP; for PRV exact on the first LIVE_DENSE steps and then
    the exact ε of the next point of a grid 1% apart in steps. ε grows more slowly than the steps, so the live
    value is never below the true one and at most 1% above it, at a few hundred compositions per run."""

    LIVE_DENSE = 64
    LIVE_RATIO = 1.01

    def __init__(self, noise_multiplier: float, sample_rate: float, delta: float, max_steps: int, accountant: str,
                 eps_error: float = 0.01):
        self.delta, self.eps_error = delta, eps_error
        self.max_steps, self.accountant = max(1, max_steps), accountant
        self._cache: dict[int, float] = {0: 0.0}
        grid = list(range(1, min(self.LIVE_DENSE, self.max_steps) + 1))
        while accountant != "rdp" and grid[-1] < self.max_steps:
            grid.append(min(self.max_steps, max(grid[-1] + 1, math.ceil(grid[-1] * self.LIVE_RATIO))))
        self._live_grid = grid if accountant != "rdp" else None
        if accountant == "rdp":
            from opacus.accountants.analysis.rdp import compute_rdp

            self._orders = list(RDP_ORDERS)
            self._rdp_one_step = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                             orders=self._orders)
        else:
            from opacus.accountants import PRVAccountant
            from opacus.accountants.analysis.prv import (PoissonSubsampledGaussianPRV, TruncatedPrivacyRandomVariable,
                                                         discretize)

            self._delta_error = delta / 1000  # as PRVAccountant.get_epsilon
            prv = PoissonSubsampledGaussianPRV(sample_rate, noise_multiplier)
            with _quiet_accountants():
                domain = PRVAccountant()._get_domain(prvs=[prv], num_self_compositions=[self.max_steps],
                                                     eps_error=eps_error, delta_error=self._delta_error)
            self._one_step = discretize(TruncatedPrivacyRandomVariable(prv, domain.t_min, domain.t_max), domain)

    def epsilon(self, steps: int) -> float:
        if steps not in self._cache:
            if not 0 < steps <= self.max_steps:
                raise ValueError(f"steps must be in 1..{self.max_steps} (got {steps})")
            self._cache[steps] = self._compute(steps)
        return self._cache[steps]

    def live(self, steps: int) -> float:
        if self._live_grid is None or steps <= 0 or steps > self.max_steps:
            return self.epsilon(steps)
        return self.epsilon(self._live_grid[bisect.bisect_left(self._live_grid, steps)])

    def _compute(self, steps: int) -> float:
        if self.accountant == "rdp":
            from opacus.accountants.analysis.rdp import get_privacy_spent

            with _quiet_accountants():
                return float(get_privacy_spent(orders=self._orders, rdp=self._rdp_one_step * steps,
                                               delta=self.delta)[0])
        from opacus.accountants.analysis.prv import compose_heterogeneous

        composed = compose_heterogeneous(dprvs=[self._one_step], num_self_compositions=[steps])
        return float(composed.compute_epsilon(self.delta, self._delta_error, self.eps_error)[2])  # the upper bound


def _epsilon_after(noise_multiplier: float, sample_rate: float, delta: float, steps: int, accountant: str,
                   eps_error: float) -> float:
    return EpsilonCurve(noise_multiplier, sample_rate, delta, steps, accountant, eps_error).epsilon(steps)


def _most_steps_within(epsilon: float, noise_multiplier: float, sample_rate: float, delta: float, steps: int,
                       accountant: str, eps_error: float) -> int:
    """The most steps (≤ steps) that spend at most ε at this noise; 0 when even one step spends more."""
    curve = EpsilonCurve(noise_multiplier, sample_rate, delta, steps, accountant, eps_error)
    low, high = 0, steps  # ε(low) ≤ epsilon < ε(high + 1)
    while low < high:
        middle = (low + high + 1) // 2
        if curve.epsilon(middle) <= epsilon:
            low = middle
        else:
            high = middle - 1
    return low


# --- planning ---------------------------------------------------------------------------------------------------
def plan_privacy(privacy: Privacy, train_examples: int, logical_batch: int, steps: int) -> PrivacyPlan:
    """Check the request and resolve δ and σ; every refusal is a PrivacyError that says what would work."""
    n = train_examples
    if privacy.accountant not in ACCOUNTANTS:
        raise PrivacyError(f"Unknown privacy accountant {privacy.accountant!r}; choose {' or '.join(ACCOUNTANTS)}.")
    if logical_batch > n:
        raise PrivacyError(f"The logical batch (batch size x gradient accumulation = {logical_batch}) is larger than "
                           f"the {n} training examples; private training samples each step from the data, so use "
                           f"at most {n}.")
    delta, delta_source = _resolve_delta(privacy, n)
    accounting = _Accounting(logical_batch / n, delta, steps, privacy.accountant,
                             f"{n} training examples, a logical batch of {logical_batch} and {steps} steps")
    try:
        if privacy.noise_multiplier is not None:
            sigma, noise_source, spent, eps_error = _given_noise(privacy, accounting)
        else:
            sigma, noise_source, spent, eps_error = _calibrated_noise(privacy, accounting, logical_batch)
    except (ValueError, RuntimeError) as error:  # the accountants' numerical limits (e.g. a tiny δ)
        raise PrivacyError(f"The {privacy.accountant} accountant cannot compute ε for δ = {delta:g} with "
                           f"{accounting.what} ({error}); try a larger δ or the other accountant.") from None
    return PrivacyPlan(epsilon_target=privacy.epsilon, delta=delta, delta_source=delta_source, noise_multiplier=sigma,
                       noise_source=noise_source, max_grad_norm=float(privacy.max_grad_norm),
                       sample_rate=accounting.sample_rate, expected_batch_size=logical_batch, steps=steps,
                       accountant=privacy.accountant, train_examples=n, epsilon_planned=spent, epsilon_error=eps_error)


def _resolve_delta(privacy: Privacy, n: int) -> tuple[float, str]:
    """δ and where it came from: given (and below 1/N), or the default for N training examples."""
    if privacy.delta is None:
        return default_delta(n), f"default: min({DEFAULT_DELTA:g}, 1/(10 N)) for N = {n}"
    delta = float(privacy.delta)  # within (0, 1): Privacy checks its ranges
    if delta >= 1 / n:
        raise PrivacyError(f"δ = {delta:g} is not below 1/N = 1/{n} = {1 / n:.3g} for the {n} training examples: "
                           "a δ that large allows the guarantee to fail for a whole example; use a δ below "
                           f"{1 / n:.3g}, e.g. {default_delta(n):.3g} (the default when δ is empty).")
    return delta, "given"


@dataclass(frozen=True)
class _Accounting:
    """One run's sampling, as the accountant sees it, and how it is described in a refusal."""

    sample_rate: float
    delta: float
    steps: int
    accountant: str
    what: str

    def spent_after(self, sigma: float, eps_error: float) -> float:
        return _epsilon_after(sigma, self.sample_rate, self.delta, self.steps, self.accountant, eps_error)

    def most_steps(self, sigma: float, epsilon: float, eps_error: float) -> int:
        return _most_steps_within(epsilon, sigma, self.sample_rate, self.delta, self.steps, self.accountant,
                                  eps_error)


def _given_noise(privacy: Privacy, accounting: _Accounting) -> tuple[float, str, float, float]:
    """(σ, its source, ε spent, ε's error) for a given noise multiplier, refused when it overspends a given ε."""
    sigma = float(privacy.noise_multiplier)
    reference = privacy.epsilon if privacy.epsilon is not None else accounting.spent_after(sigma, eps_error_for(1.0))
    eps_error = eps_error_for(reference)
    spent = accounting.spent_after(sigma, eps_error)
    if privacy.epsilon is not None and spent > privacy.epsilon:
        fits = accounting.most_steps(sigma, privacy.epsilon, eps_error)
        raise PrivacyError(
            f"The noise multiplier σ = {sigma:g} spends ε = {spent:.3g} with {accounting.what}, more than ε = "
            f"{privacy.epsilon:g}: leave σ empty to calibrate it to ε"
            + (f", or train at most {fits} steps." if fits else ".")
        )
    return sigma, "given", spent, eps_error


def _calibrated_noise(privacy: Privacy, accounting: _Accounting,
                      logical_batch: int) -> tuple[float, str, float, float]:
    """(σ, its source, ε spent, ε's error) with σ calibrated to ε, refused when ε is out of reach."""
    epsilon, eps_error = privacy.epsilon, eps_error_for(privacy.epsilon)
    most_noise = MAX_NOISE_PER_EXAMPLE * logical_batch
    least = accounting.spent_after(most_noise, eps_error)
    if least > epsilon:
        fits = accounting.most_steps(most_noise, epsilon, eps_error)
        fewer = (f"at most {fits} steps ({fits * accounting.sample_rate:.2g} epochs) for ε = {epsilon:g}, "
                 if fits else "")
        raise PrivacyError(
            f"ε = {epsilon:g} cannot be reached with {accounting.what}: it needs a noise multiplier σ above "
            f"{most_noise:g}, where the noise would drown every gradient. Within reach: ε ≥ {least:.3g} for "
            f"these steps, {fewer}or more data or a larger logical batch (gradient accumulation)."
        )
    sigma = _calibrate(epsilon, accounting.delta, accounting.sample_rate, accounting.steps, accounting.accountant,
                       eps_error)
    return sigma, f"calibrated to ε = {epsilon:g}", accounting.spent_after(sigma, eps_error), eps_error


def _calibrate(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str,
               eps_error: float) -> float:
    """The smallest σ (within the search's tolerance) whose ε over the steps is at most the target."""
    from opacus.accountants.utils import get_noise_multiplier

    with _quiet_accountants():
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                          steps=steps, accountant=accountant, epsilon_tolerance=eps_error,
                                          eps_error=eps_error, alphas=list(RDP_ORDERS)))


def check_trainable_modules(model: torch.nn.Module) -> None:
    """Refuse modules whose parameters train but whose per-example gradients Opacus cannot give (e.g. BatchNorm,
    which mixes the examples of a batch)."""
    from opacus.validators import ModuleValidator

    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is None or not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        errors = validator(module)
        if errors:
            reason = first_line(errors[0])
            raise PrivacyError(f"Opacus cannot train the {type(module).__name__} module {name or '(model)'} with "
                               f"differential privacy ({reason}); choose a method that keeps it frozen, such as "
                               "slash (trains only its vector z and the head) or head.")


# --- per-example gradients --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _per_example_attention(model: torch.nn.Module) -> Iterator[None]:
    """Inside vmap, transformers' attention mask code tests the mask's values (data-dependent control flow) and
    its fused CPU attention has no batching rule. Eager attention with the mask already expanded avoids both; it
    computes the same function."""
    base = model.base()

    def expand_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            dtype = next(base.parameters()).dtype
            kwargs["attention_mask"] = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return args, kwargs

    handle = base.register_forward_pre_hook(expand_mask, with_kwargs=True)
    try:
        with attention_implementation(base, "eager"):
            yield
    finally:
        handle.remove()


LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_example_gradients(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                          loss_fn: LossFunction) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The gradient of each example's own loss for every trainable tensor ({name: [B, *shape]}), and the losses.

    Each example runs alone (vmap over a batch of one), so nothing of one example reaches another's gradient."""
    from torch.func import functional_call, grad, vmap

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    keys = list(inputs)

    def example_loss(params, label, *columns):
        batch = {key: column.unsqueeze(0) for key, column in zip(keys, columns)}
        loss = loss_fn(functional_call(model, (params, frozen, buffers), (), batch), label.unsqueeze(0))
        return loss, loss.detach()

    # randomness="same": a random draw inside runs once for the whole batch, as outside vmap. The projections
    # regenerated on the fly (seeded draws) must be the very ones the model uses; dropout, when turned on, then
    # shares its masks within a physical batch (no effect on the guarantee, which does not rest on dropout).
    per_example = vmap(grad(example_loss, has_aux=True), in_dims=(None, 0, *[0] * len(keys)), randomness="same")
    with _per_example_attention(model):
        return per_example(trainable, labels, *inputs.values())


@dataclass(frozen=True)
class PrivacyUnits:
    """Whom the training rows belong to: the rows of each unit (a person) of the privacy unit column. A unit is
    sampled, and its rows' gradients clipped, as one example; the plan's train_examples counts units."""

    column: str
    rows: tuple[tuple[int, ...], ...]
    max_rows: int  # the most rows a sampled unit trains on in one step

    @classmethod
    def of(cls, column: str, owners: Sequence, max_rows: int) -> PrivacyUnits:
        """The units of rows owned by `owners` (one value per row), in order of first appearance."""
        grouped: dict = {}
        for row, owner in enumerate(owners):
            grouped.setdefault(owner, []).append(row)
        return cls(column, tuple(tuple(rows) for rows in grouped.values()), max_rows)

    def describe(self) -> str:
        capped = sum(len(rows) > self.max_rows for rows in self.rows)
        return (f"per privacy unit '{self.column}': ε bounds what all the rows of one of its {len(self.rows):,} "
                f"values can change; a sampled unit trains on at most {self.max_rows} of its rows"
                + (f" ({capped:,} units have more, drawn at random each time)" if capped else ""))

    def record(self) -> dict:
        return {"privacy_unit": self.column, "units": len(self.rows), "rows": sum(map(len, self.rows)),
                "max_rows_per_unit": self.max_rows, "capped_units": sum(len(rows) > self.max_rows
                                                                        for rows in self.rows)}


def per_unit_gradients(grads: dict[str, torch.Tensor], owners: Sequence[int]) -> dict[str, torch.Tensor]:
    """Each unit's gradient ({name: [units, *shape]}): the mean of its rows' per-example gradients, which DP-SGD then
    clips and noises as one example's."""
    index = torch.as_tensor(list(owners), dtype=torch.long)
    count = int(index.max()) + 1
    sizes = torch.bincount(index, minlength=count).clamp(min=1)
    found = {}
    for name, grad in grads.items():
        where = index.to(grad.device)
        summed = grad.new_zeros((count, *grad.shape[1:])).index_add_(0, where, grad)
        found[name] = summed / sizes.to(grad.device, grad.dtype).view(-1, *[1] * (grad.dim() - 1))
    return found


# --- training ---------------------------------------------------------------------------------------------------
Batch = tuple  # (inputs, labels), or (inputs, labels, owners): the unit of each row, numbered within the batch


class PrivateTraining:
    """DP-SGD for one run: Poisson sampling, per-example clipping, noise and accounting around `optimizer`."""

    def __init__(self, plan: PrivacyPlan, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, processes: Processes = Processes(), method=None,
                 units: PrivacyUnits | None = None):
        from opacus.accountants import create_accountant
        from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

        self.plan = plan
        self.processes = processes
        self.method = method  # its own faster per-example gradients, where it has them
        self.units = units  # None: every row is its own unit
        # Data-parallel: each process Poisson-samples its own part of the training set (together: every example
        # with probability q, as in one process) and clips its examples; Opacus' distributed optimizer adds the noise
        # in the first process only and sums the processes' gradients, so the result is one process's DP-SGD step.
        self.examples = processes.share(range(plan.train_examples))
        self.parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        # Sampling and noise draw from the operating system's entropy, never from the run's recorded seed: anyone
        # who knew which examples were drawn, or the noise, could undo the protection.
        self.sampler = torch.Generator().manual_seed(secrets.randbits(63))
        noise = torch.Generator(device=device).manual_seed(secrets.randbits(63))
        optimizer_class = DistributedDPOptimizer if processes.parallel else DPOptimizer
        # Each process divides its part by its share of the expected batch; the distributed optimizer then averages.
        self.optimizer = optimizer_class(optimizer, noise_multiplier=plan.noise_multiplier,
                                         max_grad_norm=plan.max_grad_norm,
                                         expected_batch_size=plan.expected_batch_size / processes.world_size,
                                         loss_reduction="mean", generator=noise)
        self.accountant = create_accountant(plan.accountant)
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
        self.curve = EpsilonCurve(plan.noise_multiplier, plan.sample_rate, plan.delta, plan.steps, plan.accountant,
                                  plan.epsilon_error)

    def sample(self) -> list[list[int]]:
        """One logical batch: every unit (a training example, or a privacy unit's rows) independently with
        probability q (its size varies); of a unit with more than max_rows_per_unit rows, that many drawn at random."""
        drawn = torch.rand(len(self.examples), generator=self.sampler) < self.plan.sample_rate
        picked = [self.examples[i] for i in drawn.nonzero().flatten().tolist()]
        if self.units is None:
            return [[row] for row in picked]
        return [self._rows_of(unit) for unit in picked]

    def _rows_of(self, unit: int) -> list[int]:
        rows, most = self.units.rows[unit], self.units.max_rows
        if len(rows) <= most:
            return list(rows)
        chosen = torch.randperm(len(rows), generator=self.sampler)[:most]
        return [rows[i] for i in sorted(chosen.tolist())]

    def physical_batches(self, groups: list[list[int]],
                         batch_size: int) -> Iterator[tuple[list[int], list[int] | None]]:
        """The sampled rows in physical batches of at most `batch_size` rows, a unit's rows in one batch, each with
        the unit each row belongs to, numbered within the batch (None: every row is its own unit)."""
        rows: list[int] = []
        owners: list[int] = []
        for group in groups:
            if rows and len(rows) + len(group) > batch_size:
                yield rows, owners if self.units is not None else None
                rows, owners = [], []
            owners += [owners[-1] + 1 if owners else 0] * len(group)
            rows += group
        if rows:
            yield rows, owners if self.units is not None else None

    def step(self, model: torch.nn.Module, physical_batches: Iterable[Batch],
             loss_fn: LossFunction) -> tuple[float, int]:
        """Clip and accumulate each physical batch, then add the noise and step once; returns (loss sum, examples).
        A batch may name each row's unit (inputs, labels, owners): the units' gradients are then clipped.

        An empty logical batch (possible under Poisson sampling) still steps, with the noise alone."""
        loss_sum, examples = 0.0, 0
        pending = iter(physical_batches)
        batch = next(pending, None)
        while True:
            following = next(pending, None)
            if batch is None:
                grads = {name: p.new_zeros((0, *p.shape)) for name, p in self.parameters}
            else:
                inputs, labels, *owners = batch
                fast = self.method.per_example_gradients(model, inputs, labels, loss_fn) if self.method else None
                grads, losses = fast or per_example_gradients(model, inputs, labels, loss_fn)
                if owners and owners[0] is not None:
                    grads = per_unit_gradients(grads, owners[0])
                loss_sum += float(losses.sum())
                examples += len(losses)
            for name, parameter in self.parameters:
                parameter.grad_sample = grads[name]
            self.optimizer.signal_skip_step(do_skip=following is not None)  # the noise comes once, at the end
            before = self._values() if following is None else None
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if before is not None:
                self._require_changed(before)
                return loss_sum, examples
            batch = following

    def _values(self) -> list[torch.Tensor]:
        return [parameter.detach().clone() for _, parameter in self.parameters]

    def _require_changed(self, before: list[torch.Tensor]) -> None:
        """Stop when a noisy step left a trainable tensor as it was: the update never reached the model (DP
        libraries have lost updates silently, e.g. Opacus with some PEFT versions' LoRA layers), so the run would
        spend its budget and train nothing. The noise touches every coordinate, so a real step changes them all."""
        if not any(group["lr"] > 0 for group in self.optimizer.param_groups):
            return
        unchanged = [name for (name, parameter), old in zip(self.parameters, before)
                     if torch.equal(parameter.detach(), old)]
        if unchanged:
            shown = ", ".join(unchanged[:3]) + (f" and {len(unchanged) - 3} more" if len(unchanged) > 3 else "")
            raise PrivacyError(
                f"Private training stopped at step {self.steps_taken}: the noisy update did not change the trainable "
                f"tensor(s) {shown}, so the step trained nothing while spending privacy budget. The update was lost "
                "between the DP optimizer and the model (a known failure of some Opacus and peft versions); try "
                "another method, or update opacus and peft.")

    @property
    def steps_taken(self) -> int:
        return sum(count for _, _, count in self.accountant.history)

    def epsilon(self, live: bool = False) -> float:
        """ε spent so far (δ fixed by the plan); `live`: the fast per-step value (see EpsilonCurve.live)."""
        same_mechanism = all((sigma, rate) == (self.plan.noise_multiplier, self.plan.sample_rate)
                             for sigma, rate, _ in self.accountant.history)
        steps = self.steps_taken
        if steps == 0:
            return 0.0
        if same_mechanism and steps <= self.curve.max_steps:
            return self.curve.live(steps) if live else self.curve.epsilon(steps)
        with _quiet_accountants():
            return float(self.accountant.get_epsilon(delta=self.plan.delta, eps_error=self.plan.epsilon_error,
                                                     alphas=list(RDP_ORDERS)))

    def state_dict(self) -> dict:
        return {"accountant_history": [list(entry) for entry in self.accountant.history]}

    def load_state_dict(self, state: dict) -> None:
        """Continue the accounting of a resumed run where it stopped."""
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state["accountant_history"]]

    def record(self) -> dict:
        """What a finished run records about its privacy (metrics.json, the vector and merged-model metadata)."""
        plan = self.plan
        return {
            "epsilon_target": plan.epsilon_target, "epsilon_spent": self.epsilon(), "delta": plan.delta,
            "delta_source": plan.delta_source, "noise_multiplier": plan.noise_multiplier,
            "noise_source": plan.noise_source, "max_grad_norm": plan.max_grad_norm, "sample_rate": plan.sample_rate,
            "expected_batch_size": plan.expected_batch_size, "steps": self.steps_taken, "planned_steps": plan.steps,
            "accountant": plan.accountant, "epsilon_error": plan.epsilon_error, "train_examples": plan.train_examples,
            "sampling": "poisson",
            "opacus_version": opacus_version(),
            **(self.units.record() if self.units is not None else {}),
        }
