"""Plot the load generator's results file as SVG.

    python3 benches/loadgen/plot.py RESULTS.json [OUTDIR]
    python3 benches/loadgen/plot.py --selftest OUTDIR

Reads the JSON results the load generator (`uprtcd-load`) writes and puts these SVG files in
OUTDIR (by default the directory of RESULTS.json):

  egress.svg       egress packets/s against load, one panel per scenario, one line per run,
                   with the raw kernel send rate (best sendmmsg and GSO row) dashed
  cpu.svg          CPU microseconds per forwarded packet against load: whole SFU process
                   (solid) and worker threads (dotted)
  latency_cdf.svg  each run's latency CDF (its heaviest step within the loss limit), p99 marked
  loss.svg         loss fraction against load, with the 0.1 % threshold
  join_time.svg    time from a viewer's join to its first media packet: per fan-out step the
                   probes' p50 and p99, and each storm's CDF (connected and first media)

Load is subscribers, or publishers × subscribers in the conference scenario; a storm's windows
are not a load series, so storms appear only in latency_cdf.svg and join_time.svg. Any field may be
missing or null where a run could not measure it: what exists is plotted, the rest is skipped,
and a plot with nothing to show is not written (a note goes to stderr).

--selftest plots a built-in synthetic results set (two uprtcd runs, one Janus run, a storm, raw
rows, some fields missing) into OUTDIR, checks that the four SVGs were written and parse, and checks
that empty or malformed results are skipped without an error.
"""

import argparse
import json
import math
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SCENARIOS = ("fanout", "conference", "live-across-workers")
# Scenarios whose steps are phases of one load, not a series of loads: a storm's windows, and
# the mirror scenario's configurations (one node, meters, split) of each audience.
PHASED = ("storm", "mirror")
UNKNOWN_SCENARIO = "scenario not recorded"
RAW_LABELS = {"sendmmsg": "raw sendmmsg", "gso": "raw GSO"}
RAW_COLORS = {"raw sendmmsg": "0.25", "raw GSO": "tab:brown"}
LOSS_FLOOR = 1e-6
LOSS_THRESHOLD = 1e-3
PLOTS = ("egress.svg", "egress_per_core.svg", "cpu.svg", "latency_cdf.svg", "loss.svg", "join_time.svg")
# The target for one worker core: 500,000 egress SRTP packets/s.
PER_CORE_TARGET = 500_000

plt.rcParams.update(
    {
        "svg.hashsalt": "uprtcd-loadgen",  # stable element ids: the same results give the same file
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.8,
        "lines.markersize": 5,
        "legend.fontsize": 9,
    }
)


def num(obj, key):
    """obj[key] as a finite float; None if obj is no dict or the value is missing, null or not a number."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def text(obj, key):
    """obj[key] if it is a non-empty string, else None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def dicts(value):
    """The dict items of value if it is a list, else nothing."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def short(value):
    """A compact number for a tick label: 1500 -> 1.5k, 2000000 -> 2M."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:g}{suffix}"
    return f"{value:g}"


@dataclass
class Run:
    label: str
    scenario: str
    steps: list
    cdf: list  # (latency µs, cumulative fraction), sorted by latency
    style: dict  # colour and marker, the same in every plot

    def load(self, step):
        """The x of a step: subscribers, or publishers × subscribers in a conference."""
        subscribers = num(step, "subscribers")
        if self.scenario != "conference" or subscribers is None:
            return subscribers
        publishers = num(step, "publishers")
        return None if publishers is None else publishers * subscribers

    def points(self, key, keep=lambda y: True):
        """(load, step[key]) for the steps where both exist, load > 0 and keep(value), by load."""
        out = []
        for step in self.steps:
            x, y = self.load(step), num(step, key)
            if x is not None and x > 0 and y is not None and keep(y):
                out.append((x, y))
        return sorted(out)


def cdf_of(run):
    """The run's latency_cdf as sorted (µs, fraction) pairs, dropping malformed or non-positive points."""
    points = []
    for point in run.get("latency_cdf") if isinstance(run.get("latency_cdf"), list) else []:
        pair = dict(enumerate(point)) if isinstance(point, list) and len(point) == 2 else {}
        x, fraction = num(pair, 0), num(pair, 1)
        if x is not None and x > 0 and fraction is not None:
            points.append((x, fraction))
    return sorted(points)


