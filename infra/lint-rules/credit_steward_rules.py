"""cfn-lint rules for credit-steward's SAM template: the project's own policy.

Loaded with `cfn-lint --append-rules infra/lint-rules infra/template.yaml` (scripts/infra-check.sh
does). cfn-lint 1.x validates SAM resources as written (with Globals merged in), so these rules
read AWS::Serverless::* resources and their Events, not the translated template; the
translated template is covered by `sam validate` and by checkov in scripts/infra-check.sh.

E9001  IAM: explicit execution roles; Allow statements name actions and resources exactly
E9002  Schedules: ScheduleV2 only, with Input, OmitName, RetryPolicy and a dead-letter queue
E9003  Environment: every function gets ARCGIS_SECRET_ID; ALLOW_UNAUTHENTICATED never
E9004  API: IAM authorization on every SAM HTTP route, JWT or IAM on every raw HTTP API route,
       no unauthenticated function URL
E9005  Data: bucket/table/queue protection (public access, TLS, versioning, PITR, encryption, Retain)
E9006  Alarms: an Errors alarm per function and a backlog alarm per dead-letter queue
E9007  Ledger: DynamoDB access by item kind (dynamodb:LeadingKeys); audit items append-only
E9008  Alarms read this stack's metrics only: credit-steward's by the Stack dimension, AWS's by
       a dimension naming a resource of the template
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from cfnlint.rules import CloudFormationLintRule, RuleMatch

SOURCE = "infra/lint-rules/credit_steward_rules.py"
IAM_POLICY_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
# What Lambda needs to put a function in a VPC (AWSLambdaVPCAccessExecutionRole's actions):
# EC2 supports no resource for them, so they alone may name Resource '*'.
VPC_INTERFACE_ACTIONS = frozenset({
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
})
# The namespace and dimension of the metrics the functions publish (shared/src/telemetry.rs).
METRICS_NAMESPACE = "CreditSteward"
STACK_DIMENSION = "Stack"


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _resources(cfn, *types: str) -> Iterator[tuple[str, dict]]:
    for name, resource in cfn.get_resources(list(types)).items():
        if isinstance(resource, dict):
            yield name, resource


def _props(resource: dict) -> dict:
    props = resource.get("Properties", {})
    return props if isinstance(props, dict) else {}


def _branches(value: Any) -> Iterator[Any]:
    """The concrete values behind a (possibly Fn::If-wrapped) value, without AWS::NoValue."""
    if isinstance(value, dict) and list(value) == ["Fn::If"] and isinstance(value["Fn::If"], list):
        for branch in value["Fn::If"][1:]:
            yield from _branches(branch)
    elif isinstance(value, dict) and value.get("Ref") == "AWS::NoValue":
        return
    else:
        yield value


def _refers_to(value: Any, logical_id: str) -> bool:
    """Whether `value` is a Ref/GetAtt/Sub naming `logical_id`."""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        getatt = value.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt and getatt[0] == logical_id:
            return True
        if isinstance(getatt, str) and getatt.split(".")[0] == logical_id:
            return True
        sub = value.get("Fn::Sub")
        if isinstance(sub, str):
            return "${" + logical_id + "}" in sub or "${" + logical_id + "." in sub
    return False


def _functions(cfn) -> Iterator[tuple[str, dict]]:
    yield from _resources(cfn, "AWS::Serverless::Function")


def _statements(document: Any, path: list) -> Iterator[tuple[dict, list]]:
    """The concrete statements of a policy document (both branches of an Fn::If), with paths."""
    if not isinstance(document, dict):
        return
    statements = document.get("Statement", [])
    for i, statement in enumerate(_as_list(statements)):
        for concrete in _branches(statement):
            if isinstance(concrete, dict):
                yield concrete, path + ["Statement", i]


def _policy_documents(cfn) -> Iterator[tuple[str, Any, list]]:
    """(role logical id or None, policy document, path) for every IAM policy in the template:
    roles' inline Policies, and AWS::IAM::Policy/ManagedPolicy resources once per role they
    attach to (None when they name no role of the template)."""
    for name, resource in _resources(cfn, "AWS::IAM::Role"):
        base = ["Resources", name, "Properties"]
        for i, policy in enumerate(_as_list(_props(resource).get("Policies", []))):
            if isinstance(policy, dict):
                yield name, policy.get("PolicyDocument"), base + ["Policies", i, "PolicyDocument"]
    roles = [name for name, _ in _resources(cfn, "AWS::IAM::Role")]
    for name, resource in _resources(cfn, *IAM_POLICY_TYPES):
        props = _props(resource)
        path = ["Resources", name, "Properties", "PolicyDocument"]
        attached = [r for r in roles if any(_refers_to(v, r) for v in _as_list(props.get("Roles", [])))]
        for role in attached or [None]:
            yield role, props.get("PolicyDocument"), path


def _glob(pattern: str) -> re.Pattern:
    """An IAM wildcard pattern (* and ? only, case-sensitive) as a regex."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


