#!/usr/bin/env python3
"""Variants test: the template with its optional features off and on, as each would deploy.

The optional features are parameters read through Conditions: an alarm topic of the stack's
own (AlarmEmail) or a given one (AlarmTopicArn), a VPC (VpcSubnetIds, VpcSecurityGroupIds),
a permissions boundary (PermissionsBoundary), the JWT API (JwtIssuer, JwtAudience) and the
dashboard (CreateDashboard). For
each variant this test

  1. writes the template with those parameters' defaults set to the variant's values, and
     requires cfn-lint (with the project's rules), the SAM transform and checkov (on the
     template and on its translation) to report nothing, as on the real template;
  2. resolves the SAM translation for those values (Conditions evaluated, Fn::If picked,
     resources whose Condition is false removed) and checks what CloudFormation would create.

Run with infra/.tools/sam/bin/python (scripts/infra-check.sh does):
  variants_test.py [--template infra/template.yaml] [--checkov PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra_lib  # noqa: E402
from mutation_test import checkov_results, make_cfn_lint, sam_translate, start_checkov  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

TOPIC_ARN = "arn:aws:sns:us-east-1:111122223333:ops-alerts"
EMAIL = "gis-ops@example.org"
BOUNDARY = "arn:aws:iam::111122223333:policy/DeveloperBoundary"
SUBNETS = "subnet-0123456789abcdef0,subnet-0fedcba9876543210"
GROUPS = "sg-0123456789abcdef0"
ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
AUDIENCE = "api://credit-steward,00000000-0000-0000-0000-000000000001"

VARIANTS: dict[str, dict[str, str]] = {
    "defaults (every option off)": {},
    "alarm email, no topic ARN": {"AlarmEmail": EMAIL},
    "alarm topic ARN and an email": {"AlarmTopicArn": TOPIC_ARN, "AlarmEmail": EMAIL},
    "VPC": {"VpcSubnetIds": SUBNETS, "VpcSecurityGroupIds": GROUPS},
    "permissions boundary": {"PermissionsBoundary": BOUNDARY},
    "JWT authorizer": {"JwtIssuer": ISSUER, "JwtAudience": AUDIENCE},
    "no dashboard": {"CreateDashboard": "false"},
}

NO_VALUE = object()


class Resolver:
    """Evaluates a template's Conditions and Fn::If for fixed parameter values."""

    def __init__(self, template: dict, values: dict[str, str]):
        self.params = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
        self.params.update(values)
        self.conditions = template.get("Conditions", {})
        self.cache: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self.cache:
            self.cache[name] = self.truth(self.conditions[name])
        return self.cache[name]

    def scalar(self, value):
        if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in self.params:
            return self.params[value["Ref"]]
        if isinstance(value, dict) and list(value) == ["Fn::Join"]:
            sep, items = value["Fn::Join"]
            return sep.join(str(self.scalar(i)) for i in self.scalar(items))
        if isinstance(value, list):
            return [self.scalar(v) for v in value]
        return value

    def truth(self, expr) -> bool:
        (fn, args), = expr.items()
        if fn == "Condition":
            return self.condition(args)
        if fn == "Fn::Equals":
            return self.scalar(args[0]) == self.scalar(args[1])
        if fn == "Fn::Not":
            return not self.truth(args[0])
        if fn == "Fn::And":
            return all(self.truth(a) for a in args)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in args)
        raise ValueError(f"condition function {fn} is not handled")

    def value(self, node):
        """`node` with every Fn::If decided, Ref to a parameter replaced, and AWS::NoValue dropped."""
        if isinstance(node, dict):
            if list(node) == ["Fn::If"]:
                name, yes, no = node["Fn::If"]
                return self.value(yes if self.condition(name) else no)
            if node == {"Ref": "AWS::NoValue"}:
                return NO_VALUE
            if list(node) == ["Ref"] and node["Ref"] in self.params:
                return self.params[node["Ref"]]
            if list(node) == ["Fn::Split"]:
                sep, source = node["Fn::Split"]
                source = self.value(source)
                if isinstance(source, str):
                    return source.split(sep)
            out = {}
            for key, child in node.items():
                child = self.value(child)
                if child is not NO_VALUE:
                    out[key] = child
            return out
        if isinstance(node, list):
            return [v for v in (self.value(c) for c in node) if v is not NO_VALUE]
        return node

    def resources(self, template: dict) -> dict:
        """The resources CloudFormation would create, resolved."""
        return {
            name: self.value(resource)
            for name, resource in template.get("Resources", {}).items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }


