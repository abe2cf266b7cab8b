"""The search of ``--max-drop``: the cheapest candidate whose measured mIoU drop stays within budget.

A candidate is (method, the k most sensitive units kept in float). The search knows nothing about
ONNX: a *space* ranks units per method and builds a candidate's artifact, a *score* function measures
it on the held-out frames. Per method it measures k = 0 first, then gallops (k = 1, 2, 4, ...) to the
first passing k and bisects back to the smallest passing k (assuming that keeping more of the most
sensitive units in float never hurts, which the report lets one check). Candidates whose cost proxy
(multiply-accumulates left in float) cannot beat a passing candidate already found are skipped and
listed as such. The finalists (the smallest passing k of every method) are then timed side by side.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from runtime.errors import ToolkitError

TIME_TIE = 0.03            # finalists within 3 % of the fastest tie: fewer float MACs, then higher agreement win
FLOAT_GAIN = 0.04          # a unit is "faster in float" when that alone saves more than 4 % of the CPU time


@dataclass
class Candidate:
    method: str
    keep: tuple[str, ...]
    float_macs: float
    path: Path | None = None
    miou: float | None = None
    drop: float | None = None
    agreement: float | None = None
    ms_per_tile: float | None = None
    passed: bool | None = None
    note: str = ""
    timed_ms: float | None = None
    kind: str = "PTQ"            # PTQ: calibrated only; QAT: fine-tuned with fake quantization (export.budget.qat)
    pareto: bool = False         # on the accuracy / CPU-time front of the measured candidates

    @property
    def k(self) -> int:
        return len(self.keep)

    @property
    def label(self) -> str:
        return f"{'QAT ' if self.kind == 'QAT' else ''}{self.method}, {self.k} float"

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "pareto": self.pareto, "method": self.method, "float_units": list(self.keep), "k": self.k, "float_macs": self.float_macs,
                "miou": self.miou, "drop": self.drop, "agreement": self.agreement, "ms_per_tile": self.ms_per_tile,
                "timed_ms_per_tile": self.timed_ms, "passed": self.passed, "note": self.note}


class Space(Protocol):
    methods: Sequence[str]

    def ranking(self, method: str) -> list[Any]: ...        # units, most sensitive first (.name, .macs)

    def build(self, method: str, keep: Sequence[str]) -> Path: ...

    def max_keep(self, method: str) -> int: ...


@dataclass
class SearchResult:
    budget: float
    candidates: list[Candidate] = field(default_factory=list)
    finalists: list[Candidate] = field(default_factory=list)
    rankings: dict[str, list[Any]] = field(default_factory=dict)

    def best_drop(self) -> Candidate | None:
        measured = [c for c in self.candidates if c.drop is not None]
        return min(measured, key=lambda c: (c.drop, c.float_macs)) if measured else None

    def best_passing(self) -> Candidate | None:
        passing = [c for c in self.candidates if c.passed]
        return min(passing, key=lambda c: (c.float_macs, c.drop)) if passing else None


class _Run:
    """One search: evaluates candidates, keeps the bar's 'best drop' up to date."""

    def __init__(self, space: Space, score: Callable[[Path], dict], budget: float, bar: Any) -> None:
        self.space, self.score, self.bar = space, score, bar
        self.result = SearchResult(budget)
        self.seen: dict[tuple[str, int], Candidate] = {}

    def keep_of(self, method: str, k: int) -> tuple[tuple[str, ...], float]:
        units = self.result.rankings.get(method, [])[:k]
        return tuple(u.name for u in units), float(sum(u.macs for u in units))

    def evaluate(self, method: str, k: int) -> Candidate:
        if (method, k) in self.seen:
            return self.seen[(method, k)]
        keep, macs = self.keep_of(method, k)
        cand = Candidate(method, keep, macs)
        bound = self.result.best_passing()
        if bound is not None and macs >= bound.float_macs and k > 0:
            cand.note = f"keeps at least as much float as the passing {bound.label}"
        else:
            cand.path = self.space.build(method, keep)
            row = self.score(cand.path)
            cand.miou, cand.drop, cand.agreement = row.get("miou"), row.get("drop"), row.get("agreement")
            cand.ms_per_tile = row.get("ms_per_tile")
            cand.note = row.get("error") or ""
            cand.passed = cand.drop is not None and not cand.note and cand.drop <= self.result.budget + 1e-9
        self.seen[(method, k)] = cand
        self.result.candidates.append(cand)
        self._tick(cand)
        return cand

    def _tick(self, cand: Candidate) -> None:
        best = self.result.best_passing() or self.result.best_drop()
        if best is not None and best.drop is not None:
            state = "pass" if best.passed else "over budget"
            self.bar.set_postfix_str(f"best drop {best.drop:+.3f} ({best.label}, {state})", refresh=False)
        self.bar.update(1)