def runs_of(results):
    """The results' runs in file order. A label is unique within its scenario (a repeat gets #2,
    #3...); the same label in several scenarios means the same configuration, so it keeps one
    colour and one legend entry across the panels."""
    runs, labels, colors = [], set(), {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run in enumerate(dicts(results.get("runs"))):
        scenario = text(run, "scenario") or UNKNOWN_SCENARIO
        label = text(run, "label") or " ".join(
            part
            for part in (
                text(run, "sfu"),
                text(run, "backend"),
                f"×{num(run, 'workers'):g}" if num(run, "workers") is not None else None,
            )
            if part
        ) or f"run {index + 1}"
        base, copy = label, 2
        while (scenario, label) in labels:
            label, copy = f"{base} #{copy}", copy + 1
        labels.add((scenario, label))
        color = colors.setdefault(label, palette[len(colors) % len(palette)])
        style = {"color": color, "marker": {"uprtcd": "o", "janus": "s"}.get(text(run, "sfu"), "^")}
        runs.append(Run(label, scenario, dicts(run.get("steps")), cdf_of(run), style))
    return runs


def raw_lines(results, key="packets_per_second"):
    """(label, packets/s) per raw send mode, the best row of each mode, read from `key`."""
    best = {}
    for row in dicts(results.get("raw")):
        mode, pps = (text(row, "mode") or "").lower(), num(row, key)
        if mode and pps is not None and pps > 0:
            label = RAW_LABELS.get(mode, f"raw {mode}")
            best[label] = max(pps, best.get(label, 0.0))
    return sorted(best.items(), key=lambda item: -item[1])


def subtitle(results):
    """The machine and start time, as one line."""
    machine = results.get("machine") if isinstance(results.get("machine"), dict) else {}
    cpus = num(machine, "cpus")
    parts = (
        f"{cpus:g} CPUs" if cpus is not None else None,
        text(machine, "cpu_model"),
        f"Linux {text(machine, 'kernel')}" if text(machine, "kernel") else None,
        f"started {text(results, 'started')}" if text(results, "started") else None,
    )
    return " · ".join(part for part in parts if part)


def log_axis(ax, which):
    """Log scale on ax's "x" or "y" axis with compact tick labels; minor ticks are labelled too
    when the view spans too few decades for the decade labels alone to read it."""
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))

    def minor(value, _):
        low, high = sorted(axis.get_view_interval())
        mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
        shown = range(2, 10) if high / low < 4 else (2, 5) if high / low < 30 else ()
        return short(value) if mantissa in shown else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def by_scenario(runs, series):
    """{scenario: [(run, data)]} for the runs where series(run) is non-empty, scenarios in order."""
    panels = {}
    for run in runs:
        if run.scenario in PHASED:
            continue
        data = series(run)
        if data:
            panels.setdefault(run.scenario, []).append((run, data))
    order = {name: i for i, name in enumerate(SCENARIOS)}
    return dict(sorted(panels.items(), key=lambda item: order.get(item[0], len(order))))


