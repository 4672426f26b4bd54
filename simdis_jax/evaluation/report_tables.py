"""The results table as text: its columns, the markdown of results.md, the rows of results.json, and the markdown's
tables as aligned plain text for the console. The rows themselves are evaluation/report.py's."""

import re
import unicodedata
from typing import Any, Dict, List, Sequence

from simdis_jax import workdir as wf

MISSING = "—"  # a cell without a value

# (header, row key) of the markdown table; results.json holds these keys and more.
COLUMNS = (
  ("run", "run_cell"),
  ("method", "method_label"),
  ("views", "views_cell"),
  ("network", "network_cell"),
  ("teacher", "teacher_arch"),
  ("encoder", "encoder"),
  ("epochs", "epochs_cell"),
  ("batch", "batch_cell"),
  ("kNN top-1 (step 0)", "knn_cell"),
  ("linear top-1", "linear_top1_cell"),
  ("linear top-5", "linear_top5_cell"),
  ("protocol", "protocol_cell"),
  ("wall time", "wall_time_cell"),
  ("images/s", "images_per_sec_cell"),
)


def _escape(cell: str) -> str:
  return str(cell).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Dict[str, Any]]) -> str:
  """The rows as a GitHub-flavoured markdown table."""
  lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_escape(row[key]) for _, key in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def markdown_report(rows: Sequence[Dict[str, Any]], figures: Sequence[str]) -> str:
  """results.md: the table, what its columns mean, and links to the figures."""
  parts = [
    "# Results\n\n",
    markdown_table(rows),
    "\nkNN top-1: weighted cosine kNN of the encoder at the end of the run (latest evaluation for "
    "an unfinished run), its value at step 0 in brackets: the untrained network's, except for a teacher "
    "restored trained and frozen (SimDis-Off, SEED). Views: the student's targets in the paper's "
    "notation, or what the method trains on. Linear top-1/top-5: "
    f"from {wf.LINEAR_EVAL_FILE}. Accuracies in %. Wall time and images/s: the pretraining process "
    "that finished the run (the latest logged value for an unfinished run). "
    f"{MISSING}: not available.\n",
  ]
  if figures:
    parts.append("\n## Figures\n\n" + "\n".join(f"![{f}]({f})" for f in figures) + "\n")
  return "".join(parts)


def json_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The rows for results.json: raw values plus the formatted table cells under 'cells'."""
  out = []
  for row in rows:
    item = {k: v for k, v in row.items() if not k.endswith("_cell")}
    item["cells"] = {header: row[key] for header, key in COLUMNS}
    out.append(item)
  return out


def plain_text(markdown: str, drop: Sequence[str] = ("protocol",)) -> str:
  """The markdown's tables as aligned plain text for the console (columns in `drop` left out); other lines as is.

  Figure links and markdown markup stay in results.md; the console gets what a person reads.
  """
  out, block = [], []

  def flush():
    if not block:
      return
    rows = [[c.strip().replace("\\|", "|") for c in re_split_cells(line)] for line in block if not _is_rule(line)]
    keep = [i for i, h in enumerate(rows[0]) if h not in drop]
    rows = [[r[i] if i < len(r) else "" for i in keep] for r in rows]
    widths = [max(_width(r[i]) for r in rows) for i in range(len(keep))]
    fmt = lambda r: "  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths)).rstrip()
    out.extend([fmt(rows[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows[1:]])
    block.clear()

  for line in markdown.splitlines():
    if line.startswith("|"):
      block.append(line)
      continue
    flush()
    if line.startswith("!["):  # a figure link: the console names the file
      out.append("  " + line[line.index("](") + 2 :].rstrip(")"))
      continue
    out.append(line.lstrip("#").strip() if line.startswith("#") else line)
  flush()
  return "\n".join(out).strip("\n") + "\n"


def re_split_cells(line: str) -> List[str]:
  """The cells of one markdown table line (an escaped '\\|' inside a cell does not split it)."""
  return re.split(r"(?<!\\)\|", line.strip().strip("|"))


def _width(text: str) -> int:
  # Columns a terminal gives the text: the paper's T̂ is T plus a combining accent, one column, two characters.
  return sum(1 for ch in text if not unicodedata.combining(ch))


def _is_rule(line: str) -> bool:
  return set(line.replace("|", "").strip()) <= set("-: ")
