"""A short run of bench/load.py's core against the real server: simulated students mixing
trace, step and upload get no errors, and the server's memory does not climb after warm-up."""

import pytest


@pytest.mark.slow
def test_five_students_for_ten_seconds_get_no_errors(bench_load):
    report = bench_load.run_load(students=5, duration=10, max_requests=2000, think=0.2)
    summary = bench_load.format_report(report)
    print("\n" + summary)
    assert report.errors == [], summary
    counts = {kind: len(values) for kind, values in report.latencies.items()}
    assert counts["create"] == 5 and min(counts["trace"], counts["step"], counts["upload"]) > 0, counts
    assert report.server_exit_code == 0, summary
    rss = report.rss()
    # generous: a leak of the step answers (3.6 MB each) would pass it within seconds
    assert rss["end"] < rss["after_warmup"] + 150 * 1024, summary


def test_load_refuses_a_mix_without_any_weight(bench_load):
    with pytest.raises(Exception):
        bench_load.parse_mix("trace=0,step=0")
    assert bench_load.parse_mix("trace=1,upload=3") == {"trace": 1, "upload": 3}
