#!/usr/bin/env python3
"""Mutation test: break infra/template.yaml in one known way at a time and require that at
least one validator notices. A mutation nobody notices means the validators no longer guard
that property, and the test fails naming it.

Validators, as scripts/infra-check.sh runs them on the real template:
  cfn-lint  cfn-lint 1.58 with the project's rules (infra/lint-rules), in-process
  sam       the SAM transform, offline (the code path of `sam validate`)
  checkov   checkov on the template as written, and on its SAM translation

Some mutations must be caught by one named finding, not just by any validator: the ledger's
item-level IAM (lint rule E9007) has no other guard, so those require cfn-lint E9007.

Run with infra/.tools/sam/bin/python (scripts/infra-check.sh does):
  mutation_test.py [--template infra/template.yaml] [--checkov PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra_lib  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "lint-rules"


# --- how to find the parts the mutations change (each raises if the part is gone, so a
# --- refactored template makes the mutation fail loudly instead of silently not applying)

def res(t: dict, logical_id: str) -> dict:
    return t["Resources"][logical_id]


def props(t: dict, logical_id: str) -> dict:
    return res(t, logical_id)["Properties"]


def statement(t: dict, role: str, sid: str) -> dict:
    for s in props(t, role)["Policies"][0]["PolicyDocument"]["Statement"]:
        if isinstance(s, dict) and s.get("Sid") == sid:
            return s
    raise KeyError(f"{role} has no statement {sid}")


def schedule(t: dict, function: str) -> dict:
    return props(t, function)["Events"]["Schedule"]["Properties"]


def delete(d: dict, key: str) -> None:
    del d[key]  # KeyError when the key is already gone


def drop_statement(t: dict, role: str, sid: str) -> None:
    statements = props(t, role)["Policies"][0]["PolicyDocument"]["Statement"]
    statements.remove(statement(t, role, sid))


def leading_keys(t: dict, role: str, sid: str) -> dict:
    """The {operator: {dynamodb:LeadingKeys: ...}} condition of a ledger statement."""
    condition = statement(t, role, sid)["Condition"]
    if not any("dynamodb:LeadingKeys" in keys for keys in condition.values()):
        raise KeyError(f"{role}.{sid} has no dynamodb:LeadingKeys condition")
    return condition


def add_actions(s: dict, *actions: str) -> None:
    s["Action"] = [*(s["Action"] if isinstance(s["Action"], list) else [s["Action"]]), *actions]


Mutation = tuple[str, Callable[[dict], None]]
# (name, mutation, the validator and finding that must report it)
RequiredMutation = tuple[str, Callable[[dict], None], tuple[str, str]]

MUTATIONS: list[Mutation] = [
    # IAM: least privilege
    ("iam: dynamodb:* on the ledger", lambda t: statement(t, "ScanCreditsRole", "LedgerScanRuns").update(Action=["dynamodb:*"])),
    ("iam: ledger actions on Resource *", lambda t: statement(t, "AllocateRole", "LedgerRequests").update(Resource="*")),
    ("iam: any secret (Resource *)", lambda t: statement(t, "MonthlyReportRole", "ArcgisSecret").update(Resource="*")),
    ("iam: s3:* on the reports prefix", lambda t: statement(t, "MonthlyReportRole", "Reports").update(Action="s3:*")),
    ("iam: a managed policy on a role", lambda t: props(t, "AllocateRole").update(
        ManagedPolicyArns=["arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"])),
    ("iam: function on SAM's default role", lambda t: (delete(props(t, "AllocateFunction"), "Role"),
                                                       props(t, "AllocateFunction").update(Policies=["AWSLambdaBasicExecutionRole"]))),
    # Schedules
    ("schedule: no dead-letter queue", lambda t: delete(schedule(t, "ScanCreditsFunction"), "DeadLetterConfig")),
    ("schedule: no retry policy", lambda t: delete(schedule(t, "MonthlyReportFunction"), "RetryPolicy")),
    ("schedule: no Input (Scheduler envelope)", lambda t: delete(schedule(t, "ScanCreditsFunction"), "Input")),
    ("schedule: Input not a JSON object", lambda t: schedule(t, "MonthlyReportFunction").update(Input="[]")),
    ("schedule: named (OmitName off)", lambda t: schedule(t, "ScanCreditsFunction").update(OmitName=False)),
    ("schedule: legacy Schedule event", lambda t: props(t, "MonthlyReportFunction")["Events"]["Schedule"].update(Type="Schedule")),
    ("schedule: property typo", lambda t: schedule(t, "ScanCreditsFunction").update(
        ScheduleExpressionTimeZone=schedule(t, "ScanCreditsFunction").pop("ScheduleExpressionTimezone"))),
    ("function: no async dead-letter queue", lambda t: delete(props(t, "MonthlyReportFunction"), "DeadLetterQueue")),
    ("function: no reserved concurrency", lambda t: delete(props(t, "ScanCreditsFunction"), "ReservedConcurrentExecutions")),
    # API
    ("api: no IAM authorizer", lambda t: delete(props(t, "AllocationsApi"), "Auth")),
    ("api: route opts out of auth", lambda t: props(t, "AllocateFunction")["Events"]["PostAllocations"]["Properties"].update(
        Auth={"Authorizer": "NONE"})),
    ("api: implicit API (no ApiId)", lambda t: delete(props(t, "AllocateFunction")["Events"]["PostAllocations"]["Properties"], "ApiId")),
    ("api: function URL without auth", lambda t: props(t, "AllocateFunction").update(FunctionUrlConfig={"AuthType": "NONE"})),
    ("api: no access logs", lambda t: delete(props(t, "AllocationsApi"), "AccessLogSettings")),
    # Environment
    ("env: ALLOW_UNAUTHENTICATED set", lambda t: props(t, "AllocateFunction")["Environment"]["Variables"].update(
        ALLOW_UNAUTHENTICATED="true")),
    ("env: ARCGIS_SECRET_ID missing", lambda t: delete(t["Globals"]["Function"]["Environment"]["Variables"], "ARCGIS_SECRET_ID")),
    # Data
    ("bucket: public ACLs allowed", lambda t: props(t, "ReportsBucket")["PublicAccessBlockConfiguration"].update(BlockPublicAcls=False)),
    ("bucket: public policies allowed", lambda t: props(t, "ReportsBucket")["PublicAccessBlockConfiguration"].update(
        BlockPublicPolicy=False, RestrictPublicBuckets=False)),
    ("bucket: no public access block", lambda t: delete(props(t, "ReportsBucket"), "PublicAccessBlockConfiguration")),
    ("bucket: no TLS-only policy", lambda t: delete(t["Resources"], "ReportsBucketPolicy")),
    ("bucket: no default encryption", lambda t: delete(props(t, "ReportsBucket"), "BucketEncryption")),
    ("bucket: versioning suspended", lambda t: props(t, "ReportsBucket")["VersioningConfiguration"].update(Status="Suspended")),
    ("bucket: deleted with the stack", lambda t: res(t, "ReportsBucket").update(DeletionPolicy="Delete")),
    ("table: point-in-time recovery off", lambda t: props(t, "LedgerTable")["PointInTimeRecoverySpecification"].update(
        PointInTimeRecoveryEnabled=False)),
    ("table: deleted with the stack", lambda t: (delete(res(t, "LedgerTable"), "DeletionPolicy"),
                                                 delete(res(t, "LedgerTable"), "UpdateReplacePolicy"))),
    ("queue: unencrypted DLQ", lambda t: props(t, "ScanCreditsDLQ").update(SqsManagedSseEnabled=False)),
    # Observability
    ("logs: no retention", lambda t: delete(props(t, "AllocateLogGroup"), "RetentionInDays")),
    ("alarm: DLQ alarm removed", lambda t: delete(t["Resources"], "MonthlyReportDLQAlarm")),
    ("alarm: errors alarm removed", lambda t: delete(t["Resources"], "AllocateErrorsAlarm")),
]

E9007 = ("cfn-lint", "E9007")
E9004 = ("cfn-lint", "E9004")
E9001 = ("cfn-lint", "E9001")
E9008 = ("cfn-lint", "E9008")


def vpc_statement(t: dict, role: str) -> dict:
    """The VPC network-interface statement of a role (inside its Fn::If on InVpc)."""
    for s in props(t, role)["Policies"][0]["PolicyDocument"]["Statement"]:
        branch = s.get("Fn::If", [None, None])[1] if isinstance(s, dict) else None
        if isinstance(branch, dict) and branch.get("Sid") == "VpcNetworkInterfaces":
            return branch
    raise KeyError(f"{role} has no VpcNetworkInterfaces statement")


# Each stack's alarms read its own metrics only; the JWT API authorizes every route; the
# VPC exception to "no Resource '*'" stays limited to the network-interface actions.
OWN_STACK_MUTATIONS: list[RequiredMutation] = [
    ("alarm: credit-steward metric without the Stack dimension", lambda t: delete(props(t, "OrgCreditsLowAlarm"), "Dimensions"), E9008),
    ("alarm: credit-steward metric on a fixed stack name", lambda t: props(t, "MembersCriticalAlarm").update(
        Dimensions=[{"Name": "Stack", "Value": "credit-steward"}]), E9008),
    ("alarm: AWS metric on a fixed function name", lambda t: props(t, "AllocateErrorsAlarm").update(
        Dimensions=[{"Name": "FunctionName", "Value": "credit-steward-allocate"}]), E9008),
    ("api: JWT route without authorization", lambda t: props(t, "AllocationsJwtPostRoute").update(AuthorizationType="NONE"), E9004),
    ("api: JWT authorizer without an audience", lambda t: delete(props(t, "AllocationsJwtAuthorizer")["JwtConfiguration"], "Audience"), E9004),
    ("iam: VPC statement widened to other actions on *", lambda t: add_actions(vpc_statement(t, "ScanCreditsRole"), "s3:GetObject"), E9001),
]

# The ledger's item-level IAM: each must be reported by lint rule E9007 itself.
LEDGER_MUTATIONS: list[RequiredMutation] = [
    ("ledger: LeadingKeys condition removed", lambda t: delete(statement(t, "ScanCreditsRole", "LedgerRequests"), "Condition"), E9007),
    ("ledger: run records on every key", lambda t: delete(statement(t, "MonthlyReportRole", "LedgerReportRuns"), "Condition"), E9007),
    ("ledger: UpdateItem in the audit statement", lambda t: add_actions(
        statement(t, "AllocateRole", "LedgerAuditAppend"), "dynamodb:UpdateItem"), E9007),
    ("ledger: DeleteItem in the audit statement", lambda t: add_actions(
        statement(t, "ScanCreditsRole", "LedgerAuditAppend"), "dynamodb:DeleteItem"), E9007),
    ("ledger: AUDIT#* in an UpdateItem statement", lambda t: leading_keys(t, "ScanCreditsRole", "LedgerRequests").update(
        {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["REQ#*", "AUDIT#*"]}}), E9007),
    ("ledger: * (covers AUDIT#) in a DeleteItem statement", lambda t: leading_keys(t, "AllocateRole", "LedgerAllocationLock") and
        statement(t, "AllocateRole", "LedgerAllocationLock").update(Condition={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": "*"}}), E9007),
    ("ledger: ForAnyValue in an Allow", lambda t: leading_keys(t, "AllocateRole", "LedgerRequests").update(
        {"ForAnyValue:StringLike": leading_keys(t, "AllocateRole", "LedgerRequests").pop("ForAllValues:StringLike")}), E9007),
    ("ledger: Scan (no leading key) allowed", lambda t: add_actions(
        statement(t, "ScanCreditsRole", "LedgerAlertState"), "dynamodb:Scan"), E9007),
    ("ledger: audit Deny removed (allocate)", lambda t: drop_statement(t, "AllocateRole", "DenyAuditRewrite"), E9007),
    ("ledger: audit Deny removed (monthly-report)", lambda t: drop_statement(t, "MonthlyReportRole", "DenyAuditRewrite"), E9007),
    ("ledger: audit Deny without DeleteItem", lambda t: statement(t, "ScanCreditsRole", "DenyAuditRewrite")["Action"].remove(
        "dynamodb:DeleteItem"), E9007),
    ("ledger: audit Deny narrowed to one day", lambda t: leading_keys(t, "ScanCreditsRole", "DenyAuditRewrite").update(
        {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": "AUDIT#2026-01-01"}}), E9007),
]


def make_cfn_lint():
    """A cfn-lint runner with the project's rules, built once (loading the schemas is the slow part)."""
    from cfnlint.config import ConfigMixIn
    from cfnlint.decode import decode_str
    from cfnlint.runner import Runner

    runner = Runner(ConfigMixIn(["--append-rules", str(RULES), "--regions", infra_lib.REGION]))

    def lint(template: dict) -> list[str]:
        decoded, errors = decode_str(json.dumps(template))
        matches = errors or list(runner.validate_template(decoded))
        return sorted({m.rule.id for m in matches})

    return lint


