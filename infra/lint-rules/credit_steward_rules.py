"""cfn-lint rules for credit-steward's SAM template: the project's own policy.

Loaded with `cfn-lint --append-rules infra/lint-rules infra/template.yaml` (scripts/infra-check.sh
does). cfn-lint 1.x validates SAM resources as written (with Globals merged in), so these rules
read AWS::Serverless::* resources and their Events, not the translated template; the
translated template is covered by `sam validate` and by checkov in scripts/infra-check.sh.

E9001  IAM: explicit execution roles; Allow statements name actions and resources exactly
E9002  Schedules: ScheduleV2 only, with Input, OmitName, RetryPolicy and a dead-letter queue
E9003  Environment: every function gets ARCGIS_SECRET_ID; ALLOW_UNAUTHENTICATED never
E9004  API: IAM authorization on every HTTP route, no unauthenticated function URL
E9005  Data: bucket/table/queue protection (public access, TLS, versioning, PITR, encryption, Retain)
E9006  Alarms: an Errors alarm per function and a backlog alarm per dead-letter queue
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from cfnlint.rules import CloudFormationLintRule, RuleMatch

SOURCE = "infra/lint-rules/credit_steward_rules.py"
IAM_POLICY_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")


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


class IamLeastPrivilege(CloudFormationLintRule):
    id = "E9001"
    shortdesc = "IAM statements name exact actions and resources"
    description = (
        "Functions use an explicit role (no SAM Policies, no managed policies); Allow "
        "statements use no wildcard in actions, no Resource '*', no NotAction/NotResource."
    )
    source_url = SOURCE
    tags = ["credit-steward", "iam"]

    def _statements(self, document: Any, path: list) -> Iterator[tuple[dict, list]]:
        if not isinstance(document, dict):
            return
        statements = document.get("Statement", [])
        for i, statement in enumerate(_as_list(statements)):
            for concrete in _branches(statement):
                if isinstance(concrete, dict):
                    yield concrete, path + ["Statement", i]

    def _check_document(self, document: Any, path: list) -> list[RuleMatch]:
        matches = []
        for statement, spath in self._statements(document, path):
            if statement.get("Effect") != "Allow":
                continue
            for key in ("NotAction", "NotResource"):
                if key in statement:
                    matches.append(RuleMatch(spath + [key], f"{key} in an Allow statement grants everything else"))
            for action in _as_list(statement.get("Action", [])):
                if isinstance(action, str) and "*" in action:
                    matches.append(RuleMatch(spath + ["Action"], f"wildcard action {action!r}: list the exact actions"))
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
        for name, resource in _resources(cfn, "AWS::Serverless::Api", "AWS::ApiGatewayV2::Api", "AWS::ApiGateway::RestApi"):
            matches.append(RuleMatch(["Resources", name], "only the IAM-authorized AWS::Serverless::HttpApi is allowed"))
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