def search(space: Space, score: Callable[[Path], dict], budget: float, progress: bool = True,
           log: Callable[[str], None] = print) -> SearchResult:
    """Run the search; the result lists every candidate (tried or skipped) and the finalists."""
    from tqdm import tqdm

    with tqdm(desc=f"precision search (max drop {budget:g})", unit="cand", disable=None if progress else True) as bar:
        run = _Run(space, score, budget, bar)
        for method in space.methods:
            run.result.rankings.setdefault(method, [])
            run.evaluate(method, 0)
        order = sorted(space.methods, key=lambda m: _drop_key(run.seen[(m, 0)]))
        for method in order:
            if run.seen[(method, 0)].passed:
                continue
            first_pass = _gallop(run, method)
            if first_pass is not None:
                _bisect(run, method, *first_pass)
    result = run.result
    for method in space.methods:
        passing = [c for (m, _k), c in run.seen.items() if m == method and c.passed]
        if passing:
            result.finalists.append(min(passing, key=lambda c: (c.k, c.drop)))
    return result


def _drop_key(c: Candidate) -> float:
    return c.drop if c.drop is not None else math.inf


def _gallop(run: _Run, method: str) -> tuple[int, int] | None:
    """(last failing k, first passing k) on k = 1, 2, 4, ..., max_keep; None when none passes."""
    bound = run.result.best_passing()
    if bound is not None and bound.float_macs <= 0:      # nothing in float already passes: no ranking needed
        return None
    if run.space.max_keep(method) < 1:                  # --max-float-layers 0: no float set to rank
        return None
    run.result.rankings[method] = list(run.space.ranking(method))
    kmax = min(run.space.max_keep(method), len(run.result.rankings[method]))
    lo, k = 0, 1
    while k <= kmax:
        cand = run.evaluate(method, k)
        if cand.passed:
            return lo, k
        if cand.passed is None or k == kmax:     # skipped by the bound: a larger k cannot win either
            return None
        lo, k = k, min(2 * k, kmax)
    return None


