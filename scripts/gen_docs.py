"""Write the generated reference pages: docs/configuration.md from the config schema and
docs/results.md from benchmarks/results/.

    python scripts/gen_docs.py          # rewrite both pages
    python scripts/gen_docs.py --check  # exit 1 naming the page that differs (CI, via the tests)

The pages are generated so they cannot drift from what they describe: a key's type and default
come from the dataclasses, its range from the checks in their `validate()` (and the ceilings in
`config/bounds.py`), its description from the comment beside the field; every figure of
results.md comes from the JSON files as the benchmarks wrote them. The output is deterministic
(schema order, sorted files, no time of generation), so a stale page is a plain text difference.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alsoview.config import bounds  # noqa: E402
from alsoview.config.keys import optional_part  # noqa: E402
from alsoview.config.schema import Config  # noqa: E402
from alsoview.config.search_space import flatten_search_space  # noqa: E402
from alsoview.model.part import Part  # noqa: E402

CONFIGURATION = "docs/configuration.md"
RESULTS = "docs/results.md"
RESULTS_DIR = "benchmarks/results"
BENCHMARKS_README = "benchmarks/README.md"
CHECKS = ("_check", "check_setting")  # the one-line range check (errors.check_setting) and its alias
# Words of a lab notebook (tests/test_links.py refuses them in docs): free text copied from a
# results file that holds one is left out, and the page says so.
NARRATION = re.compile(r"\b(this round|last round|this session|this VM|the VM|issue\s*#?\d+)", re.I)


# ---------------------------------------------------------------- configuration.md


@dataclass(frozen=True)
class KeyDoc:
    """One row of the configuration page: a dotted key as the command line writes it."""

    key: str
    type: str
    default: str
    allowed: str
    description: str


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class source (a base's where a subclass keeps the field): the
    comment lines right above it and the one at the end of its line, joined into one line (the
    schema's descriptions live there)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            found.update(_own_field_comments(klass))
    return found


def _own_field_comments(cls: type) -> dict[str, str]:
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    own_line = {n for n in comments if lines[n - 1].lstrip().startswith("#")}
    found: dict[str, str] = {}
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef)
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above, n = [], stmt.lineno - 1
        while n in own_line:
            above.insert(0, comments[n])
            n -= 1
        end = stmt.end_lineno or stmt.lineno
        inline = [comments[n] for n in range(stmt.lineno, end + 1) if n in comments and n not in own_line]
        text = " ".join(part for part in above + inline if part)
        if text:
            found[stmt.target.id] = text
    return found


def _evaluate(node: ast.expr, scope: dict[str, Any], names: dict[str, Any]) -> Any:
    return eval(compile(ast.Expression(node), "<check>", "eval"), scope, dict(names))  # noqa: S307


def _text_of(node: ast.expr, scope: dict[str, Any], names: dict[str, Any]) -> str | None:
    """A check's key or rule as the user reads it: evaluated where its names are known (module
    constants, the part's key, simple local values), an unknown piece of an f-string as '...'."""
    try:
        value = _evaluate(node, scope, names)
        return value if isinstance(value, str) else None
    except Exception:  # noqa: BLE001 - a name known only at run time
        if not isinstance(node, ast.JoinedStr):
            return None
    pieces = []
    for piece in node.values:
        if isinstance(piece, ast.Constant):
            pieces.append(str(piece.value))
        else:
            try:
                assert isinstance(piece, ast.FormattedValue)
                pieces.append(format(_evaluate(piece.value, scope, names)))
            except Exception:  # noqa: BLE001
                pieces.append("...")
    return "".join(pieces)


