"""``make seeds``: a chapter rerun over seeds, its numbers collected, the records written and replaced."""
import json

import pytest

from reasoning_lib import seeds


def test_headline_numbers_flatten_and_keep_only_the_comparison():
    metrics = {"kd.accuracy": 0.9, "kd.accuracy_interval": [0.8, 0.95], "kd.throughput": 12.0, "preset": "tiny",
               "bits_per_param": {"N1000-r4/d16-L2": 0.31}, "diito.iia_on_flips": float("nan"), "ok.accuracy": True}
    assert seeds.headline_numbers(metrics) == {"kd.accuracy": 0.9, "bits_per_param.N1000-r4/d16-L2": 0.31}


def test_summarise_names_a_seed_that_lacks_a_number():
    table = seeds.summarise({0: {"a.accuracy": 0.5, "b.iia": 0.2}, 1: {"a.accuracy": 0.7}, 2: {"a.accuracy": 0.6}})
    assert table["a.accuracy"]["mean"] == pytest.approx(0.6) and table["a.accuracy"]["sd"] == pytest.approx(0.1)
    assert (table["a.accuracy"]["min"], table["a.accuracy"]["max"]) == (0.5, 0.7)
    assert table["b.iia"]["values"] == [0.2] and table["b.iia"]["missing_seeds"] == [1, 2]


def test_the_results_section_is_replaced_and_the_rest_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Older, written by hand\n\nkeep me\n")
    seeds.write_results_section("## Seeds: first", path)
    seeds.write_results_section("## Seeds: second", path)
    text = path.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(seeds.MARKERS[0]) == 1 and text.count(seeds.MARKERS[1]) == 1


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown chapter"):
        seeds.run_seeds(["09_nothing"], [0])
    with pytest.raises(ValueError, match="distinct"):
        seeds.run_seeds(["07_causal_distillation"], [1, 1])


@pytest.mark.slow
@pytest.mark.notebook
def test_a_chapter_runs_over_two_seeds_and_a_rerun_reloads(tmp_path):
    chapter = "07_causal_distillation"
    files = {"results": tmp_path / "RESULTS.md", "record_path": tmp_path / "seeds.json", "page": tmp_path / "seeds.md"}
    record = seeds.run_seeds([chapter], [0, 1], "smoke", tmp_path / "runs", **files)
    numbers = record["chapters"][chapter]["numbers"]
    assert len(numbers["kd.accuracy"]["values"]) == 2 and 0 <= numbers["kd.accuracy"]["mean"] <= 1
    first = {s: json.loads((tmp_path / "runs" / f"seed-{s}" / chapter / "metrics.json").read_text()) for s in (0, 1)}
    assert first[0]["teacher.parameters"] == first[1]["teacher.parameters"]
    assert json.loads(files["record_path"].read_text())["seeds"] == [0, 1]
    assert "| `kd.accuracy` |" in files["results"].read_text() and "# Results over seeds" in files["page"].read_text()
    assert seeds.seed_spread(chapter, "kd.accuracy", files["record_path"])["values"] == numbers["kd.accuracy"]["values"]
    seeds.run_seeds([chapter], [0], "smoke", tmp_path / "runs", **files)
    again = json.loads((tmp_path / "runs" / "seed-0" / chapter / "metrics.json").read_text())
    assert again["kd.steps_trained_now"] == 0 and again["teacher.steps_trained_now"] == 0, "a finished seed is reloaded"
