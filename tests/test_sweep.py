"""`rualign sweep`: search-space syntax and bad input, and real sweeps of cheap experiments on tiny models
(1 training step, 2 prompts, a few new tokens, the tiny model as judge)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rualign.cli import main
from rualign.errors import ConfigError
from rualign.sweep.schema import load_sweep

PROMPTS = [{"id": "p1", "prompt": "Назови столицу Франции.", "category": "qa"},
           {"id": "p2", "prompt": "Напиши одно слово.", "category": "writing"}]


def _experiment(tmp_path: Path, tiny: Path, val_fraction: float = 0.0) -> Path:
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in PROMPTS) + "\n",
                                            encoding="utf-8")
    path = tmp_path / "exp.yaml"
    path.write_text(f"""\
name: cheap
model: {tiny}
data:
  ss:
    tokenizer: default
    val_fraction: {val_fraction}
    sources:
      - {{name: ss, format: saiga_scored, path: bundled:saiga_scored, sample: {{count: 8}}}}
stage_defaults: {{max_steps: 1, batch_size: 2, max_length: 256, samples: 0, lora: {{r: 4, alpha: 8}}}}
stages: [{{name: sft, method: sft, data: ss}}]
eval:
  prompts: prompts.jsonl
  generation: {{max_new_tokens: 4, batch_size: 2}}
  reference: {{model: {tiny}, generation: {{max_new_tokens: 3}}}}
  judge: local:{tiny}
  target: 4
""", encoding="utf-8")
    return path


def _sweep(tmp_path: Path, body: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text("experiment: exp.yaml\n" + body, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- syntax, bad input

def _error(tmp_path, tiny, body) -> ConfigError:
    _experiment(tmp_path, tiny)
    path = _sweep(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert info.value.path == str(path)
    return info.value


def test_paths_resolve_by_name_index_and_schema_key(tmp_path, tiny_model_dir):
    _experiment(tmp_path, tiny_model_dir)
    sweep = load_sweep(_sweep(tmp_path, """\
space:
  stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}
  stages.0.lora.r: {choice: [4, 8]}
  data.ss.sources.ss.filters.answer_tokens.max: {int: [300, 700], step: 10}
  stage_defaults.max_steps: {int: [1, 2]}
  eval.generation.temperature: {uniform: [0.0, 0.5], step: 0.1}