class IamLeastPrivilege(CloudFormationLintRule):
    id = "E9001"
    shortdesc = "IAM statements name exact actions and resources"
    description = (
        "Functions use an explicit role (no SAM Policies, no managed policies); Allow "
        "statements use no wildcard in actions, no Resource '*', no NotAction/NotResource."
    )
    source_url = SOURCE
    tags = ["credit-steward", "iam"]

    def _check_document(self, document: Any, path: list) -> list[RuleMatch]:
        matches = []
        for statement, spath in _statements(document, path):
            if statement.get("Effect") != "Allow":
                continue
            for key in ("NotAction", "NotResource"):
                if key in statement:
                    matches.append(RuleMatch(spath + [key], f"{key} in an Allow statement grants everything else"))
            for action in _as_list(statement.get("Action", [])):
                if isinstance(action, str) and "*" in action:
                    matches.append(RuleMatch(spath + ["Action"], f"wildcard action {action!r}: list the exact actions"))
            actions = {a for a in _as_list(statement.get("Action", [])) if isinstance(a, str)}
            if actions and actions <= VPC_INTERFACE_ACTIONS:
                continue
            for resource in _as_list(statement.get("Resource", [])):
                if resource == "*":
                    matches.append(RuleMatch(spath + ["Resource"], "Resource '*': name the exact resource ARN"))
        return matches

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        for name, resource in _resources(cfn, "AWS::IAM::Role"):
            props = _props(resource)
            base = ["Resources", name, "Properties"]
            if props.get("ManagedPolicyArns"):
                matches.append(RuleMatch(base + ["ManagedPolicyArns"], "managed policies are broader than needed: use inline statements"))
            for i, policy in enumerate(_as_list(props.get("Policies", []))):
                if isinstance(policy, dict):
                    matches += self._check_document(policy.get("PolicyDocument"), base + ["Policies", i, "PolicyDocument"])
        for name, resource in _resources(cfn, *IAM_POLICY_TYPES):
            matches += self._check_document(_props(resource).get("PolicyDocument"), ["Resources", name, "Properties", "PolicyDocument"])
        for name, resource in _functions(cfn):
            props = _props(resource)
            if "Role" not in props:
                matches.append(RuleMatch(["Resources", name, "Properties"], "function without an explicit Role gets SAM's role with logs on Resource '*'"))
            if "Policies" in props:
                matches.append(RuleMatch(["Resources", name, "Properties", "Policies"], "permissions belong in the function's explicit role, not SAM Policies"))
        return matches


