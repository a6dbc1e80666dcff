"""Human-readable report of an evaluation run: ``metrics.json``, ``report.md`` and PNG plots.

The evaluator produces one nested dict; this module only renders it. Methods are evaluated on
different subsets of protocols and groups (a baseline may have no cold cases, a model may skip
the sampled protocol), so every lookup tolerates a missing key and renders it as "–" instead of
failing: a partial report is more useful than none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

# Reports are written by headless jobs; never try to open a window.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

MISSING = "–"
GROUPS = ("cold", "warm")
KS = (5, 10, 20)
TABLE_COLUMNS = (
    "hit@10",
    "ndcg@10",
    "mrr",
    "recall@20",
    "coverage@10",
    "diversity@10",
    "novelty@10",
    "users",
)
DPI = 110
DEFAULT_NEGATIVES = 999

PROTOCOL_LABELS = {"full": "Full ranking", "sampled": "Sampled ranking"}
GROUP_LABELS = {"cold": "Cold-start users", "warm": "Warm users"}
GROUP_COLORS = {"cold": "#4C72B0", "warm": "#DD8452"}

METRIC_AT_K_PNG = "metric_at_k.png"
COLD_VS_WARM_PNG = "cold_vs_warm.png"
PER_DOMAIN_PNG = "per_domain.png"


def write_report(metrics: dict, out_dir: Path) -> list[Path]:
    """Write ``metrics.json``, ``report.md`` and the plots into ``out_dir``; return the paths.

    The JSON copy keeps the raw numbers next to the rendering so that a report can be
    re-drawn or compared later without re-running the evaluation.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    json_path = out_dir / "metrics.json"
    json_path.write_text(
        json.dumps(metrics, indent=2, sort_keys=True, default=_json_default) + "\n",
        encoding="utf-8",
    )

    headline = _mapping(metrics.get("methods"))
    sampled = _mapping(_mapping(metrics.get("sampled")).get("methods"))
    methods = _method_names(headline, sampled)
    colors = _method_colors(methods)
    dataset = str(metrics.get("dataset", "unknown dataset"))
    protocol = str(metrics.get("protocol", "full"))

    plots = [
        _plot_metric_at_k(headline, methods, colors, dataset, protocol, out_dir / METRIC_AT_K_PNG),
        _plot_cold_vs_warm(
            {protocol: headline, "sampled": sampled},
            methods,
            dataset,
            out_dir / COLD_VS_WARM_PNG,
        ),
        _plot_per_domain(headline, methods, colors, dataset, protocol, out_dir / PER_DOMAIN_PNG),
    ]

    report_path = out_dir / "report.md"
    report_path.write_text(_render_markdown(metrics, methods, plots), encoding="utf-8")
    return [json_path, report_path, *plots]


# --------------------------------------------------------------------------- lookups


def _json_default(value: Any) -> Any:
    """Numpy scalars/arrays and paths sneak into metric dicts; store them as plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one, so chained lookups never raise."""
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    """A finite float, or None for anything that cannot be shown as a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _stat(methods: Mapping[str, Any], method: str, group: str, key: str) -> float | None:
    return _number(_mapping(_mapping(methods.get(method)).get(group)).get(key))


def _domain_stat(
    methods: Mapping[str, Any], method: str, group: str, domain: str, key: str
) -> float | None:
    per_domain = _mapping(_mapping(_mapping(methods.get(method)).get(group)).get("per_domain"))
    return _number(_mapping(per_domain.get(domain)).get(key))


def _method_names(*method_maps: Mapping[str, Any]) -> list[str]:
    """Union of method names, headline order first, so every table lists the same rows."""
    names: list[str] = []
    for method_map in method_maps:
        for name in method_map:
            if name not in names:
                names.append(name)
    return names


def _groups(*method_maps: Mapping[str, Any]) -> list[str]:
    """Cold and warm first, then any further group an evaluator may add."""
    extra: set[str] = set()
    for method_map in method_maps:
        for stats in method_map.values():
            extra.update(k for k, v in _mapping(stats).items() if isinstance(v, Mapping))
    return [*GROUPS, *sorted(extra - set(GROUPS))]


def _domains(methods: Mapping[str, Any], groups: Iterable[str] = GROUPS) -> list[str]:
    found: set[str] = set()
    for stats in methods.values():
        for group in groups:
            found.update(_mapping(_mapping(_mapping(stats).get(group)).get("per_domain")))
    return sorted(found)


def _method_colors(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, shared by all plots so a method is recognisable across them."""
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(methods)}


