"""bench/report.py's judgement: a target on the median of its rounds with every round shown, and
a document rendered only from one complete run of `make bench`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fieldnode.infra.paths import REPO_DIR

sys.path.insert(0, str(REPO_DIR / "bench"))

from report import STORE_TARGET, median_ratio, store_rows, write_report  # noqa: E402
from runs import BENCHES, MixedRuns, load_one_run  # noqa: E402


def test_the_store_target_is_judged_on_the_median_round_and_every_round_is_shown():
    # The rounds recorded before this rule: the best (20,456) met the target, the median does not.
    store = {"sync=full": [20456, 16003, 15581], "sync=normal": [21870, 20512, 14416]}
    lines, met = store_rows(store, STORE_TARGET)
    assert "| sync=full | 16,003 | 20,456, 16,003, 15,581 |" in lines
    assert "| sync=normal | 20,512 | 21,870, 20,512, 14,416 |" in lines
    assert met == {"sync=full": False, "sync=normal": True}


def test_a_ratio_is_the_median_of_the_rounds_ratios():
    # Round by round 2, 4 and 3: the median is 3, where the ratio of the best rounds would be 3/1.
    assert median_ratio([100, 200, 300], [50, 50, 100]) == 3
    with pytest.raises(ValueError):
        median_ratio([100, 200], [50])


def _results(tmp_path: Path, runs: dict[str, str | None]) -> Path:
    for name in BENCHES:
        if name in runs:
            data = {"benchmark": name}
            if runs[name] is not None:
                data["run"] = {"id": runs[name]}
            (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_results_from_two_runs_are_refused_and_named(tmp_path):
    ids = {name: "run-a" for name in BENCHES} | {"gateway": "run-b"}
    doc = tmp_path / "performance.md"
    with pytest.raises(MixedRuns) as refused:
        write_report(_results(tmp_path, ids), doc)
    assert "run-a: " in str(refused.value) and "run-b: gateway" in str(refused.value)
    assert not doc.exists()


def test_results_without_a_recorded_run_are_refused(tmp_path):
    ids: dict[str, str | None] = {name: "run-a" for name in BENCHES} | {"flash": None}
    with pytest.raises(MixedRuns, match="no run recorded: flash"):
        load_one_run(_results(tmp_path, ids))


def test_a_run_missing_a_benchmark_is_refused(tmp_path):
    ids = {name: "run-a" for name in BENCHES if name != "spool_flash"}
    with pytest.raises(MixedRuns, match="no results for spool_flash"):
        load_one_run(_results(tmp_path, ids))


def test_one_complete_run_is_taken(tmp_path):
    data = load_one_run(_results(tmp_path, {name: "run-a" for name in BENCHES}))
    assert set(data) == set(BENCHES) and {d["run"]["id"] for d in data.values()} == {"run-a"}


def test_frame_format_v2_size_is_computed_from_the_vector_and_judged_against_the_target(tmp_path):
    import frame_size
    from report import frame_size_section, write_section

    v2 = frame_size.v2_figures(261)
    vector = next(c for c in json.loads(frame_size.VECTORS_V2.read_text())["frames"] if c["name"] == "telemetry-6")
    b = v2["breakdown"]
    assert v2["frame_bytes"] == vector["size"] == b["envelope_bytes"] + b["names_bytes"] + b["values_bytes"] \
        + b["structure_bytes"]
    assert v2["frame_vs_senml_json"] == round(vector["size"] / 261, 3)
    fits = {link: f["v2"] for link, f in v2["fits"].items()}
    assert fits == {link: vector["size"] <= f["limit"] for link, f in v2["fits"].items()}
    d = {"frame": "t", "frame_bytes": 192, "senml_cbor_payload_bytes": 151, "envelope_overhead_bytes": 41,
         "senml_json_bytes": 261, "frame_vs_senml_json": 0.736, "shortest_cbor_payload_bytes": 151,
         "required_text_bytes": 77, "v1_floor_bytes": 192, "v1_floor_vs_senml_json": 0.736, "esp_now_limit": 250,
         "esp_now_headroom_bytes": 58, "v1_fits": {}, "v2": {**v2, "frame_vs_senml_json": 0.39},
         "run": {"command": "c", "date": "d", "machine": "m", "seconds": 0}}
    text = "\n".join(frame_size_section(d))
    assert "Target ≤ 40%: met" in text.split("### Frame format v2")[1]
    # One section of the document rendered again from its results, the rest left as it was.
    (tmp_path / "frame_size.json").write_text(json.dumps(d))
    doc = tmp_path / "performance.md"
    doc.write_text("# P\n\n- Frame: old\n- Other: kept\n\n## Frame size\n\nold\n\n## Gateway\n\nkept\n")
    out = write_section("frame_size", tmp_path, doc).read_text()
    assert "- Other: kept" in out and out.endswith("## Gateway\n\nkept\n") and "old" not in out
    assert "Frame format v2: 110 B = 39.0%" in out


def _update_results(fractions_20: list[float], growth: float) -> dict:
    heap = {"tier": "app", "rtt_ms": 200, "seconds": 12.2, "heapsize": "1M", "rest": [846048.0],
            "after_refusal": [830752.0], "early": [813120.0], "late": [813120.0 - growth], "names": 15296.0,
            "update_share": 17632.0, "growth": growth, "modules": ["fnode.ota"], "byte_data": 8837,
            "buffers": 1088, "esp32_update_share": 13234}
    return {"what": "w", "block_bytes": 1024, "target": 0.9, "rounds": 3, "heap": [heap],
            "transfers": [
                {"tier": "app", "rtt_ms": 20, "bytes": 61018, "blocks": 61, "limit_seconds": 1.2,
                 "seconds": [1.2 / f for f in fractions_20], "fractions": fractions_20},
                {"tier": "app", "rtt_ms": 200, "bytes": 61018, "blocks": 61, "limit_seconds": 12.0,
                 "seconds": [12.17, 12.15, 12.19], "fractions": [0.986, 0.988, 0.984]},
                {"tier": "fw", "rtt_ms": 20, "bytes": 1558528, "blocks": 1523, "limit_seconds": 30.44,
                 "seconds": [32.96, 32.88, 33.41], "fractions": [0.923, 0.926, 0.911]}],
            "run": {"command": "c", "date": "d", "machine": "m", "seconds": 0}}


def test_the_update_target_is_judged_on_the_median_round_and_the_heap_on_its_growth():
    from report import _update_summary, update_section
    # The best round (0.95) would meet the target; the median (0.89) does not.
    d = _update_results([0.95, 0.89, 0.85], growth=0)
    text = "\n".join(update_section(d))
    assert "| 0.890 | 0.950, 0.890, 0.850 |" in text
    assert "application bundle 61 KB, 20 ms **not met** (0.890)" in text
    assert "firmware image 1.56 MB, 20 ms met (0.923)" in text
    # The image at 200 ms was not run: said so, with an estimate named as one.
    assert "The firmware image at 200 ms is not in `make bench`" in text and "an estimate, not measured" in text
    assert "growth 0 B (≤ one block, 1088 B: met)" in _update_summary(d)
    # A second half holding two blocks more than the first: growth, not met.
    assert "growth 2,048 B (≤ one block, 1088 B: **not met**)" in _update_summary(_update_results([0.9] * 3, 2048))