class ScheduledInvocations(CloudFormationLintRule):
    id = "E9002"
    shortdesc = "Schedules are ScheduleV2 with Input, OmitName, RetryPolicy and a DLQ"
    description = (
        "EventBridge Scheduler (ScheduleV2) only; each schedule sends an explicit JSON object "
        "Input, sets OmitName, a RetryPolicy and a DeadLetterConfig; a scheduled function "
        "also has a DeadLetterQueue for failed asynchronous invocations."
    )
    source_url = SOURCE
    tags = ["credit-steward", "schedules"]

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        for name, resource in _functions(cfn):
            props = _props(resource)
            events = props.get("Events", {})
            if not isinstance(events, dict):
                continue
            scheduled = False
            for event_name, event in events.items():
                if not isinstance(event, dict):
                    continue
                path = ["Resources", name, "Properties", "Events", event_name]
                kind = event.get("Type")
                if kind == "Schedule":
                    matches.append(RuleMatch(path + ["Type"], "use ScheduleV2 (EventBridge Scheduler), not Schedule"))
                    continue
                if kind != "ScheduleV2":
                    continue
                scheduled = True
                eprops = event.get("Properties", {}) if isinstance(event.get("Properties"), dict) else {}
                ppath = path + ["Properties"]
                raw = eprops.get("Input")
                if not isinstance(raw, str):
                    matches.append(RuleMatch(ppath, "schedule has no literal Input: Lambda would get Scheduler's envelope"))
                else:
                    try:
                        parsed = json.loads(raw)
                    except ValueError as e:
                        parsed = None
                        matches.append(RuleMatch(ppath + ["Input"], f"Input is not valid JSON: {e}"))
                    if parsed is not None and not isinstance(parsed, dict):
                        matches.append(RuleMatch(ppath + ["Input"], "Input must be a JSON object"))
                if not _truthy(eprops.get("OmitName")):
                    matches.append(RuleMatch(ppath, "set OmitName: true so two stacks can share an account"))
                if not isinstance(eprops.get("RetryPolicy"), dict):
                    matches.append(RuleMatch(ppath, "schedule has no RetryPolicy"))
                dlq = eprops.get("DeadLetterConfig")
                if not (isinstance(dlq, dict) and ("Arn" in dlq or dlq.get("Type") == "SQS")):
                    matches.append(RuleMatch(ppath, "schedule has no DeadLetterConfig: undeliverable runs would vanish"))
            if scheduled and not isinstance(props.get("DeadLetterQueue"), dict):
                matches.append(RuleMatch(["Resources", name, "Properties"], "scheduled function has no DeadLetterQueue for failed async invocations"))
        return matches


class FunctionEnvironment(CloudFormationLintRule):
    id = "E9003"
    shortdesc = "Function environment: the secret's ARN always, local switches never"
    description = "Every function gets ARCGIS_SECRET_ID; ALLOW_UNAUTHENTICATED (a local-only switch) is never set."
    source_url = SOURCE
    tags = ["credit-steward", "environment"]

    FORBIDDEN = ("ALLOW_UNAUTHENTICATED",)

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        for name, resource in _functions(cfn):
            env = _props(resource).get("Environment", {})
            variables = env.get("Variables", {}) if isinstance(env, dict) else {}
            path = ["Resources", name, "Properties", "Environment", "Variables"]
            if not isinstance(variables, dict):
                continue
            if "ARCGIS_SECRET_ID" not in variables:
                matches.append(RuleMatch(path, "ARCGIS_SECRET_ID is not set"))
            for key in self.FORBIDDEN:
                if key in variables:
                    matches.append(RuleMatch(path + [key], f"{key} is a local-only switch and must never be deployed"))
        return matches


