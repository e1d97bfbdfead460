"""Helpers shared by infra/tests/*.py and scripts/infra-drift.py. Runs in infra/.tools/sam's
Python (cfn-lint and aws-sam-cli are importable there); only the standard library otherwise.

- load_template(path): the template as plain JSON-able data, through cfn-lint's own decoder
  (it understands !Ref/!Sub/!GetAtt tags and YAML anchors).
- translate(template): the SAM transform, offline: the code path of `sam validate`, with a
  managed-policy loader that refuses to call IAM (the template uses no managed policy by name).
- functions(template): {package name: (logical id, merged properties)} from CodeUri, with
  Globals' Environment.Variables and LoggingConfig merged in.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

REGION = "us-east-1"


def offline_env() -> None:
    """Dummy credentials and no metadata probing: nothing here may reach off loopback."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAM_CLI_TELEMETRY": "0",
    }.items():
        os.environ.setdefault(key, value)


def load_template(path: str | Path) -> dict:
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if matches or not isinstance(template, dict):
        raise SystemExit(f"{path}: cannot decode: " + "; ".join(str(m) for m in matches))
    return json.loads(json.dumps(template))  # plain dicts/lists/strs, no decoder node types


class _NoManagedPolicies:
    def load(self) -> dict:
        raise RuntimeError("the template names a managed policy; offline translation will not look it up in IAM")


def translate(template: dict) -> dict:
    """SAM-translates `template` (raises samcli's InvalidSamDocumentException when SAM rejects it)."""
    offline_env()
    import logging

    import yaml
    # samtranslator warns about its (never published, local-only) metrics on garbage collection.
    logging.getLogger("samtranslator.metrics.metrics").setLevel(logging.ERROR)
    from samcli.lib.translate.sam_template_validator import SamTemplateValidator

    validator = SamTemplateValidator(copy.deepcopy(template), _NoManagedPolicies(), region=REGION)
    return yaml.safe_load(validator.get_translated_template_if_valid())


def functions(template: dict) -> dict[str, tuple[str, dict]]:
    """Functions by package name (the last part of CodeUri), with Globals.Function merged in
    the way SAM merges it (maps merged, everything else overridden) for the keys used here."""
    glob = template.get("Globals", {}).get("Function", {})
    out: dict[str, tuple[str, dict]] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = copy.deepcopy(resource.get("Properties", {}))
        env = dict(glob.get("Environment", {}).get("Variables", {}))
        env.update(props.get("Environment", {}).get("Variables", {}))
        props["Environment"] = {"Variables": env}
        logging = dict(glob.get("LoggingConfig", {}))
        logging.update(props.get("LoggingConfig", {}))
        if logging:
            props["LoggingConfig"] = logging
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise SystemExit(f"{logical_id}: CodeUri must be a local path like ../functions/<name>")
        out[Path(code_uri).name] = (logical_id, props)
    return out


if __name__ == "__main__":
    # infra_lib.py translate TEMPLATE OUT.json: the SAM-translated template, for checkov.
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "translate":
        sys.exit("usage: infra_lib.py translate TEMPLATE OUT.json")
    Path(sys.argv[3]).write_text(json.dumps(translate(load_template(sys.argv[2])), indent=1) + "\n")