def panel_figure(results, title, panels, ylabel):
    """A figure with one panel per scenario (shared y), titled and labelled; returns (fig, axes)."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(1.5 + 4.8 * len(panels), 5.4), sharey=True, squeeze=False, layout="constrained"
    )
    axes = list(axes[0])
    fig.suptitle(f"{title}\n{subtitle(results)}".strip(), fontsize=12)
    for ax, scenario in zip(axes, panels):
        ax.set_title(scenario)
        ax.set_xlabel("publishers × subscribers" if scenario == "conference" else "subscribers")
        log_axis(ax, "x")
    axes[0].set_ylabel(ylabel)
    return fig, axes


def save(fig, outdir, name, runs, extra_handles=()):
    """Add the figure's legend below it (each label once, runs in file order, then reference
    lines), write the SVG, close the figure."""
    handles = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    for handle in extra_handles:
        handles.setdefault(handle.get_label(), handle)
    order = {}
    for run in runs:
        order.setdefault(run.label, len(order))
    labels = sorted(handles, key=lambda label: order.get(label, len(order)))
    fits = int(fig.get_figwidth() / (0.075 * (max(map(len, labels)) + 8)))  # columns of the longest label at 9 pt
    ncols = max(1, min(3, len(labels), fits))
    fig.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=ncols)
    path = outdir / name
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    print(f"wrote {path}")
    return True


def skipped(name, why):
    print(f"skipped {name}: {why}", file=sys.stderr)
    return False


def plot_egress(results, runs, outdir):
    panels = by_scenario(runs, lambda run: run.points("egress_pps", keep=lambda y: y > 0))
    if not panels:
        return skipped("egress.svg", "no step has egress_pps")
    fig, axes = panel_figure(results, "Egress packets per second", panels, "egress packets/s")
    raws = raw_lines(results)
    for ax, items in zip(axes, panels.values()):
        for run, points in items:
            ax.plot(*zip(*points), label=run.label, **run.style)
        for label, pps in raws:
            ax.axhline(pps, linestyle="--", linewidth=1.4, color=RAW_COLORS.get(label, "0.5"), label=label)
    log_axis(axes[0], "y")
    return save(fig, outdir, "egress.svg", runs)


def plot_egress_per_core(results, runs, outdir):
    """What a fully busy forwarding core would send at each step's cost per packet, beside
    the raw sender's packets per core-second and the per-core target."""
    panels = by_scenario(runs, lambda run: run.points("egress_pps_per_core", keep=lambda y: y > 0))
    if not panels:
        return skipped("egress_per_core.svg", "no step has egress_pps_per_core")
    fig, axes = panel_figure(results, "Egress packets per second per forwarding core", panels, "egress packets/s per core")
    raws = raw_lines(results, "packets_per_core_second")
    for ax, items in zip(axes, panels.values()):
        for run, points in items:
            ax.plot(*zip(*points), label=run.label, **run.style)
        for label, pps in raws:
            ax.axhline(pps, linestyle="--", linewidth=1.4, color=RAW_COLORS.get(label, "0.5"), label=label)
        ax.axhline(PER_CORE_TARGET, linestyle=":", linewidth=1.4, color="tab:red", label="target 500k per core")
    log_axis(axes[0], "y")
    return save(fig, outdir, "egress_per_core.svg", runs)


def plot_cpu(results, runs, outdir):
    def series(run):
        process, worker = run.points("cpu_us_per_packet"), run.points("worker_cpu_us_per_packet")
        return (process, worker) if process or worker else None

    panels = by_scenario(runs, series)
    if not panels:
        return skipped("cpu.svg", "no step has cpu_us_per_packet or worker_cpu_us_per_packet")
    fig, axes = panel_figure(results, "CPU time per forwarded packet", panels, "CPU µs per forwarded packet")
    dotted = False
    for ax, items in zip(axes, panels.values()):
        for run, (process, worker) in items:
            if process:
                ax.plot(*zip(*process), linestyle="-", **run.style)
            if worker:
                ax.plot(*zip(*worker), linestyle=":", markerfacecolor="none", **run.style)
                dotted = True
    axes[0].set_ylim(bottom=0)
    runs_drawn = {run.label: run for items in panels.values() for run, _ in items}
    keys = [Line2D([], [], label=label, **run.style) for label, run in runs_drawn.items()]
    keys.append(Line2D([], [], color="0.3", linestyle="-", label="solid: whole SFU process"))
    if dotted:
        keys.append(Line2D([], [], color="0.3", linestyle=":", label="dotted: worker threads"))
    return save(fig, outdir, "cpu.svg", runs, keys)


def p99_of(cdf):
    """Latency where the CDF reaches 0.99 (interpolated on log latency), or None if it does not."""
    previous = None
    for x, fraction in cdf:
        if fraction >= 0.99:
            if previous is None or previous[1] >= fraction:
                return x
            x0, f0 = previous
            return math.exp(math.log(x0) + (0.99 - f0) / (fraction - f0) * (math.log(x) - math.log(x0)))
        previous = (x, fraction)
    return None