class ApiAuthorization(CloudFormationLintRule):
    id = "E9004"
    shortdesc = "IAM authorization on every HTTP route"
    description = (
        "HttpApis enable the IAM authorizer as default; HttpApi events name an explicit ApiId "
        "and never opt out of authorization; no function URL without auth; no REST Api events."
    )
    source_url = SOURCE
    tags = ["credit-steward", "api"]

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        for name, resource in _resources(cfn, "AWS::Serverless::HttpApi"):
            auth = _props(resource).get("Auth", {})
            path = ["Resources", name, "Properties"]
            if not (isinstance(auth, dict) and _truthy(auth.get("EnableIamAuthorizer")) and auth.get("DefaultAuthorizer") == "AWS_IAM"):
                matches.append(RuleMatch(path, "HttpApi must set Auth: {EnableIamAuthorizer: true, DefaultAuthorizer: AWS_IAM}"))
        for name, resource in _resources(cfn, "AWS::Serverless::Api", "AWS::ApiGateway::RestApi"):
            matches.append(RuleMatch(["Resources", name], "only HTTP APIs (IAM, or JWT on raw AWS::ApiGatewayV2 routes) are allowed"))
        # Raw HTTP APIs (the optional JWT API): HTTP only, no Quick Create target, and every
        # route authorized by IAM or by a JWT authorizer with an issuer and an audience.
        authorizers = dict(_resources(cfn, "AWS::ApiGatewayV2::Authorizer"))
        routes = list(_resources(cfn, "AWS::ApiGatewayV2::Route"))
        for name, resource in _resources(cfn, "AWS::ApiGatewayV2::Api"):
            props = _props(resource)
            path = ["Resources", name, "Properties"]
            if props.get("ProtocolType") != "HTTP":
                matches.append(RuleMatch(path, "only HTTP APIs are allowed"))
            if "Target" in props or "Body" in props or "BodyS3Location" in props:
                matches.append(RuleMatch(path, "routes must be AWS::ApiGatewayV2::Route resources this rule can check"))
            if not any(_refers_to(_props(r).get("ApiId"), name) for _, r in routes):
                matches.append(RuleMatch(["Resources", name], "HTTP API without routes"))
        for name, resource in routes:
            props = _props(resource)
            path = ["Resources", name, "Properties"]
            kind = props.get("AuthorizationType")
            if kind == "AWS_IAM":
                continue
            if kind != "JWT":
                matches.append(RuleMatch(path, f"route AuthorizationType is {kind!r}: use AWS_IAM or JWT"))
                continue
            target = next((a for a_name, a in authorizers.items() if _refers_to(props.get("AuthorizerId"), a_name)), None)
            config = _props(target).get("JwtConfiguration", {}) if target else {}
            if not (target and _props(target).get("AuthorizerType") == "JWT" and isinstance(config, dict)
                    and config.get("Issuer") and config.get("Audience")):
                matches.append(RuleMatch(path, "JWT route must name a JWT authorizer of the template with an Issuer and an Audience"))
        for name, resource in _functions(cfn):
            props = _props(resource)
            url = props.get("FunctionUrlConfig")
            if isinstance(url, dict) and url.get("AuthType") != "AWS_IAM":
                matches.append(RuleMatch(["Resources", name, "Properties", "FunctionUrlConfig"], "function URL without AWS_IAM auth"))
            events = props.get("Events", {})
            for event_name, event in (events.items() if isinstance(events, dict) else []):
                if not isinstance(event, dict) or event.get("Type") not in ("HttpApi", "Api"):
                    continue
                path = ["Resources", name, "Properties", "Events", event_name]
                eprops = event.get("Properties", {}) if isinstance(event.get("Properties"), dict) else {}
                if event.get("Type") == "Api":
                    matches.append(RuleMatch(path, "REST Api events are not allowed: use the HttpApi"))
                elif "ApiId" not in eprops:
                    matches.append(RuleMatch(path, "HttpApi event without ApiId creates an implicit API without IAM auth"))
                auth = eprops.get("Auth", {})
                if isinstance(auth, dict) and auth.get("Authorizer") not in (None, "AWS_IAM"):
                    matches.append(RuleMatch(path + ["Properties", "Auth"], "route overrides the IAM authorizer"))
        return matches


