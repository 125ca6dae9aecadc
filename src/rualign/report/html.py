"""report.html: one self-contained page (inline CSS/JS, plots as data URIs) with the results table, the
plots and a side-by-side answer browser.

Safety: server-rendered text goes through html.escape; the answer data is embedded as JSON in a
<script type="application/json"> block with every "<", ">" and "&" escaped as \\u003c etc. (so no model
text can close the block), and the browser script renders it with textContent only. A per-build CSP nonce
means only our own script may run, even if something slipped through.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from html import escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rualign.records import AnswerRecord, CategoryScore, Judgment, Message, PromptValue
from rualign.report.tables import CRITERIA_COLUMNS, DISPLAY_HEADERS, NOT_JUDGED, display_cells
from rualign.runs import stable_hash

if TYPE_CHECKING:
    from rualign.report.build import Run

OUTCOMES = ["win", "tie", "loss", "failure", NOT_JUDGED]
_NUMERIC = {"mean tokens", "median tokens", "gap to target", "LC joint [95% CI]", "SC joint", "per-run LC (diag.)",
            "first slot", "n", "failures"}
_PLOT_CAPTIONS = {
    "score_vs_length": "Score (95% CI) against mean answer length; dashed line: the length target.",
    "length_histograms": "Answer lengths per run (bars) against the reference answers (outline).",
    "forest": "Runs sorted by score with 95% bootstrap CIs; dashed line: parity with the reference (50).",
}


def _asset(name: str) -> str:
    return resources.files("rualign.report").joinpath("assets", name).read_text(encoding="utf-8")


def script_json(obj: object) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survives, so '</script>' cannot appear."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


class _Strings:
    """Interns texts: a prompt or reference shared by several runs is embedded once."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: str | None) -> int | None:
        if text is None:
            return None
        if text not in self._index:
            self._index[text] = len(self.values)
            self.values.append(text)
        return self._index[text]


def prompt_text(messages: list[Message]) -> str:
    """The prompt as people read it: the lone turn's text, else 'role: content' turns."""
    if len(messages) == 1:
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages)


def _outcome(run: "Run", pid: str, entry: PromptValue | None) -> tuple[str, float | None, str | None]:
    from rualign.eval.stats import TIE_EPS, outcome

    if run.score is None:
        return NOT_JUDGED, None, None
    if entry is None or entry.value is None:
        reason = run.score.failures.reasons.get(pid)
        return "failure", None, str(reason or "no score for this prompt in score.json")
    tie_eps = run.score.tie_eps if run.score.tie_eps is not None else TIE_EPS
    return outcome(entry.value, tie_eps), entry.value, None


def _verdicts(rows: list[Judgment], strings: _Strings) -> list[dict]:
    return [{"order": r.order, "mode": r.mode, "preference": r.preference, "verdict": r.verdict, "probs": r.probs,
             "error": r.error, "cached": r.cached, "identical": r.identical, "raw": strings.add(r.raw or None)}
            for r in rows]


def _item(index: int, run: "Run", answer: AnswerRecord, entry: PromptValue | None, strings: _Strings) -> dict:
    outcome, value, failure = _outcome(run, answer.id, entry)
    reference = run.references.get(answer.id)
    ref_tokens = reference.answer_tokens if reference else (entry.reference_tokens if entry else None)
    return {"run": index, "id": answer.id, "category": answer.category or (entry.category if entry else None),
            "prompt": strings.add(prompt_text(answer.prompt)), "answer": strings.add(answer.answer),
            "reference": strings.add(reference.answer) if reference else None,
            "mt": answer.answer_tokens, "rt": ref_tokens, "finish": answer.finish_reason,
            "outcome": outcome, "value": value, "failure": failure,
            "verdicts": _verdicts(run.judgments.get(answer.id, []), strings)}


def browser_data(runs: list["Run"]) -> dict:
    """The answer browser's data: one item per prompt per run."""
    strings, items = _Strings(), []
    for index, run in enumerate(runs):
        per_prompt = {e.id: e for e in run.score.per_prompt} if run.score else {}
        items += [_item(index, run, answer, per_prompt.get(answer.id), strings) for answer in run.answers]
    categories = {item["category"] or "—" for item in items}
    # Marks in localStorage are keyed by the report's runs and prompts, so two reports never share them.
    review_key = stable_hash([[run.name, [a.id for a in run.answers]] for run in runs])
    return {"runs": [run.name for run in runs], "categories": sorted(categories), "outcomes": OUTCOMES,
            "strings": strings.values, "items": items, "review_key": review_key}