def plot_latency_cdf(results, runs, outdir):
    drawn = [run for run in runs if run.cdf]
    if not drawn:
        return skipped("latency_cdf.svg", "no run has latency_cdf")
    fig, ax = plt.subplots(figsize=(9, 5.8), layout="constrained")
    title = "Latency CDF at each run's heaviest step within the loss limit"
    fig.suptitle(f"{title}\n{subtitle(results)}".strip(), fontsize=12)
    scenarios = list(dict.fromkeys(run.scenario for run in drawn))
    for run in drawn:
        p99 = p99_of(run.cdf)
        label = f"{run.label} · {run.scenario}" if len(scenarios) > 1 else run.label
        label += "" if p99 is None else f"  (p99 {p99:,.0f} µs)"
        dashes = ("-", "--", "-.", ":")[scenarios.index(run.scenario) % 4]  # tells one label's scenarios apart
        ax.plot(*zip(*run.cdf), color=run.style["color"], linestyle=dashes, label=label)
        if p99 is not None:
            ax.plot(p99, 0.99, linestyle="none", markersize=9, markeredgecolor="black", **run.style)
    ax.axhline(0.99, color="0.5", linestyle=":", linewidth=1, label="fraction 0.99 (big marker: the run's p99)")
    log_axis(ax, "x")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency, publisher send → subscriber receive (µs)")
    ax.set_ylabel("fraction of packets at or below")
    return save(fig, outdir, "latency_cdf.svg", runs)


def plot_loss(results, runs, outdir):
    def series(run):
        return [(x, max(y, LOSS_FLOOR)) for x, y in run.points("loss", keep=lambda y: y >= 0)]

    panels = by_scenario(runs, series)
    if not panels:
        return skipped("loss.svg", "no step has loss")
    fig, axes = panel_figure(results, "Packet loss", panels, "loss (fraction of packets; 0 drawn at $10^{-6}$)")
    top = max(y for items in panels.values() for _, points in items for _, y in points)
    for ax, items in zip(axes, panels.values()):
        for run, points in items:
            ax.plot(*zip(*points), label=run.label, **run.style)
        ax.axhline(LOSS_THRESHOLD, color="tab:red", linestyle="--", linewidth=1.4, label="0.1 % loss threshold")
    axes[0].set_yscale("log")
    axes[0].set_ylim(LOSS_FLOOR / 2, max(top, LOSS_THRESHOLD) * 3)
    decade = FuncFormatter(lambda v, _: f"$10^{{{round(math.log10(v))}}}$")
    axes[0].yaxis.set_major_formatter(
        FuncFormatter(lambda v, pos: f"≤{decade(LOSS_FLOOR, pos)}" if math.isclose(v, LOSS_FLOOR) else decade(v, pos))
    )
    return save(fig, outdir, "loss.svg", runs)


def join_samples(step, key):
    """The finite, non-negative `key` times of a step's timed joins, and how many joins there were."""
    joins = step.get("join_ms") if isinstance(step.get("join_ms"), dict) else {}
    samples = dicts(joins.get("samples"))
    return [v for v in (num(sample, key) for sample in samples) if v is not None and v >= 0], len(samples)


def plot_join_time(results, runs, outdir):
    """Fan-out probes' first-media p50/p99 against subscribers; each storm's CDF of join times."""

    def probes(run):
        p50, p99 = [], []
        for step in [] if run.scenario in PHASED else run.steps:
            x = run.load(step)
            joins = step.get("join_ms") if isinstance(step.get("join_ms"), dict) else {}
            media = joins.get("first_media") if isinstance(joins.get("first_media"), dict) else {}
            if x is None or x <= 0 or not num(media, "samples"):
                continue
            for points, key in ((p50, "p50"), (p99, "p99")):
                if num(media, key) is not None and num(media, key) > 0:
                    points.append((x, num(media, key)))
        return (sorted(p50), sorted(p99)) if p50 or p99 else None

    def storm_cdfs(run):
        curves = []
        for step in run.steps:
            for key, name in (("connected_ms", "connected"), ("first_media_ms", "first media")):
                times, joins = join_samples(step, key)
                if times and joins:
                    times.sort()
                    # Over every join, so that a curve ends below 1 by the joins that failed.
                    curves.append((name, [(t, (i + 1) / joins) for i, t in enumerate(times)]))
        return curves

    fanouts = [(run, data) for run in runs if (data := probes(run))]
    storms = [(run, data) for run in runs if run.scenario in PHASED and (data := storm_cdfs(run))]
    if not fanouts and not storms:
        return skipped("join_time.svg", "no step has join_ms")
    panels = [panel for panel, present in (("probes", fanouts), ("storm", storms)) if present]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(1.5 + 5.4 * len(panels), 5.4), squeeze=False, layout="constrained"
    )
    axes = dict(zip(panels, axes[0]))
    fig.suptitle(f"Join time: from a viewer's join to its first media packet\n{subtitle(results)}".strip(), fontsize=12)
    keys = []
    if fanouts:
        ax = axes["probes"]
        ax.set_title("probes after each fan-out step's window")
        for run, (p50, p99) in fanouts:
            label = f"{run.label} · {run.scenario}"
            if p50:
                ax.plot(*zip(*p50), linestyle="-", label=label, **run.style)
            if p99:
                ax.plot(*zip(*p99), linestyle="--", markerfacecolor="none", label=None if p50 else label, **run.style)
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.set_xlabel("subscribers")
        ax.set_ylabel("ms from the join's start to first media")
        keys += [Line2D([], [], color="0.3", linestyle="-", label="solid: p50"),
                 Line2D([], [], color="0.3", linestyle="--", label="dashed: p99")]
    if storms:
        ax = axes["storm"]
        ax.set_title("join storm, every join")
        for run, curves in storms:
            for name, points in curves:
                dashes = "-" if name == "first media" else ":"
                ax.plot(*zip(*points), color=run.style["color"], linestyle=dashes, label=f"{run.label} · {name}")
        log_axis(ax, "x")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ms from the join's start")
        ax.set_ylabel("fraction of joins at or below (failures never arrive)")
    return save(fig, outdir, "join_time.svg", runs, keys)


