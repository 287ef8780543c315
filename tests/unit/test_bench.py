"""The benchmarks' pure parts: the failover summary, the run log's step times, and bench/RESULTS.md made from
the JSON alone (no pair needed)."""
import json

from bench import failover, results, tool


def _run(method, number, lost, failures, drops):
    return {"method": method, "run": number, "acknowledged_writes_lost": lost, "failures": failures,
            "longest_failure_window_s": failures / 4, "worst_request_s": 1.0 + number, "p99_s": 0.1,
            "streaming_events_missed": drops * 10, "streaming_drops": drops}


def test_the_summary_takes_median_and_max_by_method():
    runs = [_run("naive", n, lost, 0, 1) for n, lost in ((1, 10), (2, 30), (3, 20))]
    runs += [_run("pgbouncer", n, 0, 0, 0) for n in (1, 2, 3)]
    summary = failover.summary(runs)
    assert set(summary) == {"naive", "pgbouncer"}
    assert summary["naive"]["acknowledged_writes_lost"] == {"median": 20, "max": 30}
    assert summary["pgbouncer"]["worst_request_s"] == {"median": 3.0, "max": 4.0}
    assert summary["naive"]["runs"] == 3


def test_step_seconds_count_a_steps_sub_steps():
    records = [{"step": "base backup"}, {"command": "a", "seconds": 1.5}, {"step": "hot-standby settings"},
               {"command": "b", "seconds": 0.5}, {"step_end": "hot-standby settings"},
               {"command": "pg_basebackup", "seconds": 2}, {"step_end": "base backup"},
               {"step": "build home feeds"}, {"command": "c", "seconds": 0.25},
               {"step_end": "build home feeds"},
               {"command": "outside", "seconds": 9}]
    assert tool.step_seconds(records) == {"base backup": 4.0, "hot-standby settings": 0.5,
                                          "build home feeds": 0.25}


def test_results_md_is_made_from_the_json(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(results, "TARGET", tmp_path / "RESULTS.md")
    machine = {"cpus": 2, "cpu_model": "x", "memory_mib": 1, "kernel": "k", "docker": "d", "python": "p"}
    runs = [_run("naive", 1, 17, 0, 1), _run("pgbouncer", 1, 0, 0, 0)]
    (tmp_path / "failover.json").write_text(json.dumps({
        "machine": machine, "command": "make bench PARTS=failover REPEATS=1", "bench_seconds": 9,
        "repeats": 1,
        "methods": {"naive": "promote first", "pgbouncer": "paused"}, "summary": failover.summary(runs)}))
    results.write()
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| naive | promote first | 1 | 17 / 17 | 0 / 0 |" in text
    assert "The naive order lost a median of 17 acknowledged writes" in text
    assert "Machine: 2 CPUs (x)" in text
    assert "Not measured yet: `make bench PARTS=basebackup`." in text


def test_the_scale_reading_says_how_each_phase_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(results, "TARGET", tmp_path / "RESULTS.md")

    def size(seed, mib, one, backup, two, feeds):
        return {"seed_size": seed, "database_bytes": mib * 2**20, "overhead": [],
                "phases": {"phase1-replicate": {"seconds": one, "base backup": backup},
                           "phase2-proxy": {"seconds": two, "precompile assets": 2.0,
                                            "build home feeds": feeds}}}

    (tmp_path / "tool.json").write_text(json.dumps({
        "machine": {}, "command": "make bench PARTS=tool", "bench_seconds": 1,
        "sizes": [size("small", 10, 10.0, 0.5, 20.0, 1.0), size("medium", 150, 12.0, 2.0, 30.0, 10.0)]}))
    results.write()
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| medium | 2000 | 150 MiB | 12.0 s | 2.0 s (17%) | 30.0 s | 2.0 s (7%) | 10.0 s (33%) |" in text
    assert "the database grows x15 and the accounts x40. Phase 1 grows x1.2 (its base backup x4.0" in text
    assert "the feed build x10.0, with the accounts; the precompile x1.0" in text


def test_results_md_says_how_long_the_whole_run_took(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(results, "TARGET", tmp_path / "RESULTS.md")
    results.write()
    assert "The whole run" not in (tmp_path / "RESULTS.md").read_text()  # only parts ran: no total
    (tmp_path / "whole.json").write_text(json.dumps({
        "command": "make bench REPEATS=5", "bench_seconds": 3000, "finished_at": "2026-12-02 09:00:00 UTC"}))
    results.write()
    assert ("The whole run, `make bench REPEATS=5`, took 50 min (3000 s, finished 2026-12-02 09:00:00 UTC)"
            in (tmp_path / "RESULTS.md").read_text())


def test_the_base_backup_section_compares_the_tool_with_its_line_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(results, "TARGET", tmp_path / "RESULTS.md")
    mib = {"by_hand": 150.0, "bare": 160.0, "tool_copy": 148.0, "tool_task": 100.0, "bare_server_zstd": 90.0,
           "bare_ssh_compression": 30.0}
    size = {"seed_size": "medium", "text_bytes": 10000, "bytes": 2 * 2**30, "command": "pg_basebackup -D x",
            "throughput_mib_s": mib, "ratio_copy": 0.987, "ratio_task": 0.66,
            "rounds": [{"by_hand_seconds": 10.0, "tool": {"copy_seconds": 10.0 + extra}}
                       for extra in (0.1, 0.3)]}
    (tmp_path / "basebackup.json").write_text(json.dumps(
        {"command": "make bench PARTS=basebackup", "bench_seconds": 600, "sizes": [size]}))
    results.write()
    text = (tmp_path / "RESULTS.md").read_text()
    assert ("| 2048 MiB (seed medium, text 10000 B) | 150.0 MiB/s | 148.0 MiB/s | 0.987 | 100.0 MiB/s | 0.66 "
            "| 160.0 MiB/s | 90.0 MiB/s | 30.0 MiB/s |") in text
    assert ("runs at 0.99 of the same pg_basebackup's throughput by hand (at or above the 0.95 target; "
            "+0.20 s a copy on average)") in text
    assert ("Compression, at 2048 MiB: server-zstd gives 90.0 MiB/s and ssh -C 30.0 MiB/s against "
            "160.0 MiB/s for the same bare copy without. On this machine's private network") in text
