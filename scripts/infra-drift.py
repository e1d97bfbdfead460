#!/usr/bin/env python3
"""Drift test: does infra/template.yaml give each function exactly what the function reads?

    scripts/infra-drift.py [--template infra/template.yaml] MANIFEST.json
    cargo run -q -p shared --example manifest | scripts/infra-drift.py -

The manifest is what the code declares, one entry per function package:

    {"scan-credits": {"env": ["ARCGIS_SECRET_ID", ...],        # every variable the function reads
                      "input_keys": ["dry_run", ...],          # keys its scheduled Input accepts
                      "input_examples": [{"dry_run": false}]}, # optional: value types to match
     "allocate": {...}, "monthly-report": {...}}

The template sets some of those variables and names the rest, the ones it leaves at the code's
defaults on purpose, in its top-level Metadata (`all` applies to every function):

    Metadata: {CreditSteward: {EnvLeftUnset: {all: [HTTP_TIMEOUT_SECS, ...], allocate: [...]}}}

Fails, listing every difference, when:
  - a function is in the template and not in the manifest, or the other way round;
  - the template sets a variable the function does not read (a typo, or a renamed variable);
  - the function reads a variable the template neither sets nor lists as left unset (new in
    the code), or the template lists as left unset one it does not read, or one it sets;
  - a ScheduleV2 Input is not a JSON object, uses a key outside "input_keys", or gives a key a
    JSON type that no input example has for it.

Reads the template with cfn-lint's own decoder, so it runs with infra/.tools/sam/bin/python
(scripts/infra-tools.sh makes it); started with another Python it re-runs itself with that one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PYTHON = ROOT / "infra" / ".tools" / "sam" / "bin" / "python"

try:
    import cfnlint  # noqa: F401
except ImportError:
    if TOOLS_PYTHON.exists() and Path(sys.executable) != TOOLS_PYTHON:
        os.execv(str(TOOLS_PYTHON), [str(TOOLS_PYTHON), __file__, *sys.argv[1:]])
    sys.exit("infra-drift: cfn-lint is not importable; run scripts/infra-tools.sh sam first")

sys.path.insert(0, str(ROOT / "infra" / "tests"))
import infra_lib  # noqa: E402

JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object", type(None): "null"}


def json_type(value) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def schedule_inputs(props: dict):
    """(event name, raw Input) for each ScheduleV2 event of a function."""
    for name, event in (props.get("Events") or {}).items():
        if isinstance(event, dict) and event.get("Type") == "ScheduleV2":
            yield name, (event.get("Properties") or {}).get("Input")


def check(template: dict, manifest: dict) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    functions = infra_lib.functions(template)
    left_unset = template.get("Metadata", {}).get("CreditSteward", {}).get("EnvLeftUnset", {})
    for key in sorted(set(left_unset) - set(functions) - {"all"}):
        problems.append(f"Metadata.CreditSteward.EnvLeftUnset.{key}: no such function in the template")

    for name in sorted(set(functions) - set(manifest)):
        problems.append(f"{name}: in the template ({functions[name][0]}) but not in the manifest")
    for name in sorted(set(manifest) - set(functions)):
        problems.append(f"{name}: in the manifest but the template has no function with CodeUri .../{name}")

    for name in sorted(set(functions) & set(manifest)):
        logical_id, props = functions[name]
        entry = manifest[name] if isinstance(manifest[name], dict) else {}
        where = f"{name} ({logical_id})"

        reads = set(entry.get("env", []))
        sets = set(props["Environment"]["Variables"])
        unset = set(left_unset.get("all", [])) | set(left_unset.get(name, []))
        for var in sorted(sets - reads):
            problems.append(f"{where}: env {var} is set by the template but the function does not read it")
        for var in sorted(reads - sets - unset):
            problems.append(f"{where}: env {var} is read by the function but the template neither sets it "
                            "nor lists it in Metadata.CreditSteward.EnvLeftUnset")
        for var in sorted(unset - reads):
            problems.append(f"{where}: env {var} is listed as left unset but the function does not read it")
        for var in sorted(unset & sets):
            problems.append(f"{where}: env {var} is both set and listed as left unset")

        if "input_keys" in entry:
            accepted = set(entry["input_keys"])
        else:
            accepted = {k for ex in entry.get("input_examples", []) if isinstance(ex, dict) for k in ex}
        types: dict[str, set[str]] = {}
        for example in entry.get("input_examples", []):
            if isinstance(example, dict):
                for key, value in example.items():
                    types.setdefault(key, set()).add(json_type(value))

        for event, raw in schedule_inputs(props):
            at = f"{where}: schedule {event}"
            if "input_keys" not in entry:
                if not entry.get("input_examples"):
                    problems.append(f"{at}: the manifest lists no input_keys for this function")
                    continue
                notes.append(f"{at}: no input_keys in the manifest, using the input_examples' keys {sorted(accepted)}")
            if not isinstance(raw, str):
                problems.append(f"{at}: Input is not a literal JSON string ({raw!r})")
                continue
            try:
                value = json.loads(raw)
            except ValueError as e:
                problems.append(f"{at}: Input is not valid JSON ({e})")
                continue
            if not isinstance(value, dict):
                problems.append(f"{at}: Input must be a JSON object, not {json_type(value)}")
                continue
            for key in sorted(set(value) - accepted):
                problems.append(f"{at}: Input key {key!r} is not accepted by the function (accepts {sorted(accepted)})")
            for key in sorted(set(value) & accepted):
                if key in types and json_type(value[key]) not in types[key]:
                    problems.append(
                        f"{at}: Input key {key!r} is a {json_type(value[key])}, the examples have {sorted(types[key])}")
    return problems, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", nargs="?", default="-", help="manifest JSON file, or - for stdin (default)")
    ap.add_argument("--template", default=str(ROOT / "infra" / "template.yaml"))
    args = ap.parse_args()

    raw = sys.stdin.read() if args.manifest == "-" else Path(args.manifest).read_text()
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        print(f"infra-drift: the manifest is not JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(manifest, dict):
        print("infra-drift: the manifest must be a JSON object keyed by function name", file=sys.stderr)
        return 2

    problems, notes = check(infra_lib.load_template(args.template), manifest)
    for note in notes:
        print(f"infra-drift: note: {note}")
    if problems:
        print(f"infra-drift: {args.template} and the manifest disagree ({len(problems)}):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"infra-drift: {args.template} sets what the {len(manifest)} functions read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
