"""The AWS SAM template of the serverless mode (deploy/aws/template.yaml), checked offline.

cfn-lint validates it against the CloudFormation and SAM schemas; where aws-sam-translator is
installed, the template is also transformed into plain CloudFormation (what `sam deploy` sends)
and that is linted too, which reaches the event source mappings SAM generates. The rest reads
the template (with cfn-lint's decoder, which knows the `!Ref`/`!Sub` tags) and holds it to the
plan: the entry points and settings the code expects, the table layout, the outbox path, the
retry and alarm set-up, and least privilege in every role.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "aws"
TEMPLATE = DEPLOY / "template.yaml"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

HANDLERS = {
    "ApiFunction": "tidings.entrypoints.aws_lambda.http.handler",
    "WebSocketFunction": "tidings.entrypoints.aws_lambda.websocket.handler",
    "OutboxFunction": "tidings.entrypoints.aws_lambda.outbox.handler",
    "WorkerFunction": "tidings.entrypoints.aws_lambda.worker.handler",
    "SchedulerFunction": "tidings.entrypoints.aws_lambda.scheduler.handler",
}
# Functions that publish to users' streams through the API Gateway Management API.
PUBLISHERS = {"ApiFunction", "WebSocketFunction", "WorkerFunction", "SchedulerFunction"}
ENVIRONMENT = {
    "TIDINGS_DATABASE_URL", "TIDINGS_QUEUE_URL", "TIDINGS_WEBSOCKET_ENDPOINT",
    "TIDINGS_SECRET_KEY_ARN", "TIDINGS_EMAIL_FROM",
    "TIDINGS_AWS_SES_REGION", "TIDINGS_AWS_SNS_REGION", "TIDINGS_PUBLIC_URL",
    "TIDINGS_BROADCAST_BATCH_SIZE",
}
# Functions that build the container, so read the keys' secrets at their first start.
CONTAINER_BUILDERS = {"ApiFunction", "WebSocketFunction", "WorkerFunction", "SchedulerFunction"}
SECRETS = {"SecretKeySecret", "AdminKeySecret"}
# The operator's key serves the HTTP API's /v1/apps routes: no other function has it.
ADMIN_KEY_READERS = {"ApiFunction"}
# Actions AWS authorises only against Resource "*" (no resource-level permission), and why
# each one is needed. Anything else on "*" is a finding.
STAR_RESOURCE_ALLOWED = {
    "sns:Publish": "SMS is published to a phone number, which has no ARN for IAM to match",
}
TABLE_RESOURCES = {"Table.Arn", "${Table.Arn}/index/*", "Table.StreamArn", "${Table.Arn}/stream/*"}
CONNECTIONS = re.compile(
    r"^arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
    r"\$\{WebSocketApi\}/\$\{Stage\}/(POST|GET|DELETE)/@connections/\*$")


def _cfnlint() -> Any:
    try:
        import cfnlint.api
        import cfnlint.decode
    except ImportError:
        message = "cfn-lint is not installed (pip install 'cfn-lint>=1.58')"
        if ON_CI:
            pytest.fail(message + " (CI=true: the deployment template must be checked)")
        pytest.skip(message)
    return cfnlint


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    cfnlint = _cfnlint()
    decoded, problems = cfnlint.decode.decode(str(TEMPLATE))
    assert not problems, [str(p) for p in problems]
    assert decoded is not None
    return decoded


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def _props(resources: dict[str, Any], name: str) -> dict[str, Any]:
    return resources[name]["Properties"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    """An intrinsic reduced to a comparable string: GetAtt as `X.Attr`, Ref as `X`, Sub as its
    format string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Fn::GetAtt":
            return ".".join(arg) if isinstance(arg, list) else str(arg)
        if fn == "Ref":
            return str(arg)
        if fn == "Fn::Sub":
            return arg[0] if isinstance(arg, list) else arg
    return json.dumps(value, sort_keys=True, default=str)


def _roles(resources: dict[str, Any]) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}


def _identity_statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every statement of every identity policy in the template: roles' inline policies,
    standalone IAM policies, and any SAM function `Policies` (there should be none)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        documents: list[Any] = []
        if resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [props["PolicyDocument"]]
        elif resource["Type"] == "AWS::Serverless::Function":
            documents = [p for p in _list(props.get("Policies", [])) if isinstance(p, dict)
                         and "Statement" in p]
        for document in documents:
            found.extend((name, s) for s in _list(document["Statement"]))
    return found