def _bisect(run: _Run, method: str, lo: int, hi: int) -> None:
    """Smallest passing k in (lo, hi]; lo fails, hi passes."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand = run.evaluate(method, mid)
        if cand.passed:
            hi = mid
        elif cand.passed is None:
            return
        else:
            lo = mid


def choose(finalists: Sequence[Candidate], timer: Callable[[list[Path]], list[float]] | None,
           by: str = "time") -> tuple[Candidate, str]:
    """The winner among the finalists and why. ``by="time"``: the fastest measured (ties within 3 %
    go to fewer float MACs, then the higher agreement); ``by="proxy"``: the fewest float MACs."""
    if not finalists:
        raise ValueError("choose() needs at least one finalist")
    if timer is not None and len(finalists) > 1:
        for cand, ms in zip(finalists, timer([c.path for c in finalists])):
            cand.timed_ms = ms
    if by == "time" and all(c.timed_ms is not None for c in finalists) and len(finalists) > 1:
        fastest = min(c.timed_ms for c in finalists)
        tied = [c for c in finalists if c.timed_ms <= fastest * (1 + TIME_TIE)]
        win = min(tied, key=_tie_key)
        why = (f"fastest measured on CPU ({win.timed_ms:.1f} ms/tile; finalists within {100 * TIME_TIE:.0f} % "
               f"of the fastest count as a tie, broken by fewer float MACs, then higher pixel agreement: "
               f"the finer measure, a drop can be negative by chance)")
        return win, why
    win = min(finalists, key=_tie_key)
    reason = ("the only finalist (the smallest passing float set of its method; no other method produced a "
              "passing candidate that could be cheaper)") if len(finalists) == 1 else \
        "fewest multiply-accumulates left in float"
    return win, reason + (" (cost proxy)" if by == "proxy" else "")


@dataclass
class FloatForSpeed:
    """Units kept float because the CPU runs the model faster so (before any accuracy is asked)."""

    ratios: dict[str, float]           # unit -> time with it alone float / time with nothing float
    second: dict[str, float]           # the same, timed again (longer) for the units that looked faster
    chosen: list[str]
    together: float | None             # time with all of ``chosen`` float / nothing float
    note: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def faster_in_float(ratios: dict[str, float], confirm: Callable[[list[str]], float],
                    gain: float = FLOAT_GAIN, most: int = 8) -> FloatForSpeed:
    """Which units to keep float for speed alone.

    ``ratios`` holds each unit's time ratio when it alone is float (all else quantised); the (at most
    ``most``) units below ``1 - gain`` are timed again, alone, by ``confirm([unit])`` (a second,
    longer measurement: one short timing can be luck on a shared CPU), and those below ``1 - gain``
    again are kept. Their set is timed together last; when together they are not faster by ``gain``
    only the fastest one is kept. Keeping a unit float never costs accuracy, so this only narrows what
    the search has to quantise.
    """
    fast = [n for _r, n in sorted((r, n) for n, r in ratios.items() if r < 1.0 - gain)][:most]
    second = {n: confirm([n]) for n in fast}
    kept = [n for n in fast if second[n] < 1.0 - gain]
    together = second[kept[0]] if len(kept) == 1 else (confirm(kept) if kept else None)
    if len(kept) > 1 and together is not None and together >= 1.0 - gain:
        kept = [min(kept, key=second.__getitem__)]
        together = second[kept[0]]
    if kept:
        note = f"{', '.join(kept)} float: {together:.3f}x the time of nothing float"
    elif fast:
        note = f"not confirmed by a second timing: {', '.join(fast)} seemed faster in float"
    else:
        note = "no unit is faster in float"
    return FloatForSpeed(ratios, second, kept, together, note)


def _tie_key(c: Candidate) -> tuple[float, float, float]:
    return (c.float_macs, -(c.agreement if c.agreement is not None else -1.0), c.drop if c.drop is not None else 0.0)


def explain(result: SearchResult, win: Candidate) -> str:
    """What the cheaper candidates did: the other half of why the winner won."""
    cheaper = [c for c in result.candidates if c.drop is not None and not c.passed and c.float_macs <= win.float_macs]
    if not cheaper:
        return "no candidate with less float was over budget"
    best = min(cheaper, key=lambda c: c.drop)
    return (f"{len(cheaper)} candidate(s) with at most as much float went over budget (closest: {best.label}, "
            f"drop {best.drop:+.3f} > {result.budget:g})")


def unmet_budget(result: SearchResult, what: str, fix: str) -> ToolkitError:
    """The error of a budget that no candidate meets, with the best candidate's figures."""
    best = result.best_drop()
    found = "no candidate could be measured" if best is None else (
        f"best candidate {best.label} (float: {', '.join(best.keep) or 'nothing'}): drop {best.drop:+.3f} "
        f"mIoU points, agreement {100 * (best.agreement or 0):.3f} %, {len(result.candidates)} candidates tried")
    return ToolkitError(f"no {what} candidate stays within --max-drop {result.budget:g} mIoU points; "
                        "nothing was written", found=found, fix=fix)
