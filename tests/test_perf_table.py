"""scripts/perf_table.py --check: a result that names no CPU, or mixes CPUs without saying so, fails."""

from __future__ import annotations

import importlib.util
import json

from .conftest import ROOT

spec = importlib.util.spec_from_file_location("perf_table", ROOT / "scripts" / "perf_table.py")
perf_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(perf_table)

AMX = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx2", "avx512f", "amx_bf16"], "cores": 2}
AVX2 = {"cpu": "AMD EPYC", "cpu_flags": ["avx2"], "cores": 2}


def _demo(machine, **extra):
    return {"benchmark": "eval_overhead", "machine": machine, "date": "2026-12-02", "command": "x",
            "what": "demo", "encode_s": 10.0, "n_sentences_encoded": 100, "overhead_s": 0.1, "overhead_ratio": 0.01,
            "target_ratio": 0.05, "with_3_reducers_cached": {"overhead_ratio_vs_encode": 0.02}, **extra}


def test_cpu_problems():
    assert perf_table.cpu_problems(_demo(AVX2), "a.json") == []
    assert "names no CPU" in perf_table.cpu_problems({"benchmark": "x"}, "b.json")[0]
    mixed = _demo(AMX, runs=[{"machine": AVX2, "x": 1}])
    problem = perf_table.cpu_problems(mixed, "c.json")[0]
    assert "mixes CPUs" in problem and "AMD EPYC [avx2]" in problem and "/runs[0]/machine" in problem
    assert perf_table.cpu_problems(dict(mixed, mixed_cpus="the int8 rows ran on the AVX2 machine"), "c.json") == []
    same_model_other_flags = _demo(AMX, runs=[{"machine": dict(AMX, cpu_flags=["avx2"])}])
    assert perf_table.cpu_problems(same_model_other_flags, "d.json")  # the same name is not the same CPU


def test_check_fails_on_a_mixed_table(tmp_path):
    results = tmp_path / "benchmarks"
    results.mkdir()
    readme = tmp_path / "README.md"
    (results / "ok.json").write_text(json.dumps(_demo(AVX2)))
    readme.write_text(f"x\n{perf_table.BEGIN}\n{perf_table.END}\n")
    assert perf_table.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert perf_table.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0
    (results / "mixed.json").write_text(json.dumps(_demo(AVX2, runs=[{"machine": AMX}])))
    assert perf_table.main(["--readme", str(readme), "--results", str(results)]) == 0  # README now up to date
    assert perf_table.main(["--readme", str(readme), "--results", str(results), "--check"]) == 1  # but mixed
    (results / "mixed.json").write_text(json.dumps(_demo(AVX2, runs=[{"machine": AMX}], mixed_cpus="runs[0]: AMX")))
    assert perf_table.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert perf_table.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0
    assert "*Mixed CPUs:* runs[0]: AMX" in readme.read_text()