def _role_of(resources: dict[str, Any], function: str) -> str:
    role = _props(resources, function)["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function} must use its own role"
    return str(role["Fn::GetAtt"][0])


def _statements_of(resources: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = _role_of(resources, function)
    return [s for name, s in _identity_statements(resources) if name == role]


def _actions_of(resources: dict[str, Any], function: str) -> set[str]:
    return {a for s in _statements_of(resources, function) for a in _list(s["Action"])}


# ---------------------------------------------------------------- linting


def test_cfn_lint_finds_no_error_or_warning() -> None:
    cfnlint = _cfnlint()
    matches = cfnlint.api.lint_file(TEMPLATE)
    findings = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches
                if m.rule.id[0] in "EW"]
    assert findings == []


def test_transformed_template_lints_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """What CloudFormation receives after the SAM transform: the mappings, permissions and the
    HTTP API's $default route that SAM generates, validated against CloudFormation's schemas."""
    cfnlint = _cfnlint()
    translator = pytest.importorskip("samtranslator.translator.transform",
                                     reason="aws-sam-translator is not installed")
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        """The template names no managed policy, so the transform must never look one up."""

        def load(self) -> dict[str, str]:
            raise AssertionError("the template must not rely on managed policies")

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    source = yaml_parse(TEMPLATE.read_text())
    source["Globals"]["Function"]["CodeUri"] = "s3://bucket/code.zip"  # what `sam package` does
    transformed = translator.transform(source, {}, NoManagedPolicies())
    types = {r["Type"] for r in transformed["Resources"].values()}
    assert not any(t.startswith("AWS::Serverless::") for t in types)
    assert "AWS::Lambda::EventSourceMapping" in types
    routes = transformed["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]
    assert list(routes) == ["/$default"]
    matches = cfnlint.api.lint(json.dumps(transformed, default=str))
    assert [f"{m.rule.id}: {m.message}" for m in matches if m.rule.id[0] in "EW"] == []


# ---------------------------------------------------------------- functions


def test_functions_are_the_planned_entry_points(resources: dict[str, Any]) -> None:
    functions = {name: r["Properties"]["Handler"] for name, r in resources.items()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert functions == HANDLERS


def test_functions_run_the_package_on_arm64(template: dict[str, Any]) -> None:
    common = template["Globals"]["Function"]
    assert common["Runtime"] in ("python3.11", "python3.12")
    assert common["Architectures"] == ["arm64"]
    # The code is the package alone: its directory holds `tidings` and nothing else to ship.
    code = DEPLOY / common["CodeUri"]
    assert (code / "tidings" / "__init__.py").is_file()
    assert (code / "tidings" / "entrypoints").is_dir()
    assert _text(common["KmsKeyArn"]) == "Key.Arn"


def test_every_function_gets_the_settings_of_the_plan(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert set(variables) == ENVIRONMENT
    assert _text(variables["TIDINGS_DATABASE_URL"]) == "dynamodb://${Table}?region=${AWS::Region}"
    assert _text(variables["TIDINGS_QUEUE_URL"]) == "DeliveryQueue"
    assert _text(variables["TIDINGS_WEBSOCKET_ENDPOINT"]) == (
        "https://${WebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}")


def test_secrets_are_generated_not_typed(template: dict[str, Any], resources: dict[str, Any]) -> None:
    for name in SECRETS:
        secret = resources[name]
        assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
        assert _text(secret["Properties"]["KmsKeyId"]) == "Key"
        assert secret["DeletionPolicy"] == "Retain"
    parameters = template["Parameters"]
    assert not {"AdminKey", "SecretKey"} & set(parameters)
    assert not any(p.get("NoEcho") for p in parameters.values()), "no secret passes through a parameter"


def _environments(template: dict[str, Any], resources: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every function environment: the global one and any function's own."""
    found = [("Globals", template["Globals"]["Function"].get("Environment", {}))]
    found += [(name, r["Properties"].get("Environment", {})) for name, r in resources.items()
              if r["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")]
    return found


def test_functions_get_the_secrets_arns_never_their_values(
        template: dict[str, Any], resources: dict[str, Any]) -> None:
    """Whoever may call lambda:GetFunctionConfiguration reads a function's environment: it
    names the secrets; the functions read their values from Secrets Manager."""
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["TIDINGS_SECRET_KEY_ARN"] == {"Ref": "SecretKeySecret"}
    assert "TIDINGS_ADMIN_KEY_ARN" not in variables
    for function in HANDLERS:
        own = resources[function]["Properties"].get("Environment", {}).get("Variables", {})
        assert (own.get("TIDINGS_ADMIN_KEY_ARN") == {"Ref": "AdminKeySecret"}) == (
            function in ADMIN_KEY_READERS), function
    for where, environment in _environments(template, resources):
        text = json.dumps(environment, default=str)
        assert "resolve:secretsmanager" not in text, where
        assert "resolve:ssm-secure" not in text, where
        names = set(environment.get("Variables", {}))
        assert not {"TIDINGS_SECRET_KEY", "TIDINGS_ADMIN_KEY"} & names, where
        for name, value in environment.get("Variables", {}).items():
            # A secret appears only as a plain Ref (its ARN), never inside a Sub or a GetAtt.
            if SECRETS & set(re.findall(r"[A-Za-z0-9]+", json.dumps(value, default=str))):
                assert value in ({"Ref": "SecretKeySecret"}, {"Ref": "AdminKeySecret"}), (where, name)
    # No dynamic reference to a secret anywhere in the template but the secrets themselves.
    assert "resolve:secretsmanager" not in TEMPLATE.read_text()


def test_only_the_container_builders_read_the_secrets_and_only_the_api_the_admin_key(
        resources: dict[str, Any]) -> None:
    for function in HANDLERS:
        statements = [s for s in _statements_of(resources, function)
                      if any(a.startswith("secretsmanager:") for a in _list(s["Action"]))]
        if function not in CONTAINER_BUILDERS:
            assert statements == [], function
            continue
        assert len(statements) == 1, function
        (statement,) = statements
        assert _list(statement["Action"]) == ["secretsmanager:GetSecretValue"], function
        resources_of = _list(statement["Resource"])
        assert all(isinstance(r, dict) and list(r) == ["Ref"] for r in resources_of), function
        wanted = SECRETS if function in ADMIN_KEY_READERS else SECRETS - {"AdminKeySecret"}
        assert sorted(_text(r) for r in resources_of) == sorted(wanted), function
        assert "Condition" not in statement
    # Secrets Manager decrypts with the stack key on the caller's behalf: the readers keep
    # kms:Decrypt on it (test_key_use_is_limited_to_the_stack_key checks it is that key only).
    for function in CONTAINER_BUILDERS:
        assert "kms:Decrypt" in _actions_of(resources, function), function


def test_each_function_has_its_own_role_and_no_sam_policies(resources: dict[str, Any]) -> None:
    roles = [_role_of(resources, f) for f in HANDLERS]
    assert len(set(roles)) == len(roles)
    for function in HANDLERS:
        assert "Policies" not in _props(resources, function), \
            f"{function}: SAM policies would add managed policies on Resource '*'"
    for role in roles:
        trust = _list(_props(resources, role)["AssumeRolePolicyDocument"]["Statement"])
        assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]
        assert "ManagedPolicyArns" not in _props(resources, role)


def test_scheduler_runs_alone_every_minute(resources: dict[str, Any]) -> None:
    props = _props(resources, "SchedulerFunction")
    assert props["Timeout"] == 60
    assert props["ReservedConcurrentExecutions"] == 1
    (event,) = props["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == "rate(1 minute)"
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_http_api_sends_every_request_to_the_app(resources: dict[str, Any]) -> None:
    (event,) = _props(resources, "ApiFunction")["Events"].values()
    assert event["Type"] == "HttpApi"
    assert "Path" not in event["Properties"] and "Method" not in event["Properties"]  # $default
    assert event["Properties"]["PayloadFormatVersion"] == "2.0"
    assert _text(event["Properties"]["ApiId"]) == "HttpApi"


# ---------------------------------------------------------------- table, queues, outbox


def test_table_layout(resources: dict[str, Any]) -> None:
    table = resources["Table"]
    props = table["Properties"]
    assert table["DeletionPolicy"] == "Retain"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    attributes = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert attributes == dict.fromkeys(["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"], "S")
    indexes = {i["IndexName"]: i for i in props["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"gsi1", "gsi2"}
    for name, index in indexes.items():
        assert index["KeySchema"] == [{"AttributeName": f"{name}pk", "KeyType": "HASH"},
                                      {"AttributeName": f"{name}sk", "KeyType": "RANGE"}]
        assert index["Projection"] == {"ProjectionType": "ALL"}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    sse = props["SSESpecification"]
    assert (sse["SSEEnabled"], sse["SSEType"], _text(sse["KMSMasterKeyId"])) == (True, "KMS", "Key")
    assert props["DeletionProtectionEnabled"] is True


def test_key_rotates_and_outlives_the_stack(resources: dict[str, Any]) -> None:
    key = resources["Key"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


def test_queues_redrive_and_are_encrypted(resources: dict[str, Any]) -> None:
    queues = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    assert set(queues) == {"DeliveryQueue", "DeadLetterQueue", "OutboxFailureQueue"}
    for name, props in queues.items():
        assert _text(props["KmsMasterKeyId"]) == "Key", name
    delivery = queues["DeliveryQueue"]
    redrive = delivery["RedrivePolicy"]
    assert _text(redrive["deadLetterTargetArn"]) == "DeadLetterQueue.Arn"
    assert _text(redrive["maxReceiveCount"]) == "MaxReceiveCount"
    worker_timeout = _props(resources, "WorkerFunction")["Timeout"]
    assert delivery["VisibilityTimeout"] >= 6 * worker_timeout  # AWS's rule for Lambda consumers
    # A redriven message keeps its first enqueue time: the DLQ must keep it at least as long.
    assert queues["DeadLetterQueue"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert delivery["MessageRetentionPeriod"] <= queues["DeadLetterQueue"]["MessageRetentionPeriod"]


def _matches(pattern: Any, event: Any) -> bool:
    """The part of Lambda's event-filtering rules the outbox filter uses: nested objects, lists
    of accepted values, and `prefix`."""
    if isinstance(pattern, dict):
        return isinstance(event, dict) and all(
            key in event and _matches(sub, event[key]) for key, sub in pattern.items())
    for accepted in pattern:
        if isinstance(accepted, dict) and "prefix" in accepted:
            if isinstance(event, str) and event.startswith(accepted["prefix"]):
                return True
        elif accepted == event:
            return True
    return False


def _record(event_name: str, sk: str) -> dict[str, Any]:
    keys = {"pk": {"S": "A#shop#N#01J"}, "sk": {"S": sk}}
    return {"eventName": event_name, "dynamodb": {"Keys": keys, "NewImage": keys}}


def test_outbox_reads_only_new_deliveries_from_the_stream(resources: dict[str, Any]) -> None:
    (event,) = _props(resources, "OutboxFunction")["Events"].values()
    assert event["Type"] == "DynamoDB"
    props = event["Properties"]
    assert _text(props["Stream"]) == "Table.StreamArn"
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert props["BisectBatchOnFunctionError"] is True
    assert 0 <= props["MaximumRetryAttempts"] <= 10_000  # finite: a poison batch cannot block a shard
    failure = props["DestinationConfig"]["OnFailure"]
    assert failure["Type"] == "SQS" and _text(failure["Destination"]) == "OutboxFailureQueue.Arn"
    (pattern,) = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    assert _matches(pattern, _record("INSERT", "D#01J#push"))
    assert not _matches(pattern, _record("MODIFY", "D#01J#push"))  # status updates
    assert not _matches(pattern, _record("REMOVE", "D#01J#push"))  # TTL expiry
    assert not _matches(pattern, _record("INSERT", "N#01J"))  # the notification itself
    assert not _matches(pattern, _record("INSERT", "C#conn"))
    assert not _matches(pattern, _record("INSERT", "DEV#01J"))  # the "#" ends the prefix


def test_worker_reports_item_failures_with_bounded_concurrency(resources: dict[str, Any]) -> None:
    (event,) = _props(resources, "WorkerFunction")["Events"].values()
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert _text(props["Queue"]) == "DeliveryQueue.Arn"
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= props["BatchSize"] <= 10
    assert _text(props["ScalingConfig"]["MaximumConcurrency"]) == "WorkerMaxConcurrency"


def test_websocket_api_routes_to_its_function(resources: dict[str, Any]) -> None:
    api = _props(resources, "WebSocketApi")
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    integrations = {n: r["Properties"] for n, r in resources.items()
                    if r["Type"] == "AWS::ApiGatewayV2::Integration"}
    for route in routes.values():
        target = _text(route["Target"])
        assert target.startswith("integrations/${") and target[len("integrations/${"):-1] in integrations
    for integration in integrations.values():
        assert "${WebSocketFunction.Arn}" in _text(integration["IntegrationUri"])
    (stage,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    assert stage["AutoDeploy"] is True and _text(stage["StageName"]) == "Stage"
    (permission,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert _text(permission["FunctionName"]) == "WebSocketFunction"
    assert "${WebSocketApi}/${Stage}/" in _text(permission["SourceArn"])


# ---------------------------------------------------------------- alarms and outputs


def _alarms(resources: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]


def _alarm_on(resources: dict[str, Any], metric: str, dimension: str) -> dict[str, Any]:
    found = [a for a in _alarms(resources) if a["MetricName"] == metric
             and any(_text(d["Value"]).split(".")[0] == dimension for d in a["Dimensions"])]
    assert len(found) == 1, f"one alarm on {metric} of {dimension}"
    return found[0]


def test_alarms_watch_the_dead_letters_the_backlog_and_every_function(resources: dict[str, Any]) -> None:
    for queue in ("DeadLetterQueue", "OutboxFailureQueue"):
        alarm = _alarm_on(resources, "ApproximateNumberOfMessagesVisible", queue)
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    _alarm_on(resources, "ApproximateAgeOfOldestMessage", "DeliveryQueue")
    _alarm_on(resources, "IteratorAge", "OutboxFunction")
    for function in HANDLERS:
        _alarm_on(resources, "Errors", function)
    for alarm in _alarms(resources):
        assert [_text(a) for a in alarm["AlarmActions"]] == ["AlarmTopic"]
    assert _text(_props(resources, "AlarmTopic")["KmsMasterKeyId"]) == "Key"
    assert resources["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for name in ("HttpApiUrl", "WebSocketUrl", "ManagementEndpoint", "TableName", "QueueUrl",
                 "DeadLetterQueueUrl"):
        assert name in outputs
    assert _text(outputs["WebSocketUrl"]["Value"]).startswith("wss://${WebSocketApi}.")
    assert _text(outputs["WebSocketUrl"]["Value"]).endswith("/${Stage}")
    assert _text(outputs["ManagementEndpoint"]["Value"]) == _text(
        template["Globals"]["Function"]["Environment"]["Variables"]["TIDINGS_WEBSOCKET_ENDPOINT"])


# ---------------------------------------------------------------- least privilege


def test_no_identity_statement_grants_every_action_of_a_service(resources: dict[str, Any]) -> None:
    statements = _identity_statements(resources)
    assert len(statements) > 20
    for role, statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement, role
        for action in _list(statement["Action"]):
            assert isinstance(action, str), (role, action)
            assert action != "*" and not action.endswith(":*"), (role, action)
            assert "*" not in action, f"{role}: spell out {action}"


def test_star_resources_only_for_actions_without_resource_level_permissions(
        resources: dict[str, Any]) -> None:
    star = [(role, s) for role, s in _identity_statements(resources) if "*" in _list(s["Resource"])]
    assert star, "the SMS statement is expected on '*'"
    for role, statement in star:
        assert _list(statement["Resource"]) == ["*"], role
        assert set(_list(statement["Action"])) <= set(STAR_RESOURCE_ALLOWED), (role, statement)
        assert statement.get("Condition"), f"{role}: narrow a '*' statement by a condition"


def test_key_policy_delegates_to_iam_and_conditions_services(resources: dict[str, Any]) -> None:
    """In a key policy "*" means this key. The root statement is AWS's default key policy (IAM
    decides, so the roles above hold the grants); services get conditioned statements only."""
    statements = _list(_props(resources, "Key")["KeyPolicy"]["Statement"])
    for statement in statements:
        principal = statement["Principal"]
        if "AWS" in principal:
            assert _text(principal["AWS"]) == "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"
        else:
            assert statement.get("Condition"), statement["Sid"]
            assert "kms:*" not in _list(statement["Action"])


def test_table_access_is_scoped_and_never_a_wildcard(resources: dict[str, Any]) -> None:
    for role, statement in _identity_statements(resources):
        actions = _list(statement["Action"])
        if any(a.startswith("dynamodb:") for a in actions):
            assert all(a.startswith("dynamodb:") for a in actions), role
            assert {_text(r) for r in _list(statement["Resource"])} <= TABLE_RESOURCES, role
    for function in ("ApiFunction", "WorkerFunction", "SchedulerFunction", "WebSocketFunction"):
        table = [s for s in _statements_of(resources, function)
                 if "dynamodb:Query" in _list(s["Action"])]
        assert len(table) == 1 and {_text(r) for r in table[0]["Resource"]} == {
            "Table.Arn", "${Table.Arn}/index/*"}, function
    # Only the API checks the table's layout (on its first start) and scans it (deleting an app).
    whole_table = {"dynamodb:Scan", "dynamodb:DescribeTable"}
    for function in HANDLERS:
        expected = whole_table if function == "ApiFunction" else set()
        assert whole_table & _actions_of(resources, function) == expected, function
    outbox = _actions_of(resources, "OutboxFunction")
    assert {a for a in outbox if a.startswith("dynamodb:")} == {
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
        "dynamodb:ListStreams"}


def test_key_use_is_limited_to_the_stack_key(resources: dict[str, Any]) -> None:
    for function in HANDLERS:
        kms = [s for s in _statements_of(resources, function)
               if any(a.startswith("kms:") for a in _list(s["Action"]))]
        assert len(kms) == 1, function
        assert set(_list(kms[0]["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey"}
        assert [_text(r) for r in _list(kms[0]["Resource"])] == ["Key.Arn"]


def test_queue_permissions_follow_the_flow(resources: dict[str, Any]) -> None:
    def sqs(function: str) -> dict[str, set[str]]:
        granted: dict[str, set[str]] = {}
        for statement in _statements_of(resources, function):
            for action in _list(statement["Action"]):
                if action.startswith("sqs:"):
                    granted[action] = {_text(r) for r in _list(statement["Resource"])}
        return granted

    assert sqs("OutboxFunction") == {
        "sqs:SendMessage": {"DeliveryQueue.Arn", "OutboxFailureQueue.Arn"}}
    consume = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
               "sqs:ChangeMessageVisibility")
    assert sqs("WorkerFunction") == {action: {"DeliveryQueue.Arn"} for action in consume}
    for function in ("ApiFunction", "WebSocketFunction", "SchedulerFunction"):
        assert sqs(function) == {}, function


def test_stream_publishers_manage_only_this_stages_connections(resources: dict[str, Any]) -> None:
    for function in HANDLERS:
        statements = [s for s in _statements_of(resources, function)
                      if "execute-api:ManageConnections" in _list(s["Action"])]
        if function not in PUBLISHERS:
            assert statements == [], function
            continue
        assert len(statements) == 1, function
        targets = [_text(r) for r in _list(statements[0]["Resource"])]
        assert targets and all(CONNECTIONS.match(t) for t in targets), targets
        assert any("/POST/" in t for t in targets), function


def test_only_the_worker_sends_through_providers(resources: dict[str, Any]) -> None:
    for function in HANDLERS:
        providers = {a for a in _actions_of(resources, function) if a.startswith(("ses:", "sns:"))}
        if function != "WorkerFunction":
            assert providers == set(), function
    statements = _statements_of(resources, "WorkerFunction")
    for statement in statements:
        actions = _list(statement["Action"])
        if any(a.startswith("ses:") for a in actions):
            assert all(":ses:${Region}:${AWS::AccountId}:" in _text(r)
                       for r in _list(statement["Resource"]))
        if "sns:CreatePlatformEndpoint" in actions:
            assert {_text(r).rsplit(":", 1)[1] for r in statement["Resource"]} == {"app/*", "endpoint/*"}


def test_logs_go_to_the_functions_own_encrypted_groups(resources: dict[str, Any]) -> None:
    for function in HANDLERS:
        group = _text(_props(resources, function)["LoggingConfig"]["LogGroup"])
        assert resources[group]["Type"] == "AWS::Logs::LogGroup"
        assert _text(_props(resources, group)["KmsKeyId"]) == "Key.Arn"
        logs = [s for s in _statements_of(resources, function)
                if any(a.startswith("logs:") for a in _list(s["Action"]))]
        assert len(logs) == 1 and [_text(r) for r in _list(logs[0]["Resource"])] == [f"{group}.Arn"]


# ---------------------------------------------------------------- build inputs


def test_lambda_requirements_cover_the_package_and_its_aws_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["aws"]]
    lines = (DEPLOY / "requirements.txt").read_text().splitlines()
    listed = {canonicalize_name(r.name): r for r in
              (Requirement(line) for line in lines if line.strip() and not line.startswith("#"))}
    for requirement in needed:
        name = canonicalize_name(requirement.name)
        assert name in listed, f"deploy/aws/requirements.txt lacks {requirement}"
        assert requirement.extras <= listed[name].extras, requirement
    assert "mangum" in listed


def test_samconfig_builds_with_that_manifest() -> None:
    config = tomllib.loads((DEPLOY / "samconfig.toml").read_text())
    manifest = config["default"]["build"]["parameters"]["manifest"]
    assert (ROOT / manifest).resolve() == (DEPLOY / "requirements.txt").resolve()