# --------------------------------------------------------------------------- formatting


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def _fmt_count(value: Any) -> str:
    number = _number(value)
    return MISSING if number is None else str(int(round(number)))


def _fmt_text(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return MISSING
    return _escape(str(value))


def _escape(text: str) -> str:
    """Keep a name from breaking a markdown table row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _protocol_label(protocol: str) -> str:
    return PROTOCOL_LABELS.get(protocol, protocol)


def _group_label(group: str) -> str:
    return GROUP_LABELS.get(group, group)


# --------------------------------------------------------------------------- markdown


def _render_markdown(metrics: Mapping[str, Any], methods: list[str], plots: list[Path]) -> str:
    dataset = _fmt_text(metrics.get("dataset")) if metrics.get("dataset") else "unknown dataset"
    protocol = str(metrics.get("protocol", "full"))
    headline = _mapping(metrics.get("methods"))
    sampled_block = _mapping(metrics.get("sampled"))
    sampled = _mapping(sampled_block.get("methods"))
    negatives = _fmt_count(sampled_block.get("negatives", DEFAULT_NEGATIVES))

    lines = [
        f"# Evaluation report: {dataset}",
        "",
        "Each evaluation case hides a user's last event in a target domain and asks every "
        "method to rank that domain's items; the hidden item is the one to find.",
        "",
        "- **cold**: the evaluation users' earlier target-domain events are removed, so "
        "recommendations come from their other domains alone.",
        "- **warm**: the full history is kept; the last event is the target.",
        "",
        "Two ranking protocols are reported:",
        "",
        "- **full** (the headline): every item of the target domain is ranked, with the "
        "user's history masked out.",
        f"- **sampled**: the target is ranked among {negatives} items drawn uniformly from its "
        "domain; comparable with published sampled-metric results, but optimistic.",
        "",
        "Metrics are averaged over evaluation cases; `users` is the number of cases. "
        f"A {MISSING} marks a value that was not evaluated.",
        "",
    ]

    protocols = [(protocol, headline)]
    if protocol != "sampled":
        protocols.append(("sampled", sampled))
    for name, method_map in protocols:
        title = _protocol_label(name)
        if name == protocol:
            title += " (headline)"
        elif name == "sampled":
            title += f" ({negatives} negatives)"
        lines += [f"## {title}", ""]
        if not method_map:
            lines += ["Not evaluated.", ""]
            continue
        for group in _groups(method_map):
            lines += [f"### {_group_label(group)}", ""]
            lines += _table(
                ["method", *TABLE_COLUMNS],
                (_method_row(method_map, method, group) for method in methods),
            )
            lines.append("")

    lines += _comparison_section(protocols)
    lines += _fusion_section(_mapping(_mapping(metrics.get("meta")).get("training")))
    lines += _per_domain_section(headline, methods, protocol)
    lines += _reference_section(metrics, sampled, negatives)
    lines += _streaming_section(_mapping(metrics.get("streaming")))

    lines += ["## Plots", ""]
    for path in plots:
        lines += [f"![{path.stem.replace('_', ' ')}]({path.name})", ""]

    lines += _meta_section(_mapping(metrics.get("meta")))
    return "\n".join(lines).rstrip("\n") + "\n"


def _method_row(method_map: Mapping[str, Any], method: str, group: str) -> list[str]:
    stats = _mapping(_mapping(method_map.get(method)).get(group))
    cells = [_escape(method)]
    for column in TABLE_COLUMNS:
        if column == "users":
            cells.append(_fmt_count(stats.get(column)))
        else:
            cells.append(_fmt(_number(stats.get(column))))
    return cells


def _comparison_section(protocols: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The trained model against the best other method, with the paired bootstrap interval."""
    rows = []
    for protocol, method_map in protocols:
        trained = _mapping(method_map.get("trained"))
        for group in GROUPS:
            versus = _mapping(_mapping(trained.get(group)).get("vs_best_other"))
            interval = versus.get("ci95")
            if not versus or not isinstance(interval, Sequence) or len(interval) != 2:
                continue
            lower, upper = _number(interval[0]), _number(interval[1])
            verdict = "above" if (lower or 0) > 0 else "below" if (upper or 0) < 0 else "tied"
            rows.append(
                [
                    protocol,
                    group,
                    _escape(str(versus.get("method"))),
                    _fmt(_number(versus.get("difference"))),
                    f"[{_fmt(lower)}, {_fmt(upper)}]",
                    verdict,
                ]
            )
    if not rows:
        return []
    return [
        "## Trained against the best other method (NDCG@10)",
        "",
        "The difference is trained − the best other method by mean NDCG@10, per user; the "
        "interval is a paired bootstrap over users (2,000 resamples, 95%). *above* means the "
        "whole interval is above 0.",
        "",
        *_table(["protocol", "group", "best other", "difference", "95% interval", "trained"], rows),
        "",
    ]


def _chosen_by(slot: Mapping[str, Any]) -> str:
    """How a slot's weight was chosen, in words (records before the rule say nothing: best)."""
    where = "its own users" if slot.get("fitted_on", "slot") == "slot" else "its group's users"
    if slot.get("rule") == "one_standard_error":
        best = _fmt(_number(slot.get("best_weight")))
        return f"{where}: nearest 1 within one standard error (best {best})"
    return f"best on {where}"


def _fusion_section(training: Mapping[str, Any]) -> list[str]:
    """How the trained model's two towers were weighed (``stream.model.fusion``), if fused."""
    weights = _mapping(_mapping(training.get("fusion")).get("weights"))
    if not weights:
        return []
    rows = []
    for domain, slots in weights.items():
        for group in GROUPS:
            slot = _mapping(_mapping(slots).get(group))
            if slot:
                rows.append(
                    [
                        _escape(str(domain)),
                        group,
                        _fmt(_number(slot.get("weight"))),
                        _fmt_count(slot.get("users")),
                        _chosen_by(slot),
                    ]
                )
    return [
        "## The trained model's towers",
        "",
        "`trained` adds two towers' scores: the text-transfer tower (listed alone as "
        "`text_tower`, an ablation, not one of its rivals) and an ID-sequence tower (the "
        "`sasrec` row, when that method is evaluated). Each is trained on the same examples "
        "with its own early stopping; the ID tower's score is weighed per target domain and "
        "per group (cold: no history in the target domain) by the weight that ranked its "
        "held-out users best; a slot with too few of them is fitted on its group's users in "
        "every domain, with the weight nearest the plain sum (1) within one standard error "
        "of the best.",
        "",
        *_table(["target domain", "group", "ID-tower weight", "held-out users", "chosen by"], rows),
        "",
    ]


def _per_domain_section(
    headline: Mapping[str, Any], methods: list[str], protocol: str
) -> list[str]:
    domains = _domains(headline, _groups(headline))
    lines = [f"## NDCG@10 per target domain ({_protocol_label(protocol).lower()})", ""]
    if not domains:
        return [*lines, "No per-domain results.", ""]
    for group in _groups(headline):
        lines += [f"### {_group_label(group)}", ""]
        rows = (
            [
                _escape(method),
                *(_fmt(_domain_stat(headline, method, group, d, "ndcg@10")) for d in domains),
            ]
            for method in methods
        )
        lines += _table(["method", *(_escape(d) for d in domains)], rows)
        lines.append("")
    return lines


def _reference_section(
    metrics: Mapping[str, Any], sampled: Mapping[str, Any], negatives: str
) -> list[str]:
    """Our sampled-protocol numbers next to reference ones, to check the baselines are sane."""
    reference = _mapping(metrics.get("reference"))
    if not reference:
        return []
    splits = {str(s) for s in _mapping(metrics.get("meta")).get("splits") or ()}
    lines = [
        "## Comparison with reference results",
        "",
        f"Ours: sampled protocol ({negatives} negatives), per target domain, over all "
        "evaluated splits.",
        "",
    ]
    rows: list[list[str]] = []
    unmatched = False
    for cell in sorted(reference):
        split, _, domain = cell.rpartition("/")
        label = _escape(cell)
        if split and splits and split not in splits:
            label += " †"
            unmatched = True
        for method, ref in _mapping(reference[cell]).items():
            ref_stats = _mapping(ref)
            for metric, aliases in (("hit@10", ("hit@10", "hr@10")), ("ndcg@10", ("ndcg@10",))):
                ref_value = next((_number(ref_stats[a]) for a in aliases if a in ref_stats), None)
                rows.append(
                    [
                        label,
                        _escape(str(method)),
                        "HR@10" if metric == "hit@10" else "NDCG@10",
                        _fmt(ref_value),
                        *(
                            _fmt(_domain_stat(sampled, str(method), g, domain, metric))
                            for g in GROUPS
                        ),
                    ]
                )
    lines += _table(
        ["split/domain", "method", "metric", "reference", "ours (cold)", "ours (warm)"], rows
    )
    lines.append("")
    if unmatched:
        lines += ["† this split was not among the evaluated splits.", ""]
    return lines


def _streaming_section(streaming: Mapping[str, Any]) -> list[str]:
    """The running system's own figures, scored from what it published (top-K only)."""
    if not streaming:
        return []
    keys = ("hit@10", "ndcg@10", "hit@20", "ndcg@20")
    lines = [
        "## Streaming (test-then-learn) evaluation",
        "",
        "The evaluation users' events replayed through the broker into a worker; each target is "
        "scored against the recommendation the worker published after the user's previous "
        "event. Only the top items are published, so there is no MRR.",
        "",
    ]
    rows = []
    for group in sorted(streaming):
        entry = _mapping(streaming[group])
        rows.append(
            [_group_label(group)]
            + [_fmt(_number(entry.get(key))) for key in keys]
            + [_fmt_count(entry.get("users")), _fmt_count(entry.get("missing_recommendations"))]
        )
    lines += _table(["group", *keys, "users", "missing recs"], rows)
    lines.append("")
    return lines


def _meta_section(meta: Mapping[str, Any]) -> list[str]:
    seconds = _number(meta.get("seconds"))
    splits = meta.get("splits")
    if isinstance(splits, str | bytes) or not isinstance(splits, Iterable):
        splits_text = _fmt_text(splits)
    else:
        splits_text = _fmt_text(", ".join(str(s) for s in splits))
    cases = _mapping(meta.get("cases"))
    cases_text = (
        ", ".join(f"{_escape(str(g))}: {_fmt_count(n)}" for g, n in cases.items())
        if cases
        else MISSING
    )
    return [
        "## Run",
        "",
        f"- generated at: {_fmt_text(meta.get('generated_at'))}",
        f"- duration: {MISSING if seconds is None else f'{seconds:.1f} s'}",
        f"- encoder: {_fmt_text(meta.get('encoder'))}",
        f"- splits: {splits_text}",
        f"- cases: {cases_text}",
        "",
    ]


# --------------------------------------------------------------------------- plots


def _save(fig: Any, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _empty_panel(ax: Axes, text: str = "not evaluated") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xticks([])  # y ticks stay: the y axis may be shared with a panel that has data


def _plot_metric_at_k(
    headline: Mapping[str, Any],
    methods: list[str],
    colors: Mapping[str, Any],
    dataset: str,
    protocol: str,
    path: Path,
) -> Path:
    """NDCG@K (solid) and hit@K (dashed) against K: how fast quality grows with list length."""
    fig, axes = plt.subplots(1, len(GROUPS), figsize=(11, 4.5), sharey=True, layout="constrained")
    drawn: list[str] = []
    for ax, group in zip(axes, GROUPS, strict=True):
        any_line = False
        for method in methods:
            for metric, style in (("ndcg", "-"), ("hit", "--")):
                values = [_stat(headline, method, group, f"{metric}@{k}") for k in KS]
                if all(v is None for v in values):
                    continue
                ys = [math.nan if v is None else v for v in values]
                ax.plot(KS, ys, style, marker="o", color=colors[method])
                any_line = True
                if method not in drawn:
                    drawn.append(method)
        ax.set_title(_group_label(group))
        if not any_line:
            _empty_panel(ax)
            continue
        ax.set_xticks(KS)
        ax.set_xlabel("K (list length)")
        ax.grid(alpha=0.3)
    # After all panels are drawn: the y axis is shared, so an earlier limit would clip one.
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("score")
    handles = [Line2D([], [], color=colors[m], marker="o", label=m) for m in drawn]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="NDCG@K"),
        Line2D([], [], color="black", linestyle="--", label="hit@K"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{dataset}: NDCG@K and hit@K, {_protocol_label(protocol).lower()}")
    return _save(fig, path)


def _plot_cold_vs_warm(
    protocols: Mapping[str, Mapping[str, Any]],
    methods: list[str],
    dataset: str,
    path: Path,
) -> Path:
    """NDCG@10 cold vs warm per method: the gap is what target-domain history is worth."""
    width = max(8.0, 1.2 * len(methods) * len(protocols))
    fig, axes = plt.subplots(1, len(protocols), figsize=(width, 4.5), layout="constrained")
    axes = [axes] if len(protocols) == 1 else list(axes)
    bar_width = 0.8 / len(GROUPS)
    for ax, (protocol, method_map) in zip(axes, protocols.items(), strict=True):
        ax.set_title(_protocol_label(protocol))
        names = [m for m in methods if m in method_map]
        if not names:
            _empty_panel(ax)
            continue
        for i, group in enumerate(GROUPS):
            offset = (i - (len(GROUPS) - 1) / 2) * bar_width
            xs, ys = [], []
            for x, method in enumerate(names):
                value = _stat(method_map, method, group, "ndcg@10")
                if value is None:
                    ax.text(x + offset, 0, MISSING, ha="center", va="bottom", fontsize=8)
                else:
                    xs.append(x + offset)
                    ys.append(value)
            bars = ax.bar(
                xs, ys, bar_width, label=_group_label(group), color=GROUP_COLORS.get(group)
            )
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_xlabel("method")
        ax.set_ylabel("NDCG@10")
        ax.set_ylim(bottom=0)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{dataset}: NDCG@10, cold vs warm")
    return _save(fig, path)


def _plot_per_domain(
    headline: Mapping[str, Any],
    methods: list[str],
    colors: Mapping[str, Any],
    dataset: str,
    protocol: str,
    path: Path,
) -> Path:
    """NDCG@10 per target domain: an average can hide a domain where a method fails."""
    domains = _domains(headline)
    names = [m for m in methods if m in headline]
    width = max(10.0, 0.5 * max(1, len(domains)) * max(1, len(names)) * len(GROUPS))
    fig, axes = plt.subplots(
        1, len(GROUPS), figsize=(min(width, 24.0), 4.8), sharey=True, layout="constrained"
    )
    bar_width = 0.8 / max(1, len(names))
    drawn: list[str] = []
    for ax, group in zip(axes, GROUPS, strict=True):
        ax.set_title(_group_label(group))
        any_bar = False
        for i, method in enumerate(names):
            offset = (i - (len(names) - 1) / 2) * bar_width
            xs, ys = [], []
            for x, domain in enumerate(domains):
                value = _domain_stat(headline, method, group, domain, "ndcg@10")
                if value is not None:
                    xs.append(x + offset)
                    ys.append(value)
            if xs:
                ax.bar(xs, ys, bar_width, color=colors[method])
                any_bar = True
                if method not in drawn:
                    drawn.append(method)
        if not any_bar:
            _empty_panel(ax)
            continue
        ax.set_xticks(range(len(domains)), domains, rotation=20, ha="right")
        ax.set_xlabel("target domain")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("NDCG@10")
    if drawn:
        handles = [Patch(color=colors[m], label=m) for m in drawn]
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{dataset}: NDCG@10 per target domain, {_protocol_label(protocol).lower()}")
    return _save(fig, path)