def check_rules(func: Callable[..., Any], where: str) -> list[tuple[str, str]]:
    """(key, rule) of every range check a validating function makes (`check_setting(ok, key,
    rule, got)`), read from its source: the rule is the text its error message prints."""
    source = textwrap.dedent(inspect.getsource(func))
    tree = ast.parse(source)
    scope = func.__globals__
    names: dict[str, Any] = {"where": where}
    for node in ast.walk(tree):  # simple local values a rule may print (`week = 7 * 86400`)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = _evaluate(node.value, scope, names)
            except Exception:  # noqa: BLE001 - depends on the config's values
                pass
    rules: list[tuple[int, int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS:
            if len(node.args) >= 3:
                key, rule = _text_of(node.args[1], scope, names), _text_of(node.args[2], scope, names)
                if key and rule:
                    rules.append((node.lineno, node.col_offset, key, rule))
    return [(key, rule) for _, _, key, rule in sorted(rules)]  # source order (ast.walk is breadth first)


def type_name(hint: Any) -> str:
    """A type hint as a user reads it, YAML's words (`null`, `list of int`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        kinds = sorted({type(a).__name__ for a in args})
        return " or ".join(kinds)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        words = []
        for option in options:
            if typing.get_origin(option) is Literal:
                words += [f"`{a}`" for a in typing.get_args(option)]
            else:
                words.append(type_name(option))
        if len(options) < len(args):
            words.append("null")
        return " or ".join(words)
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" + ("s" if inner and inner[0] is dict else "") if inner else "list"
    if hint is dict or origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def choices_of(hint: Any) -> tuple[Any, ...]:
    """The values a Literal type allows (also inside `X | None`), else ()."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return choices_of(options[0])
    return ()


def yaml_value(value: Any) -> str:
    """A default as YAML writes it."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    match = re.match(r"(.+?[.:])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(":.") + "." if text else ""


def _children(cls: type) -> list[tuple[str, Any, type | None]]:
    """(name, hint, the dataclass under it: a part or a section, else None) of each field."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        inner = optional_part(hint) or (hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None)
        found.append((f.name, hint, inner))
    return found


def collect_rules(cls: type, prefix: str, rules: dict[str, list[str]]) -> None:
    """Every check under `cls` by key: the parts' and sections' own first, then the rules between
    them (a class's own `validate` after those of the classes under it)."""
    for name, _, inner in _children(cls):
        if inner is not None:
            collect_rules(inner, f"{prefix}{name}.", rules)
    validate = getattr(cls, "validate", None)
    if validate is not None and validate is not Part.validate:
        for key, rule in check_rules(validate, prefix.rstrip(".")):
            if rule not in rules.setdefault(key, []):
                rules[key].append(rule)


def _walk(cls: type, prefix: str, default: Any, rules: dict[str, list[str]], out: list[KeyDoc]) -> None:
    """Append a row for every key under `cls`, in the schema's order."""
    comments = field_comments(cls)
    for name, hint, inner in _children(cls):
        key, value = f"{prefix}{name}", getattr(default, name)
        part = optional_part(hint)
        if part is not None:
            description = comments.get(name) or _first_sentence(part.__doc__)
            switch = "part: `true`, `false` or its settings"
            out.append(KeyDoc(key, switch, yaml_value(value is not None), "", _sentence(description)))
            _walk(part, f"{key}.", part(), rules, out)
        elif inner is not None:
            _walk(inner, f"{key}.", value, rules, out)
        else:
            choices = choices_of(hint)
            allowed = [f"one of {', '.join(f'`{c}`' for c in choices)}"] if choices else []
            allowed += [r for r in rules.get(key, []) if r != f"one of {choices}" and r not in allowed]
            if key in bounds.LIMITS:
                allowed.append(f"<= {bounds.LIMITS[key][0]:,}")
            shown = "the built-in space (below)" if key == "tune.search_space" else yaml_value(value)
            out.append(KeyDoc(key, type_name(hint), shown, "; ".join(allowed), _sentence(comments.get(name, ""))))


def _sentence(text: str) -> str:
    """A description ending as a sentence does (its first word may be a value: `bce`, kept)."""
    text = text.strip()
    if not text:
        return ""
    return text if text.endswith((".", ")", "!", "?")) else text + "."


def config_keys() -> list[KeyDoc]:
    """Every key of the schema, in its order, with its type, default, range and description."""
    rules: dict[str, list[str]] = {}
    collect_rules(Config, "", rules)
    for key, rule in check_rules(bounds.check_bounds, ""):
        if rule not in rules.setdefault(key, []):
            rules[key].append(rule)
    found: list[KeyDoc] = []
    _walk(Config, "", Config(), rules, found)
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def configuration_page(keys: list[KeyDoc] | None = None) -> str:
    keys = config_keys() if keys is None else keys
    lines = [
        "# Configuration reference",
        "",
        "Every key of the config, generated from the schema (`alsoview/config/schema.py`, the model",
        "parts in `alsoview/model/`) by `python scripts/gen_docs.py`; edit the schema, not this page.",
        "Set a key in a YAML file under its section (`train:` then `epochs: 5`) and pass the file with",
        "`--config FILE.yaml` (repeat it to refine one file by the next), or override it after the",
        "options as `key=value` with the dotted key: `alsoview train --config configs/smoke.yaml",
        "train.epochs=5`. A typo in a key or a value of the wrong type or out of its range stops the",
        "run before any work with one line naming the key (`config: train.epochs must be >= 1",
        "(got 0)`, exit code 2). Beside each key's own range, every number must be finite and the",
        "seed a 32-bit value. A model part (type `part`) is on with `true` (its default settings) or a",
        "mapping of its settings, off with `false` or `null`; its settings' keys are listed under it.",
        "",
    ]
    sections: dict[str, list[KeyDoc]] = {}
    for doc in keys:
        section = doc.key.split(".")[0] if "." in doc.key else "top level"
        sections.setdefault(section, []).append(doc)
    for section, docs in sections.items():
        lines += [f"## {section}", ""]
        rows = [[f"`{d.key}`", d.type, d.default, d.allowed, d.description] for d in docs]
        lines += table(["key", "type", "default", "allowed", "description"], rows) + [""]
    space = flatten_search_space(Config().tune.search_space)
    lines += [
        "### The built-in search space",
        "",
        "`tune.search_space`'s default, key by key; a YAML space refines it (a key set to `null` is",
        "left out of the search).",
        "",
    ]
    rows = [
        [f"`{key}`", ", ".join(f"{kind} `{json.dumps(arg)}`" for kind, arg in spec.items())]
        for key, spec in space.items()
    ]
    lines += table(["key", "distribution"], rows) + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------- results.md


def _number(value: float | int) -> str:
    """A figure as the file holds it, at most 4 significant digits for a fraction."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


def _scalar(value: Any) -> str | None:
    """A value shown as a figure: numbers, booleans, short strings that are not local paths,
    short lists of those; None for anything else."""
    if isinstance(value, (bool, int, float)):
        return _number(value)
    if isinstance(value, str):
        ok = len(value) <= 80 and not value.startswith("/") and "\n" not in value and not NARRATION.search(value)
        return value if ok else None
    if isinstance(value, list) and 0 < len(value) <= 8 and all(isinstance(v, (bool, int, float, str)) for v in value):
        shown = [_scalar(v) for v in value]
        return ", ".join(s for s in shown if s is not None) if None not in shown else None
    return None


def figures(data: dict[str, Any], nested: bool) -> list[list[str]]:
    """(name, value) of the top-level figures, and with `nested` those one mapping down (dotted)."""
    rows = []
    for name, value in data.items():
        if name in ("machine", "table", "command", "args"):
            continue
        shown = _scalar(value)
        if shown is not None:
            rows.append([f"`{name}`", shown])
        elif isinstance(value, dict) and (nested or all(isinstance(v, bool) for v in value.values())):
            rows += [[f"`{name}.{k}`", s] for k, v in value.items() if (s := _scalar(v)) is not None]
    return rows


def row_table(rows: list[Any], max_columns: int = 10) -> list[str]:
    """A list of flat records as a table, when each has few columns; else nothing."""
    if not rows or not all(isinstance(r, dict) for r in rows):
        return []
    columns: list[str] = []
    for row in rows:
        columns += [k for k, v in row.items() if k not in columns and _scalar(v) is not None]
    if len(columns) > max_columns:
        return []
    return table(columns, [[_scalar(row.get(c)) or "" for c in columns] for row in rows])


def benchmark_rows() -> dict[str, tuple[str, str]]:
    """The benchmarks README's table, (command, what it measures) by the script or results file
    its command names."""
    found = {}
    for line in (ROOT / BENCHMARKS_README).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and line.startswith("| `"):
            for name in re.findall(r"(benchmarks/[\w/.-]+\.(?:py|sh|json))", cells[0]):
                found[name] = (cells[0].strip("`"), cells[1])
    return found


def _machine(machine: Any) -> str | None:
    if not isinstance(machine, dict):
        return None
    parts = [
        f"{machine.get('cpu')}, {machine.get('cores')} cores, GPU: {machine.get('gpu') or 'none'}",
        ", ".join(f"{k} {machine[k]}" for k in ("python", "torch", "ray") if machine.get(k)),
    ]
    when = f"; {machine['date']}" if machine.get("date") else ""
    return f"Measured on {parts[0]}; {parts[1]}{when}."


def _table_text(text: str) -> tuple[str | None, list[str]]:
    """A benchmark's own Markdown table: its first heading (what it measures) and the rest, its
    headings one level below this page's sections; lines that narrate are left out."""
    lines = text.strip().splitlines()
    title = None
    if lines and lines[0].startswith("#"):
        title, lines = lines[0].lstrip("#").strip(), lines[1:]
    body: list[str] = []
    for line in lines:
        if NARRATION.search(line):
            continue
        if line.startswith("#"):
            body += ["", f"**{line.lstrip('#').strip()}**", ""]
        else:
            body.append(line)
    while body and not body[0]:
        body.pop(0)
    return title, body


def _single_blank_lines(lines: list[str]) -> list[str]:
    return [line for i, line in enumerate(lines) if line or (i > 0 and lines[i - 1])]


def results_section(path: Path, described: dict[str, tuple[str, str]]) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    rel = path.relative_to(ROOT).as_posix()
    lines = [f"## {path.stem}", ""]
    if not isinstance(data, dict):
        return lines + [f"[{path.name}](../{rel}) holds no mapping of figures.", ""]
    title, body = _table_text(data["table"]) if isinstance(data.get("table"), str) else (None, [])
    command = data.get("command") if isinstance(data.get("command"), str) else None
    script = re.search(r"benchmarks/\w+\.py", command or "")
    name = script.group(0) if script else f"benchmarks/{path.stem}.py"
    readme_command, measures = described.get(name) or described.get(rel) or ("", "")
    what = title or measures
    lines += [f"[{path.name}](../{rel}): {what}." if what else f"[{path.name}](../{rel})."]
    if command and not NARRATION.search(command):
        lines += ["", f"Command: `{command.strip()}`"]
    elif command:
        lines += ["", "The command that wrote it is recorded in the file."]
    elif readme_command:
        lines += ["", f"Command (as benchmarks/README.md gives it): `{readme_command}`"]
    machine = _machine(data.get("machine"))
    if machine:
        lines += ["", machine]
    if body:
        lines += ["", *body]
    else:
        for key, value in data.items():
            if isinstance(value, list) and (rows := row_table(value)):
                lines += ["", f"**{key}**", "", *rows]
    rows = figures(data, nested=not body)
    if rows:
        lines += ["", *table(["figure", "value"], rows)]
    return _single_blank_lines([line.rstrip() for line in lines] + [""])


def _heading(path: Path) -> str | None:
    """A Markdown file's first heading, if it has one and it does not narrate."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not NARRATION.search(line):
            return line.lstrip("#").strip()
    return None


def results_page() -> str:
    folder = ROOT / RESULTS_DIR
    described = benchmark_rows()
    lines = [
        "# Benchmark results",
        "",
        "Every results file in `benchmarks/results/`, generated from the JSON the benchmarks wrote by",
        "`python scripts/gen_docs.py` (rerun it after a benchmark). Each section says what the file",
        "measures, the command that wrote it where the file records one, the machine, and its figures",
        "as the benchmark tabulated them (else its top-level figures). How each number is measured is",
        "in the script's docstring and [benchmarks/README.md](../benchmarks/README.md); what the",
        "figures mean for the product is in [performance.md](performance.md) and",
        "[quality.md](quality.md).",
        "",
    ]
    for path in sorted(folder.glob("*.json")):
        lines += results_section(path, described)
    others = sorted(p for p in folder.iterdir() if p.suffix in (".md", ".log"))
    if others:
        lines += ["## Other files", ""]
        for path in others:
            kind = "a run's log" if path.suffix == ".log" else _heading(path) or "a report"
            lines.append(f"- [{path.name}](../{path.relative_to(ROOT).as_posix()}): {kind}")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- writing and checking

PAGES: dict[str, Callable[[], str]] = {CONFIGURATION: configuration_page, RESULTS: results_page}


def stale_pages(pages: dict[str, Callable[[], str]] | None = None, root: Path | None = None) -> list[str]:
    """The pages whose committed text differs from what would be generated."""
    pages = PAGES if pages is None else pages
    root = ROOT if root is None else root
    stale = []
    for name, render in pages.items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render():
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page differs from what would be generated")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for name in stale:
            print(f"{name} is stale: run python scripts/gen_docs.py and commit it")
        return 1 if stale else 0
    for name, render in PAGES.items():
        (ROOT / name).write_text(render(), encoding="utf-8")
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
