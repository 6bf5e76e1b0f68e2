#!/usr/bin/env python3
"""Generate the parameter tables of the chart READMEs from the `## @param` annotations.

values.yaml annotations (the bitnami readme-generator convention):
    ## @section Title           starts a table
    ## @param dotted.key Text   one row; the default comes from the parsed values.yaml
For a library chart (no values) the table lists its helpers: every `define` with the
comment block above it.

The table goes between `<!-- parameters:start -->` and `<!-- parameters:end -->` in the
chart's README.md. `--check` changes nothing and exits 1 when a README is out of date, when
a key of values.yaml has no @param (a @param on a map covers its children) or when a @param
names a key that does not exist.

Usage: scripts/chart_readme.py [--check] [chart_dir ...]   (default: every chart under charts/)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- parameters:start -->"
END = "<!-- parameters:end -->"
SECTION = re.compile(r"^##\s*@section\s+(?P<title>.+?)\s*$")
PARAM = re.compile(r"^##\s*@param\s+(?P<key>\S+)\s+(?P<text>.+?)\s*$")
DEFINE = re.compile(r'\{\{-?\s*define\s+"(?P<name>[^"]+)"\s*-?\}\}')
MISSING = object()


@dataclass
class Section:
    title: str
    params: list[tuple[str, str]] = field(default_factory=list)


def parse_annotations(text: str) -> list[Section]:
    sections: list[Section] = []
    for line in text.splitlines():
        if match := SECTION.match(line.strip()):
            sections.append(Section(match["title"]))
        elif match := PARAM.match(line.strip()):
            if not sections:
                sections.append(Section("Parameters"))
            sections[-1].params.append((match["key"], match["text"]))
    return sections


def lookup(values: object, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return MISSING
        values = values[part]
    return values


def leaf_keys(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys.extend(leaf_keys(value, f"{path}."))
        else:
            keys.append(path)
    return keys


def cell(value: object) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return "`" + text.replace("|", "\\|") + "`"


def values_tables(chart: Path) -> tuple[str, list[str]]:
    """Markdown of the parameter tables, and the problems found."""
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text) or {}
    sections = parse_annotations(text)
    problems = []
    documented = [key for section in sections for key, _ in section.params]
    for key in documented:
        if lookup(values, key) is MISSING:
            problems.append(f"{chart.name}: @param {key} names no key of values.yaml")
    for key in leaf_keys(values):
        if not any(key == doc or key.startswith(f"{doc}.") for doc in documented):
            problems.append(f"{chart.name}: {key} has no @param")
    out = []
    for section in sections:
        out += [f"### {section.title}", "", "| Name | Description | Default |", "| --- | --- | --- |"]
        for key, description in section.params:
            default = lookup(values, key)
            shown = cell(default) if default is not MISSING else ""
            text = description.replace("|", "\\|")
            out.append(f"| `{key}` | {text} | {shown} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n", problems


def helper_table(chart: Path) -> str:
    rows = ["| Helper | What it gives |", "| --- | --- |"]
    for path in sorted((chart / "templates").glob("_*.tpl")):
        text = path.read_text()
        for match in DEFINE.finditer(text):
            before = text[: match.start()].rstrip()
            lines = []
            if before.endswith("*/}}"):
                body = before[before.rfind("{{/*") + 4 : -4]
                lines = [line.strip() for line in body.strip().splitlines()]
                lines = [line for line in lines if line and not line.startswith("Usage")]
            summary = " ".join(lines).replace("|", "\\|")
            rows.append(f'| `include "{match["name"]}"` ({path.name}) | {summary} |')
    return "\n".join(rows) + "\n"


def generated(chart: Path) -> tuple[str, list[str]]:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    if meta.get("type") == "library":
        return helper_table(chart), []
    return values_tables(chart)


def updated_readme(readme: str, table: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md needs the markers {START} and {END}")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n<!-- generated by scripts/chart_readme.py: do not edit by hand -->\n\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a README is stale")
    parser.add_argument("charts", nargs="*", type=Path)
    args = parser.parse_args(argv)
    charts = args.charts or sorted(path.parent for path in (ROOT / "charts").glob("*/Chart.yaml"))
    failures = []
    for chart in charts:
        table, problems = generated(chart)
        failures += problems
        readme_path = chart / "README.md"
        current = readme_path.read_text()
        wanted = updated_readme(current, table)
        if wanted != current:
            if args.check:
                failures.append(f"{readme_path}: parameter table is out of date (run scripts/chart_readme.py)")
            else:
                readme_path.write_text(wanted)
                print(f"updated {readme_path}")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