"""))
    assert sweep.locations["stages.sft.lr"] == ("stages", 0, "lr")  # not written in the file: a schema key
    assert sweep.locations["data.ss.sources.ss.filters.answer_tokens.max"] == (
        "data", "ss", "sources", 0, "filters", "answer_tokens", "max")
    raw = sweep.experiment_for({"stages.sft.lr": 0.005, "data.ss.sources.ss.filters.answer_tokens.max": 310}, "x")
    assert raw["name"] == "x" and raw["stages"][0]["lr"] == 0.005
    assert raw["data"]["ss"]["sources"][0]["filters"] == {"answer_tokens": {"max": 310}}
    assert raw["eval"]["prompts"] == str((tmp_path / "prompts.jsonl").resolve())  # absolute: runs from anywhere
    assert sweep.base["stages"][0] == {"name": "sft", "method": "sft", "data": "ss"}  # the base is untouched


def test_unknown_path_names_the_path_line_and_nearest_keys(tmp_path, tiny_model_dir):
    err = _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.lrr: {uniform: [0.1, 1]}\n")
    assert "unknown path 'stages.sft.lrr'" in err.message and "nearest: lr" in err.message and err.line == 3
    err = _error(tmp_path, tiny_model_dir, "space:\n  stages.sfx.lr: {uniform: [0.1, 1]}\n")
    assert "has no item 'sfx'" in err.message and "nearest: sft" in err.message
    err = _error(tmp_path, tiny_model_dir, "space:\n  data.ss.sources.ss.filterz.min_score: {int: [1, 3]}\n")
    assert "'filterz' is not a key" in err.message and "nearest: filters" in err.message
    err = _error(tmp_path, tiny_model_dir, "space:\n  evl.limit: {int: [1, 2]}\n")
    assert "'evl' is not an experiment key" in err.message and "nearest: eval" in err.message
    err = _error(tmp_path, tiny_model_dir, "space:\n  stages.3.lr: {uniform: [0.1, 1]}\n")
    assert "has 1 item(s), no index 3" in err.message
    err = _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.beta: {uniform: [0.1, 1]}\n")
    assert "'beta' is not a key" in err.message  # sft has no beta (dpo does)


def test_bad_ranges_are_errors(tmp_path, tiny_model_dir):
    err = _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.lr: {uniform: [0.2, 0.1]}\n")
    assert "is inverted" in err.message and err.line == 3
    assert "is empty" in _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.lr: {uniform: [0.1, 0.1]}\n").message
    assert "low > 0" in _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.lr: {log_uniform: [0, 1]}\n").message
    assert "empty" in _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.lora.r: {choice: []}\n").message
    assert "exactly one of" in _error(tmp_path, tiny_model_dir,
                                      "space:\n  stages.sft.lr: {uniform: [0.1, 1], choice: [1]}\n").message
    assert "larger than the range" in _error(tmp_path, tiny_model_dir,
                                             "space:\n  stages.sft.max_steps: {int: [1, 3], step: 5}\n").message
    # A range whose end makes the experiment invalid is caught before any trial (lr must be > 0).
    err = _error(tmp_path, tiny_model_dir, "space:\n  stages.sft.max_steps: {int: [0, 3]}\n")
    assert "'stages.sft.max_steps' = 0 makes the experiment invalid" in err.message
    assert "'space'" in _error(tmp_path, tiny_model_dir, "space: {}\n").message
    err = _error(tmp_path, tiny_model_dir, "length: {as: objective}\npruner: {median: {}}\n"
                                           "space:\n  stages.sft.lr: {uniform: [0.1, 1]}\n")
    assert "one objective" in err.message


def test_searched_generation_without_a_pinned_reference_is_noted(tmp_path, tiny_model_dir):
    path = _experiment(tmp_path, tiny_model_dir)
    path.write_text(path.read_text(encoding="utf-8").replace(", generation: {max_new_tokens: 3}}", "}"),
                    encoding="utf-8")  # the reference inherits eval.generation
    space = "space:\n  eval.generation.max_new_tokens: {int: [2, 6]}\n"
    assert "judged against a reference generated with its own settings" in load_sweep(_sweep(tmp_path, space)).notes[0]
    pinned = "fixed:\n  eval.reference.generation: {max_new_tokens: 3}\n" + space
    assert load_sweep(_sweep(tmp_path, pinned)).notes == []


def test_dry_run_prints_the_space(tmp_path, tiny_model_dir, capsys):
    _experiment(tmp_path, tiny_model_dir)
    path = _sweep(tmp_path, "space:\n  stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stages.sft.lr" in out and "nothing was run" in out and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- real sweeps

@pytest.fixture
def counted_nodes(monkeypatch):
    """Count store nodes actually run, by kind (cached nodes are not counted)."""
    from rualign.pipeline import execute

    ran: list[str] = []
    for kind, runner in list(execute.RUNNERS.items()):
        def wrapped(node, plan, runner=runner, kind=kind):
            ran.append(kind)
            return runner(node, plan)
        monkeypatch.setitem(execute.RUNNERS, kind, wrapped)
    return ran


def _trials(out: Path) -> list[dict]:
    with open(out / "trials.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_sweep_runs_reuses_identical_recipes_resumes_and_extends(tmp_path, tiny_model_dir, counted_nodes):
    from rualign.pipeline import plan_files, run_plan

    _experiment(tmp_path, tiny_model_dir)
    # Two lr values over three trials: at least one recipe repeats, and a repeat must train nothing.
    path = _sweep(tmp_path, """\
trials: 3
sampler: random
space:
  stages.sft.lr: {choice: [0.001, 0.002]}