class DataProtection(CloudFormationLintRule):
    id = "E9005"
    shortdesc = "Buckets, tables and queues are protected and retained"
    description = (
        "S3: all public access blocked, encryption, versioning, a TLS-only bucket policy, "
        "Retain. DynamoDB: point-in-time recovery, Retain. SQS: encryption at rest."
    )
    source_url = SOURCE
    tags = ["credit-steward", "data"]

    @staticmethod
    def _retained(resource: dict) -> bool:
        return resource.get("DeletionPolicy") == "Retain" and resource.get("UpdateReplacePolicy") == "Retain"

    @staticmethod
    def _denies_plain_http(policy_doc: Any) -> bool:
        if not isinstance(policy_doc, dict):
            return False
        for statement in _as_list(policy_doc.get("Statement", [])):
            if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
                continue
            cond = statement.get("Condition", {})
            secure = cond.get("Bool", {}).get("aws:SecureTransport") if isinstance(cond, dict) and isinstance(cond.get("Bool"), dict) else None
            if secure is not None and str(secure).lower() == "false":
                return True
        return False

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        policies = [_props(r) for _, r in _resources(cfn, "AWS::S3::BucketPolicy")]
        for name, resource in _resources(cfn, "AWS::S3::Bucket"):
            props = _props(resource)
            path = ["Resources", name, "Properties"]
            block = props.get("PublicAccessBlockConfiguration", {})
            for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
                if not (isinstance(block, dict) and _truthy(block.get(flag))):
                    matches.append(RuleMatch(path + ["PublicAccessBlockConfiguration"], f"{flag} must be true"))
            if not props.get("BucketEncryption"):
                matches.append(RuleMatch(path, "bucket has no BucketEncryption"))
            versioning = props.get("VersioningConfiguration", {})
            if not (isinstance(versioning, dict) and versioning.get("Status") == "Enabled"):
                matches.append(RuleMatch(path, "bucket versioning is not Enabled"))
            if not any(_refers_to(p.get("Bucket"), name) and self._denies_plain_http(p.get("PolicyDocument")) for p in policies):
                matches.append(RuleMatch(["Resources", name], "no bucket policy denies aws:SecureTransport=false"))
            if not self._retained(resource):
                matches.append(RuleMatch(["Resources", name], "bucket needs DeletionPolicy and UpdateReplacePolicy Retain"))
        for name, resource in _resources(cfn, "AWS::DynamoDB::Table"):
            props = _props(resource)
            pitr = props.get("PointInTimeRecoverySpecification", {})
            if not (isinstance(pitr, dict) and _truthy(pitr.get("PointInTimeRecoveryEnabled"))):
                matches.append(RuleMatch(["Resources", name, "Properties"], "point-in-time recovery is not enabled"))
            if not self._retained(resource):
                matches.append(RuleMatch(["Resources", name], "table needs DeletionPolicy and UpdateReplacePolicy Retain"))
        for name, resource in _resources(cfn, "AWS::SQS::Queue"):
            props = _props(resource)
            if not (_truthy(props.get("SqsManagedSseEnabled")) or props.get("KmsMasterKeyId")):
                matches.append(RuleMatch(["Resources", name, "Properties"], "queue is not encrypted (SqsManagedSseEnabled or KmsMasterKeyId)"))
        return matches


class Alarms(CloudFormationLintRule):
    id = "E9006"
    shortdesc = "Errors alarm per function, backlog alarm per queue"
    description = (
        "Each function has an AWS/Lambda Errors alarm on its FunctionName; each SQS queue has "
        "an ApproximateNumberOfMessagesVisible alarm on its QueueName."
    )
    source_url = SOURCE
    tags = ["credit-steward", "alarms"]

    @staticmethod
    def _alarmed(alarms: list[dict], metric: str, dimension: str, logical_id: str) -> bool:
        for props in alarms:
            if props.get("MetricName") != metric:
                continue
            for dim in _as_list(props.get("Dimensions", [])):
                if isinstance(dim, dict) and dim.get("Name") == dimension and _refers_to(dim.get("Value"), logical_id):
                    return True
        return False

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        alarms = [_props(r) for _, r in _resources(cfn, "AWS::CloudWatch::Alarm")]
        for name, _ in _functions(cfn):
            if not self._alarmed(alarms, "Errors", "FunctionName", name):
                matches.append(RuleMatch(["Resources", name], "no Errors alarm for this function"))
        for name, _ in _resources(cfn, "AWS::SQS::Queue"):
            if not self._alarmed(alarms, "ApproximateNumberOfMessagesVisible", "QueueName", name):
                matches.append(RuleMatch(["Resources", name], "no ApproximateNumberOfMessagesVisible alarm for this queue"))
        return matches


