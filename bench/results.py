"""bench/RESULTS.md, generated from the JSON in bench/results/: nothing in it is typed by hand."""

from __future__ import annotations

import json

from .common import REPO, RESULTS

TARGET = REPO / "bench" / "RESULTS.md"


def _load(part: str) -> dict | None:
    path = RESULTS / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cell(figure: dict, unit: str = "") -> str:
    return f"{figure['median']:g}{unit} / {figure['max']:g}{unit}"


def failover_section(data: dict | None) -> list[str]:
    if not data:
        return ["## Failover, four methods", "", "Not measured yet: `make bench PARTS=failover`.", ""]
    rows = [
        "| method | what | runs | writes lost | failed requests | longest failure window | worst request "
        "| p99 | streaming events missed | WebSocket drops |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, figures in data["summary"].items():
        rows.append(
            f"| {method} | {data['methods'][method]} | {figures['runs']} "
            f"| {_cell(figures['acknowledged_writes_lost'])} | {_cell(figures['failures'])} "
            f"| {_cell(figures['longest_failure_window_s'], ' s')} "
            f"| {_cell(figures['worst_request_s'], ' s')} | {_cell(figures['p99_s'], ' s')} "
            f"| {_cell(figures['streaming_events_missed'])} | {_cell(figures['streaming_drops'])} |"
        )
    summary = data["summary"]
    reading = []
    if "pgbouncer" in summary and "naive" in summary:
        ours, naive = summary["pgbouncer"], summary["naive"]
        reading.append(
            f"The naive order lost a median of {naive['acknowledged_writes_lost']['median']:g} acknowledged "
            f"writes (at most {naive['acknowledged_writes_lost']['max']:g}); this tool's default lost "
            f"{ours['acknowledged_writes_lost']['max']:g} in every run, failed at most "
            f"{ours['failures']['max']:g} requests, and its worst request took at most "
            f"{ours['worst_request_s']['max']:g} s."
        )
    if "restart" in summary and "restart-boot15" in summary:
        ten, fifteen = summary["restart"], summary["restart-boot15"]
        failed = [method["failures"]["median"] for method in (ten, fifteen)]
        window = [method["longest_failure_window_s"]["median"] for method in (ten, fifteen)]
        drops = [method["streaming_drops"]["median"] for method in (ten, fifteen)]
        missed = [method["streaming_events_missed"]["median"] for method in (ten, fifteen)]
        reading.append(
            "Repointing and restarting Mastodon after the promotion loses nothing but fails requests while "
            f"web boots: in the median run, {failed[0]:g} failed requests over {window[0]:g} s with a 10 s "
            f"boot, and {failed[1]:g} over {window[1]:g} s with 15 s. The WebSocket dropped {drops[0]:g} and "
            f"{drops[1]:g} times, missing {missed[0]:g} and {missed[1]:g} events."
        )
    if "pgbouncer" in summary:
        worst, drops = summary["pgbouncer"]["worst_request_s"], summary["pgbouncer"]["streaming_drops"]
        missed = summary["pgbouncer"]["streaming_events_missed"]
        reading.append(
            "With PgBouncer paused across the promotion no request failed in any run; the worst request "
            f"took {worst['median']:g} s in the median run and {worst['max']:g} s at most (queries waiting "
            f"in the pause). The WebSocket dropped {drops['max']:g} times and missed {missed['max']:g} "
            "events at most."
        )
    return [
        "## Failover, four methods",
        "",
        f"{data['repeats']} runs per method, each on a fresh pair, interleaved; the load is 20 writes and 5 "
        "reads a second through old's public endpoint and one user's WebSocket. Each cell: median / "
        "max over the runs, taken from the failover's start to 3 s after its end.",
        "",
        *rows,
        "",
        *[line for paragraph in reading for line in (paragraph, "")],
        "",
        f"Reproduce: `{data['command']}` ({data['bench_seconds']} s).",
        "",
    ]


def accounts(seed_size: str) -> int:
    """Accounts of a SEED_SIZE: a number, or a named size of the stand-in's contract."""
    if seed_size.isdigit():
        return int(seed_size)
    contract = json.loads((REPO / "docker" / "standin" / "contract.json").read_text())
    return contract["sizes"][seed_size]["accounts"]


def _share(phase: dict, step: str) -> str:
    seconds = phase.get(step, 0.0)
    return f"{seconds} s ({100 * seconds / phase['seconds']:.0f}%)"


def scale_reading(sizes: list[dict]) -> list[str]:
    if len(sizes) < 2:
        return []
    first, last = sizes[0], sizes[-1]

    def times(key: str, step: str | None = None) -> str:
        a, b = first["phases"][key], last["phases"][key]
        before, after = (a.get(step, 0.0), b.get(step, 0.0)) if step else (a["seconds"], b["seconds"])
        return f"x{after / before:.1f}" if before else f"{before} s to {after} s"

    return [
        f"From seed `{first['seed_size']}` to `{last['seed_size']}` the database grows "
        f"x{last['database_bytes'] / max(first['database_bytes'], 1):.0f} and the accounts "
        f"x{accounts(last['seed_size']) / accounts(first['seed_size']):.0f}. Phase 1 grows "
        f"{times('phase1-replicate')} (its base backup {times('phase1-replicate', 'base backup')}, with the "
        f"bytes); phase 2 grows {times('phase2-proxy')} (the feed build "
        f"{times('phase2-proxy', 'build home feeds')}, with the accounts; the precompile "
        f"{times('phase2-proxy', 'precompile assets')}, which does not depend on the data). The rest of each "
        "phase is fixed work: checks, the tunnel, starting and proving services.",
        "",
    ]


def tool_sections(data: dict | None) -> list[str]:
    if not data:
        return [
            "## Tool overhead, proxy overhead, scale",
            "",
            "Not measured yet: `make bench PARTS=tool`.",
            "",
        ]
    first = data["sizes"][0]
    overhead = [
        "| invocation | seconds | operator's ssh logins on old / new | host-to-host logins on old / new "
        "| commands |",
        "|---|---|---|---|---|",
    ]
    for item in first["overhead"]:
        between = item["host_to_host_logins"]
        overhead.append(
            f"| `{item['command']}` | {item['seconds']} | {item['ssh_logins']['old']} / "
            f"{item['ssh_logins']['new']} | {between['old']} / {between['new']} | {item['commands']} |"
        )
    logins = [max(i["ssh_logins"].values()) for i in first["overhead"]]
    proxy = first.get("proxy")
    proxy_rows = []
    if proxy:
        proxy_rows = (
            ["| path | requests | p50 | p99 |", "|---|---|---|---|"]
            + [
                f"| {label} | {proxy[label]['requests']} | {proxy[label]['p50_s']} s "
                f"| {proxy[label]['p99_s']} s |"
                for label in ("through old's proxy", "straight to new")
            ]
            + [
                "",
                f"The proxy adds {proxy['added_p50_s'] * 1000:.1f} ms at p50 and "
                f"{proxy['added_p99_s'] * 1000:.1f} ms at p99 (each request on a new TLS connection, as the "
                "live client makes them).",
            ]
        )
    scale = [
        "| seed | accounts | database | phase 1 | of it, base backup | phase 2 | of it, precompile "
        "| of it, feed build |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in data["sizes"]:
        one, two = size["phases"]["phase1-replicate"], size["phases"]["phase2-proxy"]
        mib = size["database_bytes"] / 2**20
        cells = [
            size["seed_size"],
            accounts(size["seed_size"]),
            f"{mib:.0f} MiB",
            f"{one['seconds']} s",
            _share(one, "base backup"),
            f"{two['seconds']} s",
            _share(two, "precompile assets"),
            _share(two, "build home feeds"),
        ]
        scale.append("| " + " | ".join(str(c) for c in cells) + " |")
    return [
        "## Tool overhead",
        "",
        f"On a fresh pair at seed `{first['seed_size']}`. The target is one ssh login per host per "
        f"invocation; the most any invocation here cost on one host: {max(logins, default=0)}. Host-to-host "
        "logins are the tool's own data paths (rsync of the media from new to old), not the operator's "
        "connection.",
        "",
        *overhead,
        "",
        "## Proxy overhead",
        "",
        *(proxy_rows or ["Not measured."]),
        "",
        "## Scale: phases 1 and 2 by seed size",
        "",
        "Wall time of each phase, and the command time of the steps that grow with the data (from the run "
        "log), with their share of the phase.",
        "",
        *scale_reading(data["sizes"]),
        "",
        *scale,
        "",
        f"Reproduce: `{data['command']}` ({data['bench_seconds']} s).",
        "",
    ]


def write() -> None:
    failover, tool = _load("failover"), _load("tool")
    machine = (failover or tool or {}).get("machine")
    header = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench report` from the JSON in `bench/results/` (`make bench` runs "
        "everything and writes both). Nothing here is typed by hand.",
        "",
    ]
    whole = _load("whole")
    if whole:
        header += [
            f"The whole run, `{whole['command']}`, took {whole['bench_seconds'] / 60:.0f} min "
            f"({whole['bench_seconds']} s, finished {whole['finished_at']}); each part's command and time "
            "are under it.",
            "",
        ]
    if machine:
        header += [
            f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_mib']} MiB, "
            f"kernel {machine['kernel']}, Docker {machine['docker']}, Python {machine['python']}.",
            "",
        ]
    sections = [*failover_section(failover), *basebackup_section(_load("basebackup")), *tool_sections(tool)]
    TARGET.write_text("\n".join([*header, *sections]))


def _copy_reading(size: dict) -> str:
    rounds = size.get("rounds") or []
    extra = [r["tool"]["copy_seconds"] - r["by_hand_seconds"] for r in rounds if "by_hand_seconds" in r]
    target = "at or above" if size["ratio_copy"] >= 0.95 else "below"
    return (
        f"At {size['bytes'] / 2**20:.0f} MiB the tool's copy runs at {size['ratio_copy']:.2f} of the same "
        f"pg_basebackup's throughput by hand ({target} the 0.95 target"
        + (f"; {sum(extra) / len(extra):+.2f} s a copy on average" if extra else "")
        + "); its whole task, with the checks, pg_verifybackup, the start and the wait for streaming, at "
        f"{size['ratio_task']:.2f}."
    )


def _compression_reading(largest: dict) -> str:
    """Whether compression should become the default, judged at the largest size, where the copy's time
    is the bytes' and not fixed costs."""
    mib = largest["throughput_mib_s"]
    zstd, ssh = mib["bare_server_zstd"], mib["bare_ssh_compression"]
    pays = max(zstd, ssh) > 1.05 * mib["bare"]
    return (
        f"Compression, at {largest['bytes'] / 2**20:.0f} MiB: server-zstd gives {zstd} MiB/s and ssh -C "
        f"{ssh} MiB/s against {mib['bare']} MiB/s for the same bare copy without"
        + (
            ", so compression would pay here and should become the default."
            if pays
            else ". On this machine's private network the CPU, not the wire, limits the copy, so the default "
            "stays uncompressed; over a slow link between hosts `--compress=server-zstd` may pay."
        )
    )


def basebackup_section(data: dict | None) -> list[str]:
    title = "## Base backup against the same pg_basebackup by hand"
    if not data:
        return [title, "", "Not measured yet: `make bench PARTS=basebackup`.", ""]
    rows = [
        "| database | by hand | the tool's pg_basebackup | ratio | the whole `basebackup` task | ratio "
        "| bare | bare, server-zstd | bare, ssh -C |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    reading = []
    for size in data["sizes"]:
        mib = size["throughput_mib_s"]
        rows.append(
            f"| {size['bytes'] / 2**20:.0f} MiB (seed {size['seed_size']}, text {size['text_bytes']} B) "
            f"| {mib['by_hand']} MiB/s | {mib['tool_copy']} MiB/s | {size['ratio_copy']} "
            f"| {mib['tool_task']} MiB/s | {size['ratio_task']} | {mib['bare']} MiB/s "
            f"| {mib['bare_server_zstd']} MiB/s | {mib['bare_ssh_compression']} MiB/s |"
        )
        reading.append(_copy_reading(size))
    reading.append(_compression_reading(data["sizes"][-1]))
    rounds = len(data["sizes"][0]["rounds"])
    return [
        title,
        "",
        f"{rounds} rounds a size on one pair, alternated (tool first, then by hand first), each copy after "
        "a `sync`. Throughput is the copy's size over the median seconds; a ratio is by hand's seconds over "
        "the tool's, summed over the rounds (whichever copy goes first in a round is the slower, so each "
        "side goes first in half of them). The tool ran `"
        + data["sizes"][0]["command"]
        + "`. By hand is that same line typed in an ssh session on new, after the same preparation (the "
        "cluster stopped, the data directory moved aside, the slot dropped). Bare is that line into a "
        "scratch directory beside the data directory, with a slot of its own and without `-R`, while new's "
        "standby runs: the baseline of the compressed copies, which ran in every other round.",
        "",
        *rows,
        "",
        *[line for paragraph in reading for line in (paragraph, "")],
        "",
        f"Reproduce: `{data['command']}` ({data['bench_seconds']} s).",
        "",
    ]