length: {target: 4, tolerance: 100}
""")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = _trials(out)
    assert [r["status"] for r in rows] == ["complete"] * 3
    # each stage a trial ran kept its library output (trainer dicts, warnings) in its own log, off the screen
    assert len(list((out / "_store").glob("train/*/stage.log"))) == counted_nodes.count("train")
    lrs = [float(r["stages.sft.lr"]) for r in rows]
    assert counted_nodes.count("train") == len(set(lrs)) < 3
    assert counted_nodes.count("answers") == len(set(lrs)) + 1  # + the reference, answered once
    for column in ("score", "mean_tokens", "distance", "feasible", "run_dir"):
        assert rows[0][column] != ""
    # best.yaml is the best trial's experiment; running it through the store reproduces its numbers.
    best = max(rows, key=lambda r: float(r["score"]))
    best_yaml = yaml.safe_load((out / "best.yaml").read_text(encoding="utf-8"))
    assert best_yaml["stages"][0]["lr"] == float(best["stages.sft.lr"])
    assert float(next(r for r in rows if r["run_dir"].endswith(best_yaml["name"]))["score"]) == float(best["score"])
    counted_nodes.clear()
    folders, outcome = run_plan(plan_files([out / "best.yaml"], tmp_path / "again", store=out / "_store"),
                                tmp_path / "again")
    assert set(outcome.values()) == {"cached"}
    score = json.loads((folders[0] / "judge" / "score.json").read_text())["score"]
    assert score == pytest.approx(float(best["score"]))
    # ... and from scratch (a fresh store: data, training, answers and judge all redone) too.
    folders, outcome = run_plan(plan_files([out / "best.yaml"], tmp_path / "fresh"), tmp_path / "fresh")
    assert set(outcome.values()) == {"ran"}
    fresh = json.loads((folders[0] / "judge" / "score.json").read_text())["score"]
    assert fresh == pytest.approx(float(best["score"]), abs=1e-6)
    assert (out / "report.md").is_file() and "Best: trial" in (out / "report.md").read_text(encoding="utf-8")
    assert (out / "report" / "results.csv").is_file() and (out / "plots" / "pareto.png").is_file()
    assert (out / "plots" / "importance.png").is_file() or "importance" in (out / "report.md").read_text()

    # Rerun: resumes the finished study, runs nothing.
    counted_nodes.clear()
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert counted_nodes == [] and len(_trials(out)) == 3
    # --trials grows it by exactly the difference.
    assert main(["sweep", str(path), "--out", str(out), "--trials", "4"]) == 0
    assert len(_trials(out)) == 4 and counted_nodes.count("data") == 0


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    from rualign.pipeline import execute

    _experiment(tmp_path, tiny_model_dir)
    # A constraint no trial can meet: trials are marked infeasible and best.yaml is the least violating one.
    path = _sweep(tmp_path, "trials: 2\nconstraints: [{metric: mean_tokens, min: 1000}]\n"
                            "space:\n  stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    original, calls = execute.RUNNERS["judge"], []

    def flaky(node, plan):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("judge endpoint went away")
        return original(node, plan)

    monkeypatch.setitem(execute.RUNNERS, "judge", flaky)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    rows = _trials(tmp_path / "out")
    assert [r["status"] for r in rows] == ["fail", "complete"]
    assert "RuntimeError: judge endpoint went away" in rows[0]["error"]
    assert rows[1]["feasible"] == "False" and float(rows[1]["mean_tokens"]) < 1000
    assert (tmp_path / "out" / "best.yaml").is_file()
    assert "NO trial met mean_tokens >= 1000" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_objective_that_is_no_results_column_stops_the_sweep(tmp_path, tiny_model_dir, capsys):
    _experiment(tmp_path, tiny_model_dir)
    path = _sweep(tmp_path, "trials: 3\nobjective: {metric: scor}\nspace:\n  stages.sft.lr: {choice: [0.001]}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "objective.metric 'scor' is not a results.csv column" in err and "score" in err
    assert len(_trials(tmp_path / "out")) == 1  # stopped after the first trial, not three


def test_median_pruner_on_validation_loss(tmp_path, tiny_model_dir, monkeypatch):
    from rualign.sweep import prune

    _experiment(tmp_path, tiny_model_dir, val_fraction=0.5)
    real = prune.validation_loss
    losses = iter([0.0, 10.0])  # added to the real loss: the second trial is clearly worse than the first

    def shifted(plan):
        loss, note = real(plan)
        assert loss is not None and loss > 0, note  # a real loss on the recipe's validation rows
        return loss + next(losses), note

    monkeypatch.setattr(prune, "validation_loss", shifted)
    path = _sweep(tmp_path, "trials: 2\nsampler: random\npruner: {median: {startup_trials: 1}}\n"
                            "space:\n  stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    rows = _trials(tmp_path / "out")
    assert [r["status"] for r in rows] == ["complete", "pruned"]
    assert float(rows[1]["val_loss"]) > float(rows[0]["val_loss"]) + 9
    assert rows[1]["run_dir"] == ""  # pruned before generation: no run folder


def test_two_workers_share_one_study(tmp_path, tiny_model_dir):
    """Two processes on one SQLite study: every trial runs in exactly one worker, none is lost."""
    import optuna

    _experiment(tmp_path, tiny_model_dir)
    path = _sweep(tmp_path, "trials: 4\nsampler: random\nspace:\n  stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("RUALIGN_QUIET", None)  # the workers' "trial N" lines are what this test reads
    command = [sys.executable, "-m", "rualign", "sweep", str(path), "--out", str(out)]
    out.mkdir()
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    started = [[int(line.split()[1].rstrip(":")) for line in log.splitlines() if line.startswith("trial ")
                and line.split()[1].rstrip(":").isdigit()] for log in logs]
    assert all(started), logs  # both workers did work
    numbers = started[0] + started[1]
    assert len(numbers) == len(set(numbers))  # no trial ran twice
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.get_trials()]
    assert 4 <= len(states) <= 5 and set(states) == {"COMPLETE"}  # none lost or left running
    assert sorted(numbers) == sorted(t.number for t in study.get_trials())
    assert len(_trials(out)) == len(states)


def test_knowledge_as_objective_and_constraint(tmp_path, tiny_model_dir):
    """eval.knowledge's column is an objective or a bound like any other results.csv column."""
    path = _experiment(tmp_path, tiny_model_dir)
    questions = [{"id": f"q{i}", "question": f"Сколько будет {i} + 1?", "choices": [str(i + 1), str(i + 5)],
                  "answer": 0} for i in range(4)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions),
                                      encoding="utf-8")
    path.write_text(path.read_text(encoding="utf-8") + "  knowledge: q.jsonl\n", encoding="utf-8")
    sweep = _sweep(tmp_path, "trials: 2\nobjective: {metric: knowledge}\nconstraints: [{metric: knowledge, min: 0}]\n"
                             "space:\n  stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 0
    rows = _trials(tmp_path / "out")
    assert [r["status"] for r in rows] == ["complete", "complete"]
    assert all(0 <= float(r["knowledge"]) <= 100 and r["feasible"] == "True" for r in rows)
    assert "best knowledge with knowledge >= 0" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_rualign_run_waits_for_a_node_another_process_holds(tmp_path, tiny_model_dir, counted_nodes):
    """`rualign run` takes the same per-node lock as sweep workers: a node locked elsewhere is not run twice."""
    import threading
    import time

    from rualign.pipeline import plan_files
    from rualign.pipeline.execute import execute, node_lock

    plan = plan_files([_experiment(tmp_path, tiny_model_dir)], tmp_path / "out")
    first = next(iter(plan.nodes.values()))
    done: dict = {}
    with node_lock(first.folder):
        worker = threading.Thread(target=lambda: done.update(execute(plan, say=lambda _: None)))
        worker.start()
        time.sleep(1.0)
        assert counted_nodes == [] and worker.is_alive()  # waiting on the lock, nothing run
    worker.join(timeout=300)
    assert not worker.is_alive() and set(done.values()) == {"ran"} and len(counted_nodes) == len(plan.nodes)
