#!/usr/bin/env python3
"""Drift test: does infra/template.yaml give each function exactly what the function reads?

    scripts/infra-drift.py [--template infra/template.yaml] MANIFEST.json
    cargo run -q -p shared --example manifest | scripts/infra-drift.py -

The manifest is what the code declares, one entry per function package:

    {"scan-credits": {"env": ["ARCGIS_SECRET_ID", ...],        # every variable the function reads
                      "input_keys": ["dry_run", ...],          # keys its scheduled Input accepts
                      "input_examples": [{"dry_run": false}],  # optional: value types to match
                      "limits": {"CRITICAL_PERCENT": [         # optional: values tried on the code
                          {"value": "0", "accepted": false, "bound": true}, ...]},
                      "metrics": {"namespace": "CreditSteward", # optional: what it publishes
                                  "names": ["MembersCritical", ...],
                                  "dimensions": {"Stack": "STACK_NAME"}}},
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
    JSON type that no input example has for it;
  - a parameter that sets a variable with "limits" accepts a value the code refuses (the deploy
    would succeed and every invocation fail), or refuses a bound the code accepts ("bound":
    the smallest or largest value accepted, or the nearest one outside), or lists in
    AllowedValues a value that is not among the probes the code accepts;
  - an alarm or the dashboard reads a metric of the namespace the function does not publish,
    or not under exactly its dimensions with this stack's values (a dimension's value is the
    template's value of the variable the manifest names: it must be AWS::StackName), so that
    two stacks in one account and region never read each other's metrics.

AWS_LAMBDA_LOG_LEVEL counts as set when the function has LoggingConfig.ApplicationLogLevel:
Lambda sets it from there.

Reads the template with cfn-lint's own decoder, so it runs with infra/.tools/sam/bin/python
(scripts/infra-tools.sh makes it); started with another Python it re-runs itself with that one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


LOG_LEVEL_VARIABLE = "AWS_LAMBDA_LOG_LEVEL"


def parameter_accepts(param: dict, value: str) -> bool:
    """Whether CloudFormation accepts `value` for a parameter with these constraints."""
    kind = param.get("Type", "String")
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            return False
        if "MinValue" in param and number < float(param["MinValue"]):
            return False
        if "MaxValue" in param and number > float(param["MaxValue"]):
            return False
        if "AllowedValues" in param and not any(float(v) == number for v in param["AllowedValues"]):
            return False
        return True
    if "AllowedValues" in param and value not in [str(v) for v in param["AllowedValues"]]:
        return False
    if "AllowedPattern" in param and not re.fullmatch(param["AllowedPattern"], value):
        return False
    if "MinLength" in param and len(value) < int(param["MinLength"]):
        return False
    if "MaxLength" in param and len(value) > int(param["MaxLength"]):
        return False
    return True


def check_limits(template: dict, functions: dict, manifest: dict, problems: list[str]) -> None:
    """Each parameter feeding a variable with limits, against the code's answers."""
    params = template.get("Parameters", {})
    seen: set[tuple[str, str]] = set()
    for name in sorted(set(functions) & set(manifest)):
        logical_id, props = functions[name]
        entry = manifest[name] if isinstance(manifest[name], dict) else {}
        values = dict(props["Environment"]["Variables"])
        level = (props.get("LoggingConfig") or {}).get("ApplicationLogLevel")
        if level is not None:
            values[LOG_LEVEL_VARIABLE] = level
        for var, probes in sorted((entry.get("limits") or {}).items()):
            ref = values.get(var)
            if not (isinstance(ref, dict) and list(ref) == ["Ref"] and ref["Ref"] in params):
                continue  # unset (the code's default) or not from a parameter
            param_name = ref["Ref"]
            if (param_name, var) in seen:
                continue
            seen.add((param_name, var))
            param = params[param_name]
            if param.get("Type", "String") not in ("String", "Number"):
                problems.append(f"parameter {param_name} ({var}): type {param.get('Type')} cannot be checked; use String or Number")
                continue
            # A listed value must be one the code is known to accept (Lambda's FATAL is not).
            accepted = {str(p["value"]) for p in probes if p["accepted"]}
            for allowed in param.get("AllowedValues", []):
                if str(allowed) not in accepted:
                    problems.append(f"parameter {param_name} ({var}) allows {str(allowed)!r}, "
                                    "which is not a value the code accepts")
            for probe in probes:
                value, code = str(probe["value"]), bool(probe["accepted"])
                ours = parameter_accepts(param, value)
                if ours and not code:
                    problems.append(f"parameter {param_name} ({var}) accepts {value!r}, which the code refuses: "
                                    "the deploy would succeed and every invocation fail")
                elif probe.get("bound") and code and not ours:
                    problems.append(f"parameter {param_name} ({var}) refuses {value!r}, which the code accepts "
                                    "(the code's range ends there)")