def _results_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in DISPLAY_HEADERS)
    body = []
    for row in rows:
        cells = []
        for header, cell in zip(DISPLAY_HEADERS, display_cells(row)):
            cls = ' class="num"' if header in _NUMERIC else ' class="desc"' if header == "training data" else ""
            title = f' title="{escape(row["lc_warning"])}"' if header == "per-run LC (diag.)" and row["lc_warning"] else ""
            if header == "score [95% CI]" and row["judge_status"] == "unvalidated":
                cls, title = ' class="unvalidated"', ' title="the judge behind this score is unvalidated: see the notes"'

            cells.append(f"<td{cls}{title}>{escape(cell)}</td>")
        cls = ' class="not-judged"' if row["status"] == NOT_JUDGED else ""
        body.append(f'<tr{cls} data-run="{escape(row["name"])}">{"".join(cells)}</tr>')
    return f'<table id="results-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _pooled_table(rows: list[dict]) -> str:
    """Experiments judged against several references: the pooled score and each reference's (tables.pooled_rows)."""
    from rualign.report.tables import POOLED_NOTE, pooled_cells, pooled_rows

    entries = pooled_rows(rows)
    if not entries:
        return ""
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in pooled_cells(e)) + "</tr>" for e in entries)
    return (f'<h3>Pooled over references</h3><p>{escape(POOLED_NOTE.replace("*", ""))}</p><table id="pooled-table">'
            f"<thead><tr><th>experiment</th><th>pooled [95% CI]</th><th>per reference</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _pct(rate: float | None) -> str | None:
    return None if rate is None else f"{100 * rate:.1f}%"


def _diagnostics_table(rows: list[dict]) -> str:
    headers = ["run", "wins", "ties", "losses", "identical pairs", "tie rate", "order-flip rate",
               "first-slot win rate", "verdict mass", "win: relevance", "win: helpfulness", "win: clarity",
               "win: language", "p90 tokens", "prompts", "judge", "judge status"]
    body = []
    for row in rows:
        criteria = [None if row[c] is None else f"{row[c]:.1f}" for c in CRITERIA_COLUMNS]
        values = [row["name"], row["wins"], row["ties"], row["losses"], row["identical_pairs"], _pct(row["tie_rate"]),
                  _pct(row["order_flip_rate"]), _pct(row["first_slot_win_rate"]),
                  None if row["verdict_mass"] is None else f"{row['verdict_mass']:.2f}", *criteria,
                  None if row["p90_tokens"] is None else f"{row['p90_tokens']:.0f}", row["n_prompts"], row["judge"],
                  row["judge_status"]]
        body.append("<tr>" + "".join(f"<td>{escape('—' if v is None else str(v))}</td>" for v in values) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table id="diagnostics-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _category_cell(entry: CategoryScore | None) -> str:
    if entry is None or entry.score is None:
        return "<td>—</td>"
    ci = f" [{entry.ci_low:.1f}, {entry.ci_high:.1f}]" if entry.ci_low is not None and entry.ci_high is not None else ""
    return f'<td class="num">{escape(f"{entry.score:.1f}{ci} · n={entry.n}")}</td>'


def _category_table(runs: list["Run"]) -> str:
    """Per-category scores from score.json (small n: read the CIs before the point estimates)."""
    judged = [run for run in runs if run.score and run.score.per_category]
    categories = sorted({c for run in judged for c in run.score.per_category})
    if not categories:
        return ""
    head = "<th>category</th>" + "".join(f"<th>{escape(run.name)}</th>" for run in judged)
    body = [f"<tr><td>{escape(str(category))}</td>"
            f"{''.join(_category_cell(run.score.per_category.get(category)) for run in judged)}</tr>"
            for category in categories]
    return (f'<h3>Score per category</h3><table id="category-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _plots(plots: dict[str, Path]) -> str:
    figures = []
    for name, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        caption = _PLOT_CAPTIONS.get(name, name)
        wide = ' class="wide"' if name == "length_histograms" else ""
        figures.append(f'<figure id="plot-{escape(name)}"{wide}><img alt="{escape(caption)}" '
                       f'src="data:image/png;base64,{data}"><figcaption>{escape(caption)}</figcaption></figure>')
    return '<div class="plots">' + "".join(figures) + "</div>" if figures else '<p class="muted">No plots: no data.</p>'


_CONTROLS = """<div class="controls">
<label>run <select id="filter-run"><option value="">all runs</option></select></label>
<label>category <select id="filter-category"><option value="">all categories</option></select></label>
<label>outcome <select id="filter-outcome"><option value="">all outcomes</option></select></label>
<label>search <input id="search" type="search" placeholder="text in prompt, answer or reference"></label>
<span><span id="visible-count">0</span> shown · <span id="match-count">0</span> match ·
<span id="total-count">0</span> answers in total</span>
</div>
<div class="review-controls muted">Review: mark the highlighted answer with <kbd>1</kbd> model better,
<kbd>2</kbd> reference better, <kbd>3</kbd> tie, <kbd>0</kbd> clear; <kbd>j</kbd>/<kbd>k</kbd> move. Marks stay
in this browser. <span id="review-count">0</span> marked ·
<button id="export-review" type="button">Export review (JSON)</button> for <code>rualign agreement</code></div>"""


def render_report(runs: list["Run"], rows: list[dict], plots: dict[str, Path], notes: list[str], target: int) -> str:
    nonce = secrets.token_urlsafe(16)
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
           "base-uri 'none'; form-action 'none'")
    notes_html = ("<ul class=\"notes\">" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">
<link rel="icon" href="data:,">
<title>rualign report</title>
<style>{_asset("report.css")}</style></head>
<body>
<h1>rualign report</h1>
<p class="meta">Generated {escape(generated)} · {len(runs)} runs · target mean answer length {target} tokens ·
score = judge preference for the model answer over the reference, 0–100 (reference vs itself = 50), 95% bootstrap CI
over prompts; failures are left out of the score, never counted as losses.</p>
<nav><a href="#results">Results</a><a href="#plots">Plots</a><a href="#answers">Answers</a></nav>
<section id="results"><h2>Results</h2>{_results_table(rows)}{_pooled_table(rows)}{notes_html}
<h3>Judge diagnostics</h3>{_diagnostics_table(rows)}{_category_table(runs)}</section>
<section id="plots"><h2>Plots</h2>{_plots(plots)}</section>
<section id="answers"><h2>Answers: model vs reference</h2>{_CONTROLS}
<div id="items"></div><button id="more" type="button" hidden>Show more</button></section>
<script type="application/json" id="report-data">{script_json(browser_data(runs))}</script>
<script nonce="{nonce}">{_asset("report.js")}</script>
</body></html>
"""