def plot(results, outdir):
    """Write every plot the results have data for into outdir; returns the names written."""
    if not isinstance(results, dict):
        print("skipped all plots: the results are not a JSON object", file=sys.stderr)
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    runs = runs_of(results)
    plotters = (plot_egress, plot_egress_per_core, plot_cpu, plot_latency_cdf, plot_loss, plot_join_time)
    return [name for name, plotter in zip(PLOTS, plotters) if plotter(results, runs, outdir)]


def synthetic_results():
    """A results set shaped like a real one: two uprtcd runs, one Janus run, raw rows, gaps."""

    def cdf(median_us, spread):
        """A log-normal latency CDF sampled at 40 latencies."""
        points = []
        for i in range(40):
            x = median_us * math.exp(spread * (i - 16) / 6)
            fraction = 0.5 * (1 + math.erf(math.log(x / median_us) / (spread * math.sqrt(2))))
            points.append([round(x, 1), round(fraction, 5)])
        return points

    def step(publishers, subscribers, pps_each, capacity, us_per_packet, worker_share, latency_p50):
        wanted = publishers * subscribers * pps_each
        egress = min(wanted, capacity)
        loss = 0.0 if wanted <= capacity * 0.9 else 1 - egress / wanted + 2e-4
        return {
            "publishers": publishers,
            "subscribers": subscribers,
            "seconds": 5.0,
            "egress_pps": egress,
            "sfu_cpu_percent": egress * us_per_packet / 1e4,
            "worker_cpu_percent": None if worker_share is None else egress * us_per_packet * worker_share / 1e4,
            "cpu_us_per_packet": us_per_packet,
            "worker_cpu_us_per_packet": None if worker_share is None else us_per_packet * worker_share,
            "egress_pps_per_core": 1e6 / us_per_packet,
            "loss": round(loss, 6),
            "reordered": 0,
            "latency_us": {"p50": latency_p50, "p99": 4 * latency_p50, "p999": 9 * latency_p50,
                           "max": 20 * latency_p50},
            "rss_bytes": 30_000_000 + subscribers * 20_000,
            "memory_per_subscriber_bytes": 20_000,
        }

    def joins(count, connected_ms, media_ms, failed=0):
        """Timed joins: connected and first media spread around the given medians."""
        samples = []
        for i in range(count):
            spread = math.exp((i % 10 - 4.5) / 6)
            sample = {"late_ms": 0.0, "signalled_ms": 3.0 * spread, "negotiated_ms": 6.0 * spread,
                      "ice_ms": 8.0 * spread, "connected_ms": connected_ms * spread,
                      "first_media_ms": media_ms * spread, "failed": None}
            if i < failed:
                sample.update(connected_ms=None, first_media_ms=None, failed="dtls", error="media: not connected yet")
            samples.append(sample)
        media = sorted(s["first_media_ms"] for s in samples if s["first_media_ms"] is not None)
        at = lambda q: media[max(0, math.ceil(len(media) * q) - 1)] if media else 0.0  # noqa: E731
        return {"joins": count, "failed": failed, "samples": samples,
                "first_media": {"samples": len(media), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
                                "max": at(1.0)}}

    fanout = (10, 100, 300, 1000, 3000)
    epoll = [step(1, n, 164, 560_000, 1.9 - 0.3 * math.log10(n), 0.8, 40 + n / 20) for n in fanout]
    for i, s in enumerate(epoll):
        s["join_ms"] = joins(20, 15 + 10 * i, 40 + 30 * i, failed=i // 3)
    epoll[0]["join_ms"]["first_media"] = None  # probes that measured nothing
    epoll[3]["loss"] = 3e-5
    epoll[-1]["loss"] = None  # a step that could not measure loss
    janus = [step(1, n, 164, 70_000, 9.0 + n / 400, None, 300 + n / 2) for n in fanout[:4]]
    janus[0]["loss"] = 0  # exactly zero: drawn at the floor
    conference = [step(n, n - 1, 50, 400_000, 2.4, 0.85, 60 + n) for n in (4, 8, 16, 32, 64)]
    conference[-1]["loss"] = 4e-4
    storm = [step(1, n, 164, 560_000, 1.6, 0.8, 60) for n in (1010, 2010, 2010)]
    for s, phase in zip(storm, ("before", "storm", "after")):
        s["phase"] = phase
    storm[1]["join_ms"] = joins(1000, 120, 160, failed=7)
    del conference[2]["egress_pps"], conference[2]["cpu_us_per_packet"]
    return {
        "started": "2026-12-02T01:00:00Z",
        "machine": {"cpus": 2, "kernel": "6.18", "cpu_model": "Intel Xeon Processor (synthetic)"},
        "raw": [
            {"mode": "Sendmmsg", "packet_bytes": 1128, "destinations": 100,
             "packets_per_core_second": 1.1e6, "packets_per_second": 9e5},
            {"mode": "Gso", "packet_bytes": 1128, "destinations": 100,
             "packets_per_core_second": 2.6e6, "packets_per_second": 2.1e6},
            {"mode": "Gso", "packet_bytes": 1128, "destinations": 1000, "packets_per_second": None},
        ],
        "runs": [
            {"scenario": "fanout", "sfu": "uprtcd", "label": "uprtcd epoll ×1", "backend": "epoll",
             "profile": "AES-256-GCM", "workers": 1, "steps": epoll, "latency_cdf": cdf(120, 0.5)},
            {"scenario": "fanout", "sfu": "janus", "label": "janus", "backend": None, "profile": None,
             "workers": None, "steps": janus, "latency_cdf": cdf(700, 0.7)},
            {"scenario": "conference", "sfu": "uprtcd", "label": None, "backend": "uring",
             "profile": "AES-256-GCM", "workers": 2, "steps": conference},
            {"scenario": "storm", "sfu": "uprtcd", "label": "uprtcd epoll ×1", "backend": "epoll",
             "profile": "AES-256-GCM", "workers": 1, "steps": storm, "latency_cdf": cdf(200, 0.8)},
        ],
    }


def selftest(outdir):
    written = plot(synthetic_results(), outdir)
    if written != list(PLOTS):
        sys.exit(f"selftest failed: wrote {written}, expected {list(PLOTS)}")
    for name in PLOTS:
        ET.parse(outdir / name)  # raises if the SVG is not well-formed XML
    broken = (
        {},
        [],
        {"raw": "none", "runs": [None, {"steps": None}, {"steps": [{"subscribers": "ten"}], "latency_cdf": [[1], 2]}]},
    )
    print("empty and malformed results (every plot should be skipped):", file=sys.stderr)
    for results in broken:
        with tempfile.TemporaryDirectory() as empty:
            if plot(results, Path(empty)):
                sys.exit(f"selftest failed: plotted something from {results!r}")
    print(f"selftest passed: {len(PLOTS)} plots in {outdir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="the load generator's results JSON")
    parser.add_argument("outdir", nargs="?", type=Path, help="where to write the SVGs (default: next to RESULTS)")
    parser.add_argument("--selftest", metavar="OUTDIR", type=Path, help="plot synthetic results into OUTDIR")
    args = parser.parse_args()
    if args.selftest is not None:
        if args.results is not None:
            parser.error("--selftest takes only OUTDIR")
        selftest(args.selftest)
        return
    if args.results is None:
        parser.error("RESULTS.json is required")
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as err:
        sys.exit(f"cannot read {args.results}: {err}")
    plot(results, args.outdir or args.results.parent)


if __name__ == "__main__":
    main()