def _dashboard_metrics(body, stack_token: str) -> list[list]:
    """The metric arrays of every metric widget of a DashboardBody (a JSON string or Fn::Sub)."""
    if isinstance(body, dict) and "Fn::Sub" in body:
        sub = body["Fn::Sub"]
        body = sub[0] if isinstance(sub, list) else sub
    if not isinstance(body, str):
        raise ValueError("DashboardBody must be a JSON string or an Fn::Sub of one")
    text = body.replace("${AWS::StackName}", stack_token)
    text = re.sub(r"\$\{[^}]*\}", "<substituted>", text)
    doc = json.loads(text)
    out = []
    for widget in doc.get("widgets", []):
        for metric in (widget.get("properties") or {}).get("metrics", []) or []:
            out.append(metric)
    return out


def check_metrics(template: dict, functions: dict, manifest: dict, problems: list[str]) -> None:
    """Alarms and dashboards read only what the functions publish, under this stack's dimensions."""
    stack_ref = {"Ref": "AWS::StackName"}
    published: dict[str, tuple[set[str], set[str]]] = {}  # namespace: (names, dimension names)
    for name in sorted(set(functions) & set(manifest)):
        entry = manifest[name] if isinstance(manifest[name], dict) else {}
        metrics = entry.get("metrics")
        if not metrics:
            continue
        logical_id, props = functions[name]
        variables = props["Environment"]["Variables"]
        for dimension, var in sorted(metrics.get("dimensions", {}).items()):
            if variables.get(var) != stack_ref:
                problems.append(f"{name} ({logical_id}): env {var} (the {dimension} dimension of its metrics) "
                                "must be !Ref AWS::StackName, so each stack's metrics are its own")
        names, dims = published.setdefault(metrics["namespace"], (set(), set()))
        names.update(metrics.get("names", []))
        dims.update(metrics.get("dimensions", {}))

    resources = template.get("Resources", {})
    for logical_id, resource in sorted(resources.items()):
        props = resource.get("Properties", {}) or {}
        if resource.get("Type") == "AWS::CloudWatch::Alarm" and props.get("Namespace") in published:
            names, dims = published[props["Namespace"]]
            at = f"alarm {logical_id}"
            if props.get("MetricName") not in names:
                problems.append(f"{at}: {props['Namespace']}/{props.get('MetricName')} is not a metric the functions publish")
            given = {d.get("Name"): d.get("Value") for d in props.get("Dimensions", []) or [] if isinstance(d, dict)}
            if set(given) != dims or any(v != stack_ref for v in given.values()):
                problems.append(f"{at}: must filter on dimensions {sorted(dims)} set to !Ref AWS::StackName "
                                f"(has {sorted(given)}): it would read no data, or another stack's")
        elif resource.get("Type") == "AWS::CloudWatch::Dashboard":
            token = "<this-stack>"
            try:
                metrics = _dashboard_metrics(props.get("DashboardBody"), token)
            except ValueError as e:
                problems.append(f"dashboard {logical_id}: cannot read its body ({e})")
                continue
            for metric in metrics:
                if not (isinstance(metric, list) and metric and isinstance(metric[0], str)):
                    problems.append(f"dashboard {logical_id}: metric {metric!r} is not [namespace, name, dimension, value, ...]")
                    continue
                if metric[0] not in published:
                    continue
                names, dims = published[metric[0]]
                parts = [m for m in metric if not isinstance(m, dict)]
                if len(parts) < 2 or parts[1] not in names:
                    problems.append(f"dashboard {logical_id}: {metric[0]}/{parts[1] if len(parts) > 1 else '?'} "
                                    "is not a metric the functions publish")
                    continue
                pairs = dict(zip(parts[2::2], parts[3::2]))
                if set(pairs) != dims or any(v != token for v in pairs.values()):
                    problems.append(f"dashboard {logical_id}: {metric[0]}/{parts[1]} must be read under dimensions "
                                    f"{sorted(dims)} set to ${{AWS::StackName}} (has {pairs})")


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
        # Lambda sets the log level variable from LoggingConfig; whether the code reads it or not.
        by_lambda = {LOG_LEVEL_VARIABLE} if (props.get("LoggingConfig") or {}).get("ApplicationLogLevel") else set()
        unset = set(left_unset.get("all", [])) | set(left_unset.get(name, []))
        for var in sorted(sets - reads):
            problems.append(f"{where}: env {var} is set by the template but the function does not read it")
        for var in sorted(reads - sets - unset - by_lambda):
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
    check_limits(template, functions, manifest, problems)
    check_metrics(template, functions, manifest, problems)
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