def sam_translate(template: dict) -> tuple[dict | None, list[str]]:
    try:
        return infra_lib.translate(template), []
    except Exception as e:  # samcli's InvalidSamDocumentException, or a translator crash
        return None, [type(e).__name__ + ": " + str(e).splitlines()[0][:160]]


def start_checkov(checkov: str, directory: Path) -> subprocess.Popen:
    """checkov over every template in `directory`, in one background process."""
    return subprocess.Popen(
        [checkov, "-d", str(directory), "--framework", "cloudformation", "--skip-download", "--quiet", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def checkov_results(proc: subprocess.Popen) -> dict[str, list[str]]:
    """Failed check ids by file name."""
    stdout, stderr = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"checkov failed to run (exit {proc.returncode}):\n{stderr[-2000:]}")
    out = json.loads(stdout or "{}")
    reports = out if isinstance(out, list) else [out]
    failed: dict[str, list[str]] = {}
    for report in reports:
        for check in report.get("results", {}).get("failed_checks", []):
            failed.setdefault(Path(check["file_path"]).name, []).append(check["check_id"])
    return {k: sorted(set(v)) for k, v in failed.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", default=str(ROOT / "infra" / "template.yaml"))
    ap.add_argument("--checkov", default=str(ROOT / "infra" / ".tools" / "checkov" / "bin" / "checkov"))
    ap.add_argument("--keep", help="write the mutants here and keep them (default: a temp dir, removed)")
    args = ap.parse_args()

    infra_lib.offline_env()
    original = infra_lib.load_template(args.template)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="infra-mutants-"))
    raw_dir, translated_dir = work / "raw", work / "translated"
    for d in (raw_dir, translated_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    # 1. write every mutant, and let checkov read them while cfn-lint and SAM work (2 cores).
    cases: list[RequiredMutation | tuple[str, Callable[[dict], None], None]] = [
        ("baseline (unmutated)", lambda t: None, None),
        *((name, mutate, None) for name, mutate in MUTATIONS),
        *LEDGER_MUTATIONS,
        *OWN_STACK_MUTATIONS,
    ]
    mutants: dict[str, dict] = {}
    files: list[str] = []
    broken: list[str] = []
    for i, (name, mutate, _) in enumerate(cases):
        file = f"{i:02d}.json"
        files.append(file)
        template = copy.deepcopy(original)
        try:
            mutate(template)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            broken.append(f"{name}: the mutation no longer applies to the template ({type(e).__name__}: {e})")
            continue
        (raw_dir / file).write_text(json.dumps(template, indent=1))
        mutants[file] = template
    checkov_raw = start_checkov(args.checkov, raw_dir)

    # 2. cfn-lint and the SAM transform, in this process.
    lint = make_cfn_lint()
    findings: dict[str, dict[str, list[str]]] = {}
    for file, template in mutants.items():
        translated, sam_errors = sam_translate(template)
        if translated is not None:
            (translated_dir / file).write_text(json.dumps(translated, indent=1))
        findings[file] = {"cfn-lint": lint(template), "sam": sam_errors}

    # 3. checkov on what SAM made of each mutant.
    checkov_translated = start_checkov(args.checkov, translated_dir)
    for label, proc in (("checkov", checkov_raw), ("checkov(translated)", checkov_translated)):
        for file, ids in checkov_results(proc).items():
            if file in findings:
                findings[file][label] = ids

    passed = failed = 0
    problems = list(broken)
    failed += len(broken)
    for (name, _, required), file in zip(cases, files):
        if file not in findings:
            continue
        caught = {k: v for k, v in findings[file].items() if v}
        summary = "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(caught.items()))
        if file == "00.json":
            ok = not caught
            line = f"{'ok' if ok else 'FAIL'}  {name}: {'clean' if ok else 'NOT clean: ' + summary}"
        elif required is not None:
            validator, finding = required
            ok = finding in caught.get(validator, [])
            line = (f"{'ok' if ok else 'FAIL'}  {name}: caught by {summary}" if ok
                    else f"FAIL  {name}: NOT reported as {validator} {finding} ({'only ' + summary if caught else 'not detected at all'})")
        else:
            ok = bool(caught)
            line = f"{'ok' if ok else 'FAIL'}  {name}: {'caught by ' + summary if ok else 'NOT DETECTED by any validator'}"
        print(line)
        if ok:
            passed += 1
        else:
            failed += 1
            problems.append(line)
    for p in broken:
        print("FAIL  " + p)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("\nmutation test failed:\n  " + "\n  ".join(problems), file=sys.stderr)
    print(f"mutations: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