class LedgerItemAccess(CloudFormationLintRule):
    id = "E9007"
    shortdesc = "Ledger access by item kind (dynamodb:LeadingKeys); audit items append-only"
    description = (
        "Every Allow of a DynamoDB action on a table of the template carries a "
        "ForAllValues:StringEquals/StringLike dynamodb:LeadingKeys condition with literal "
        "keys and names only actions that always carry a partition key (no Scan, no "
        "wildcards); no Allow lets UpdateItem, DeleteItem, BatchWriteItem or PartiQL "
        "update/delete reach an AUDIT# key (AUDIT#*, *, ...); every function's role has a "
        "Deny of those actions with ForAnyValue:StringLike dynamodb:LeadingKeys AUDIT#*."
    )
    source_url = SOURCE
    tags = ["credit-steward", "iam", "dynamodb"]

    LEADING_KEYS = "dynamodb:leadingkeys"
    ALLOW_OPERATORS = ("ForAllValues:StringEquals", "ForAllValues:StringLike")
    DENY_OPERATOR = "ForAnyValue:StringLike"
    # Actions whose request always names the partition key(s) it touches. For any other
    # action dynamodb:LeadingKeys is absent, and a ForAllValues condition on an absent key is
    # true: a Scan would read every item kind.
    KEYED_ACTIONS = (
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
        "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem",
    )
    # What could change or remove an existing audit item (PutItem is the append, see below).
    REWRITE_ACTIONS = (
        "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
        "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete",
    )
    AUDIT_PREFIX = "AUDIT#"

    # --- what a statement covers ---------------------------------------------------------

    @staticmethod
    def _actions(statement: dict) -> list[str]:
        if "NotAction" in statement:
            return ["*"]  # everything but a few: treat as every action
        return [a for a in _as_list(statement.get("Action", [])) if isinstance(a, str)]

    @staticmethod
    def _covers(patterns: list[str], action: str) -> bool:
        return any(_glob(p.lower()).fullmatch(action.lower()) for p in patterns)

    @staticmethod
    def _dynamodb(patterns: list[str]) -> list[str]:
        return [p for p in patterns if p == "*" or p.lower().startswith("dynamodb:")]

    @staticmethod
    def _on_tables(statement: dict, tables: list[str]) -> bool:
        """Whether the statement's resources name a table of the template, or may cover one."""
        if "NotResource" in statement:
            return True
        for resource in _as_list(statement.get("Resource", [])):
            for value in _branches(resource):
                if any(_refers_to(value, t) for t in tables):
                    return True
                sub = value.get("Fn::Sub") if isinstance(value, dict) else None
                if isinstance(sub, list) and sub:
                    sub = sub[0]
                if isinstance(sub, str):
                    value = re.sub(r"\$\{[^}]*\}", "*", sub)  # any ${...} may be anything
                if isinstance(value, str) and _glob(value).fullmatch("arn:aws:dynamodb:us-east-1:123456789012:table/ledger"):
                    return True  # "*" or an ARN pattern that covers any table
        return False

    @classmethod
    def _leading_keys(cls, statement: dict) -> dict[str, Any]:
        """{operator: values} of the statement's dynamodb:LeadingKeys conditions."""
        out: dict[str, Any] = {}
        cond = statement.get("Condition")
        if not isinstance(cond, dict):
            return out
        for operator, keys in cond.items():
            if isinstance(keys, dict):
                for key, values in keys.items():
                    if isinstance(key, str) and key.lower() == cls.LEADING_KEYS:
                        out[operator] = values
        return out

    @classmethod
    def _reaches_audit(cls, operator: str, value: str) -> bool:
        """Whether a key allowed by (operator, value) may start with AUDIT#."""
        if operator.endswith("StringEquals"):
            return value.startswith(cls.AUDIT_PREFIX)
        # StringLike: some string matching the pattern starts with AUDIT#, i.e. the pattern
        # still has a live state after reading the prefix (the rest can always be completed).
        states = {0}
        for ch in cls.AUDIT_PREFIX:
            states = cls._star_closure(value, states)
            states = {i + (value[i] != "*") for i in states
                      if i < len(value) and value[i] in ("*", "?", ch)}
            if not states:
                return False
        return True

    @staticmethod
    def _star_closure(pattern: str, states: set[int]) -> set[int]:
        out, todo = set(), list(states)
        while todo:
            i = todo.pop()
            if i not in out:
                out.add(i)
                if i < len(pattern) and pattern[i] == "*":
                    todo.append(i + 1)
        return out

    @classmethod
    def _covers_all_audit(cls, pattern: str) -> bool:
        """Whether a StringLike pattern matches every key that starts with AUDIT#."""
        star = pattern.find("*")
        if star < 0 or set(pattern[star:]) != {"*"} or star > len(cls.AUDIT_PREFIX):
            return False
        return all(c in ("?", want) for c, want in zip(pattern[:star], cls.AUDIT_PREFIX))

    # --- the checks ----------------------------------------------------------------------

    def _check_allow(self, statement: dict, spath: list) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        actions = self._dynamodb(self._actions(statement))
        sid = statement.get("Sid", "(no Sid)")
        for action in actions:
            if "*" in action or "?" in action:
                matches.append(RuleMatch(spath + ["Action"], f"{sid}: wildcard action {action!r} on the ledger: name each item action"))
            elif action.lower() not in (a.lower() for a in self.KEYED_ACTIONS):
                matches.append(RuleMatch(spath + ["Action"], f"{sid}: {action} carries no partition key, so a dynamodb:LeadingKeys "
                                         "condition does not restrict it (ForAllValues on an absent key is true)"))
        leading = self._leading_keys(statement)
        if not leading:
            matches.append(RuleMatch(spath, f"{sid}: allows {', '.join(actions)} on the ledger without a dynamodb:LeadingKeys "
                                     "condition, i.e. on every item kind"))
            allowed: list[tuple[str, str]] = [("ForAllValues:StringLike", "*")]
        else:
            allowed = []
            for operator, values in leading.items():
                if operator not in self.ALLOW_OPERATORS:
                    matches.append(RuleMatch(spath + ["Condition", operator], f"{sid}: dynamodb:LeadingKeys under {operator}: use "
                                             + " or ".join(self.ALLOW_OPERATORS)))
                for value in _as_list(values):
                    if isinstance(value, str):
                        allowed.append((operator, value))
                    else:
                        matches.append(RuleMatch(spath + ["Condition", operator], f"{sid}: dynamodb:LeadingKeys values must be "
                                                 f"literal strings to be checked, not {value!r}"))
        rewrites = [a for a in self.REWRITE_ACTIONS if self._covers(actions, a)]
        audit = [v for op, v in allowed if self._reaches_audit(op, v)]
        if rewrites and audit:
            keys = f"keys {audit}" if leading else "every key"
            matches.append(RuleMatch(spath, f"{sid}: allows {', '.join(rewrites)} on {keys}, which reach audit items "
                                     f"({self.AUDIT_PREFIX}...): the audit trail is append-only (PutItem)"))
        return matches

    def _is_audit_deny(self, statement: Any, tables: list[str]) -> bool:
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny" or "NotAction" in statement:
            return False
        if not self._on_tables(statement, tables):
            return False
        actions = self._dynamodb(self._actions(statement))
        if not all(self._covers(actions, a) for a in self.REWRITE_ACTIONS):
            return False
        cond = statement.get("Condition")
        # Exactly one condition: any other would narrow the Deny.
        if not (isinstance(cond, dict) and list(cond) == [self.DENY_OPERATOR] and isinstance(cond[self.DENY_OPERATOR], dict)):
            return False
        keys = cond[self.DENY_OPERATOR]
        if [k.lower() for k in keys if isinstance(k, str)] != [self.LEADING_KEYS] or len(keys) != 1:
            return False
        return any(isinstance(v, str) and self._covers_all_audit(v) for v in _as_list(next(iter(keys.values()))))

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        tables = [name for name, _ in _resources(cfn, "AWS::DynamoDB::Table")]
        if not tables:
            return matches
        denied: set[str] = set()
        checked: set[str] = set()  # a policy attached to two roles is checked once
        for role, document, path in _policy_documents(cfn):
            for statement, spath in _statements(document, path):
                if not self._on_tables(statement, tables) or not self._dynamodb(self._actions(statement)):
                    continue
                key = json.dumps([spath, statement], sort_keys=True, default=str)
                if statement.get("Effect") == "Allow" and key not in checked:
                    checked.add(key)
                    matches += self._check_allow(statement, spath)
            # The Deny must hold unconditionally: not inside an Fn::If.
            statements = document.get("Statement", []) if isinstance(document, dict) else []
            if role and any(self._is_audit_deny(s, tables) for s in _as_list(statements)):
                denied.add(role)
        for name, resource in _functions(cfn):
            role_ref = _props(resource).get("Role")
            path = ["Resources", name, "Properties", "Role"]
            roles = [r for r, _ in _resources(cfn, "AWS::IAM::Role") if _refers_to(role_ref, r)]
            if not roles:
                matches.append(RuleMatch(path if role_ref is not None else path[:-1],
                                         "the function's Role is not a role of this template, so its ledger access cannot be checked"))
            for role in roles:
                if role not in denied:
                    matches.append(RuleMatch(["Resources", role, "Properties", "Policies"],
                                             f"{role} (role of {name}) has no Deny of {', '.join(self.REWRITE_ACTIONS)} with "
                                             f"{self.DENY_OPERATOR} dynamodb:LeadingKeys {self.AUDIT_PREFIX}* on the ledger"))
        return matches


