"""The audit's rows as a terminal table, a markdown page and an HTML page."""

from __future__ import annotations

import html
import shutil
import textwrap

SECTIONS = ("lineage", "reproduction", "claims")


def counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """{section: {status: n}}."""
    out = {s: {} for s in SECTIONS}
    for r in rows:
        c = out.setdefault(r["section"], {})
        c[r["status"]] = c.get(r["status"], 0) + 1
    return out


def summary_line(result: dict) -> str:
    parts = []
    for section, c in counts(result["rows"]).items():
        if c:
            parts.append(f"{section} " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())))
        elif section == "reproduction":
            parts.append("reproduction not run")
    verdict = "FAILED" if result["failed"] else "passed"
    return f"Audit {verdict}: " + "; ".join(parts)


def terminal(result: dict, width: int | None = None) -> str:
    """One line per row (the detail wrapped), the sections apart, the summary last."""
    width = width or max(100, shutil.get_terminal_size((120, 20)).columns)
    w_check = max([len(r["check"]) for r in result["rows"]] + [5])
    w_subj = min(44, max([len(r["subject"]) for r in result["rows"]] + [7]))
    w_stat = len("not comparable")
    lines = [f"Audit of {result['results']} (parent run {result['parent_run']})"]
    for section in SECTIONS:
        rows = [r for r in result["rows"] if r["section"] == section]
        if not rows:
            continue
        lines += ["", f"{section.upper()}", f"{'status':<{w_stat}}  {'check':<{w_check}}  {'subject':<{w_subj}}  detail"]
        indent = w_stat + w_check + w_subj + 6
        for r in rows:
            detail = textwrap.wrap(r["detail"], max(30, width - indent)) or [""]
            subject = r["subject"] if len(r["subject"]) <= w_subj else "..." + r["subject"][-(w_subj - 3):]
            lines.append(f"{r['status']:<{w_stat}}  {r['check']:<{w_check}}  {subject:<{w_subj}}  {detail[0]}")
            lines += [" " * indent + d for d in detail[1:]]
    lines += ["", summary_line(result)]
    return "\n".join(lines)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: dict) -> str:
    lines = ["## Audit", "", f"Results folder `{result['results']}`, parent run `{result['parent_run']}`, "
             f"run group `{result['run_group']}`.", "", f"**{summary_line(result)}**", ""]
    for section in SECTIONS:
        rows = [r for r in result["rows"] if r["section"] == section]
        if not rows:
            continue
        lines += [f"### {section.capitalize()}", "", "| status | check | subject | detail |", "|---|---|---|---|"]
        lines += [f"| {r['status']} | {_md(r['check'])} | {_md(r['subject'])} | {_md(r['detail'])}"
                  + (f" <br>Source: {_md(r['source'])}" if r.get("source") else "") + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


_COLOURS = {"pass": "#d6f5d6", "fail": "#f8d0d0", "not comparable": "#e8e8e8"}


def html_page(result: dict) -> str:
    e = html.escape
    body = [f"<h1>Audit</h1><p>Results folder <code>{e(str(result['results']))}</code>, parent run "
            f"<code>{e(result['parent_run'])}</code>, run group <code>{e(result['run_group'])}</code>.</p>",
            f"<p><b>{e(summary_line(result))}</b></p>"]
    for section in SECTIONS:
        rows = [r for r in result["rows"] if r["section"] == section]
        if not rows:
            continue
        body.append(f"<h2>{section.capitalize()}</h2><table><tr><th>status</th><th>check</th><th>subject</th><th>detail</th></tr>")
        for r in rows:
            source = f"<br><small>Source: {e(r['source'])}</small>" if r.get("source") else ""
            body.append(f"<tr style='background:{_COLOURS.get(r['status'], '#fff')}'><td>{e(r['status'])}</td>"
                        f"<td>{e(r['check'])}</td><td><code>{e(r['subject'])}</code></td><td>{e(r['detail'])}{source}</td></tr>")
        body.append("</table>")
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>panel2patch audit</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def failed(rows: list[dict]) -> list[dict]:
    """The rows that fail the audit (exit status 1): lineage and reproduction failures."""
    return [r for r in rows if r["status"] == "fail" and r["section"] in ("lineage", "reproduction")]