def of_type(resources: dict, kind: str) -> dict:
    return {n: r for n, r in resources.items() if r["Type"] == kind}


def statements(role: dict) -> list[dict]:
    return [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def expect(problems: list[str], variant: str, ok: bool, message: str) -> None:
    if not ok:
        problems.append(f"{variant}: {message}")


def check_variant(variant: str, values: dict[str, str], resources: dict, problems: list[str]) -> None:
    """What must hold in the translated template, resolved for `values`."""
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    topics = of_type(resources, "AWS::SNS::Topic")
    subscriptions = of_type(resources, "AWS::SNS::Subscription")
    functions = of_type(resources, "AWS::Lambda::Function")
    roles = of_type(resources, "AWS::IAM::Role")
    routes = of_type(resources, "AWS::ApiGatewayV2::Route")
    authorizers = of_type(resources, "AWS::ApiGatewayV2::Authorizer")
    expect(problems, variant, len(alarms) >= 10, f"only {len(alarms)} alarms")
    expect(problems, variant, len(roles) == 6, f"{len(roles)} roles, expected 4 execution roles and 2 schedule roles")

    # Alarm actions: the given topic, else the stack's own for an email, else none.
    if values.get("AlarmTopicArn"):
        want, topic_count = [values["AlarmTopicArn"]], 0
    elif values.get("AlarmEmail"):
        want, topic_count = [{"Ref": "AlarmTopic"}], 1
    else:
        want, topic_count = None, 0
    expect(problems, variant, len(topics) == topic_count, f"{len(topics)} SNS topics, expected {topic_count}")
    expect(problems, variant, len(subscriptions) == topic_count, f"{len(subscriptions)} subscriptions, expected {topic_count}")
    for sub in subscriptions.values():
        p = sub["Properties"]
        expect(problems, variant, (p["Protocol"], p["Endpoint"], p["TopicArn"]) == ("email", values.get("AlarmEmail"), {"Ref": "AlarmTopic"}),
               f"subscription {p} is not the AlarmEmail on AlarmTopic")
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        for key in ("AlarmActions", "OKActions"):
            expect(problems, variant, p.get(key) == want, f"{name}.{key} is {p.get(key)!r}, expected {want!r}")

    # VPC: every function in the subnets, every execution role with the interface permissions.
    for name, function in functions.items():
        vpc = function["Properties"].get("VpcConfig")
        if values.get("VpcSubnetIds"):
            expect(problems, variant, vpc == {"SubnetIds": SUBNETS.split(","), "SecurityGroupIds": GROUPS.split(",")},
                   f"{name}.VpcConfig is {vpc!r}")
        else:
            expect(problems, variant, vpc is None, f"{name} has a VpcConfig without VpcSubnetIds")
    for name, role in roles.items():
        principals = json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
        if "lambda.amazonaws.com" not in principals:
            continue  # the schedules' roles: lambda:InvokeFunction only
        has_eni = any(s.get("Sid") == "VpcNetworkInterfaces" for s in statements(role))
        expect(problems, variant, has_eni == bool(values.get("VpcSubnetIds")),
               f"{name}: VPC interface permissions {'missing' if values.get('VpcSubnetIds') else 'granted without a VPC'}")

    # Permissions boundary on every role the stack creates, the schedules' included.
    for name, role in roles.items():
        boundary = role["Properties"].get("PermissionsBoundary")
        expect(problems, variant, boundary == values.get("PermissionsBoundary"),
               f"{name}.PermissionsBoundary is {boundary!r}")

    # JWT: both routes on the second API, through an authorizer with the given issuer and audience.
    if values.get("JwtIssuer"):
        keys = {r["Properties"]["RouteKey"]: r["Properties"] for r in routes.values()}
        for key in ("POST /allocations", "GET /allocations/{job_id}"):
            route = keys.get(key)
            expect(problems, variant, route is not None and route.get("AuthorizationType") == "JWT",
                   f"no JWT-authorized route {key}")
        expect(problems, variant, len(authorizers) == 1, f"{len(authorizers)} authorizers")
        for a in authorizers.values():
            config = a["Properties"]["JwtConfiguration"]
            expect(problems, variant, config == {"Issuer": ISSUER, "Audience": AUDIENCE.split(",")},
                   f"authorizer configuration {config}")
        permissions = [p["Properties"] for p in of_type(resources, "AWS::Lambda::Permission").values()]
        jwt_permissions = [p for p in permissions if "AllocationsJwtApi" in json.dumps(p.get("SourceArn"))]
        expect(problems, variant, len(jwt_permissions) == 2, f"{len(jwt_permissions)} invoke permissions for the JWT API")
    else:
        jwt = [n for n, r in resources.items() if "Jwt" in n]
        expect(problems, variant, not jwt, f"JWT resources without JwtIssuer: {jwt}")
    dashboards = of_type(resources, "AWS::CloudWatch::Dashboard")
    want_dashboards = 0 if values.get("CreateDashboard") == "false" else 1
    expect(problems, variant, len(dashboards) == want_dashboards, f"{len(dashboards)} dashboards, expected {want_dashboards}")
    # The IAM API is there in every variant, both routes IAM-authorized (SAM writes them into
    # the API's OpenAPI body).
    paths = resources.get("AllocationsApi", {}).get("Properties", {}).get("Body", {}).get("paths", {})
    for path, method in (("/allocations", "post"), ("/allocations/{job_id}", "get")):
        security = paths.get(path, {}).get(method, {}).get("security")
        expect(problems, variant, security == [{"AWS_IAM": []}], f"IAM API {method.upper()} {path}: security {security!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", default=str(ROOT / "infra" / "template.yaml"))
    ap.add_argument("--checkov", default=str(ROOT / "infra" / ".tools" / "checkov" / "bin" / "checkov"))
    args = ap.parse_args()

    infra_lib.offline_env()
    original = infra_lib.load_template(args.template)
    work = Path(tempfile.mkdtemp(prefix="infra-variants-"))
    raw_dir, translated_dir = work / "raw", work / "translated"
    raw_dir.mkdir()
    translated_dir.mkdir()
    problems: list[str] = []
    lint = make_cfn_lint()
    files: dict[str, str] = {}
    for i, (variant, values) in enumerate(VARIANTS.items()):
        template = copy.deepcopy(original)
        for name, value in values.items():
            template["Parameters"][name]["Default"] = value
        file = f"{i:02d}.json"
        files[file] = variant
        (raw_dir / file).write_text(json.dumps(template, indent=1))
        findings = lint(template)
        expect(problems, variant, not findings, f"cfn-lint reports {findings}")
        translated, errors = sam_translate(template)
        if translated is None:
            problems.append(f"{variant}: the SAM transform fails: {errors}")
            continue
        (translated_dir / file).write_text(json.dumps(translated, indent=1))
        check_variant(variant, values, Resolver(translated, values).resources(translated), problems)
    for label, directory in (("checkov", raw_dir), ("checkov (translated)", translated_dir)):
        for file, ids in checkov_results(start_checkov(args.checkov, directory)).items():
            problems.append(f"{files.get(file, file)}: {label} fails {', '.join(ids)}")
    shutil.rmtree(work, ignore_errors=True)

    for variant in VARIANTS:
        mine = [p for p in problems if p.startswith(variant + ":")]
        print(f"{'ok' if not mine else 'FAIL'}  {variant}")
        for p in mine:
            print(f"      {p}")
    print(f"variants: {len(VARIANTS)} checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