class AlarmsOnOwnStack(CloudFormationLintRule):
    id = "E9008"
    shortdesc = "Alarms read this stack's metrics only"
    description = (
        "Two stacks in one account and region must not trip each other's alarms: an alarm on "
        "a credit-steward metric filters on the Stack dimension set to AWS::StackName; an "
        "alarm on an AWS metric names, in a dimension, a resource of this template."
    )
    source_url = SOURCE
    tags = ["credit-steward", "alarms"]

    def match(self, cfn) -> list[RuleMatch]:
        matches: list[RuleMatch] = []
        logical_ids = set(cfn.template.get("Resources", {}))
        for name, resource in _resources(cfn, "AWS::CloudWatch::Alarm"):
            props = _props(resource)
            path = ["Resources", name, "Properties"]
            if "Metrics" in props:
                matches.append(RuleMatch(path + ["Metrics"], "metric-math alarms are not checked: alarm on one metric with Dimensions"))
                continue
            dims = [d for d in _as_list(props.get("Dimensions", [])) if isinstance(d, dict)]
            if props.get("Namespace") == METRICS_NAMESPACE:
                stack = [d for d in dims if d.get("Name") == STACK_DIMENSION]
                if not (len(stack) == 1 and stack[0].get("Value") == {"Ref": "AWS::StackName"}):
                    matches.append(RuleMatch(path, f"{METRICS_NAMESPACE} alarm must filter on Dimensions "
                                                   f"[{{Name: {STACK_DIMENSION}, Value: !Ref AWS::StackName}}]"))
                if len(dims) != len(stack):
                    matches.append(RuleMatch(path, f"the functions publish {METRICS_NAMESPACE} metrics under "
                                                   f"{STACK_DIMENSION} alone: another dimension matches no data"))
            elif not any(any(_refers_to(d.get("Value"), r) for r in logical_ids) for d in dims):
                matches.append(RuleMatch(path, "alarm on an AWS metric must name a resource of this stack in a dimension "
                                               "(a fixed name would read another stack's metric)"))
        return matches
