"""moto in server mode on loopback, as the AWS double for the SNS and SES providers and for API
Gateway's Management API (the WebSocket connections of the AWS mode).

Wrapped so that a test can see every request each AWS action got (the parameters as sent on the
wire) and make an action answer an AWS error in that service's own wire format: the query
protocol's XML ErrorResponse for SNS, rest-json's `x-amzn-ErrorType` for SES v2. With
`signed_by()` moto checks every request's Signature Version 4 against an IAM user's secret
and its policy, as AWS does.

The Management API is served under a stage as well (`{url}/{stage}/@connections/{id}`, as API
Gateway serves it), which moto alone routes only without one. moto never answers GoneException
(a connection it does not know springs into being), so a test makes a connection gone with
`fail("PostToConnection", "GoneException", status=410, path=...)`.
"""

from __future__ import annotations

import io
import json
import re
import ssl
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import boto3
from moto.core.authorization import enable_iam_authentication
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
_SCOPE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
# rest-json operations, by method and path, for the services that use that protocol here.
_REST_OPERATIONS = {
    ("POST", "/v2/email/outbound-emails"): "SendEmail",
    ("POST", "/v2/email/identities"): "CreateEmailIdentity",
}
# rest-json operations whose path holds a parameter: (method, path pattern, operation).
_REST_PATTERNS = [
    (method, re.compile(r"(?:/[^/@]+)*/@connections/[^/]+"), action)
    for method, action in (("POST", "PostToConnection"), ("DELETE", "DeleteConnection"),
                           ("GET", "GetConnection"))
]
_STAGED_CONNECTIONS = re.compile(r"(?:/[^/@]+)+(/@connections/[^/]+)")
_QUERY_NAMESPACES = {"sns": "http://sns.amazonaws.com/doc/2010-03-31/",
                     "email": "http://ses.amazonaws.com/doc/2010-12-01/"}

StartResponse = Callable[..., Any]


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class AwsCall:
    service: str  # the signing name: sns, ses, iam …
    action: str  # Publish, SendEmail …
    params: dict[str, Any]  # query protocol: the form fields; rest-json: the JSON body
    access_key: str | None
    path: str = ""  # as requested (with the stage, for the Management API)
    body: bytes = b""  # as sent


@dataclass
class Fault:
    code: str
    message: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1  # None: every call
    path: str | None = None  # only calls of this path, as requested (None: any)


class MotoServer(ThreadedMotoServer):
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._tls = tls  # serve HTTPS with this context
        self.calls: list[AwsCall] = []
        self._faults: dict[str, list[Fault]] = {}
        self._guard = threading.Lock()

    # The server -----------------------------------------------------------------------------

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, self._recording(app), True,
                                   request_handler=_QuietHandler, ssl_context=self._tls)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    def _recording(self, app: Any) -> Callable[[dict[str, Any], StartResponse], Any]:
        def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Any:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            call = self._parse(environ, body)
            if call is not None:
                if call.service == "execute-api":
                    self._unstage(environ)
                with self._guard:
                    self.calls.append(call)
                    fault = self._take_fault(call.action, call.path)
                if fault is not None:
                    return self._error(call.service, fault, start_response)
            return app(environ, start_response)

        return wsgi

    @staticmethod
    def _parse(environ: dict[str, Any], body: bytes) -> AwsCall | None:
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is None:
            return None
        access_key, _, service = scope.groups()
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        content_type = environ.get("CONTENT_TYPE", "")
        if "x-www-form-urlencoded" in content_type:
            params: dict[str, Any] = dict(parse_qsl(body.decode(), keep_blank_values=True))
            action = str(params.get("Action", ""))
        else:
            try:
                params = json.loads(body) if body else {}
            except ValueError:  # the Management API posts whatever its caller sends
                params = {}
            action = _REST_OPERATIONS.get((method, path)) or next(
                (name for verb, pattern, name in _REST_PATTERNS
                 if verb == method and pattern.fullmatch(path)), f"{method} {path}")
        return AwsCall(service, action, params, access_key, path, body)

    @staticmethod
    def _unstage(environ: dict[str, Any]) -> None:
        """`/{stage}/@connections/{id}` as moto routes it: `/@connections/{id}`."""
        staged = _STAGED_CONNECTIONS.fullmatch(environ.get("PATH_INFO", ""))
        if staged:
            environ["PATH_INFO"] = staged.group(1)
            for raw in ("RAW_URI", "REQUEST_URI"):
                if raw in environ:
                    environ[raw] = staged.group(1)

    def _take_fault(self, action: str, path: str = "") -> Fault | None:
        queue = self._faults.get(action)
        if not queue:
            return None
        fault = next((f for f in queue if f.path is None or f.path == path), None)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                queue.remove(fault)
        return fault

    @staticmethod
    def _error(service: str, fault: Fault, start_response: StartResponse) -> list[bytes]:
        request_id = str(uuid.uuid4())
        reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 410: "Gone",
                  429: "Too Many Requests", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(fault.status, "Error")
        if service in _QUERY_NAMESPACES:
            kind = "Receiver" if fault.status >= 500 else "Sender"
            body = (f'<ErrorResponse xmlns="{_QUERY_NAMESPACES[service]}"><Error><Type>{kind}</Type>'
                    f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
                    f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
            headers = [("Content-Type", "text/xml")]
        else:
            body = json.dumps({"message": fault.message}).encode()
            headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", fault.code)]
        headers += [("x-amzn-RequestId", request_id), ("Content-Length", str(len(body))),
                    *fault.headers.items()]
        start_response(f"{fault.status} {reason}", headers)
        return [body]

    # What a test says and reads -------------------------------------------------------------

    def fail(self, action: str, code: str, message: str = "", status: int = 400,
             times: int | None = 1, headers: dict[str, str] | None = None,
             path: str | None = None) -> None:
        """The next `times` calls of `action` (of `path` only, when given: the path as
        requested) answer this AWS error instead of moto."""
        with self._guard:
            self._faults.setdefault(action, []).append(
                Fault(code, message or code, status, headers or {}, times, path))

    def calls_of(self, action: str) -> list[AwsCall]:
        with self._guard:
            return [c for c in self.calls if c.action == action]

    def reset(self) -> None:
        """Forget every call, fault and AWS resource."""
        with self._guard:
            self.calls.clear()
            self._faults.clear()
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()

    def client(self, service: str, key_id: str = "testing", secret: str = "testing",
               region: str = "us-east-1") -> Any:
        """A boto3 client on this server, for a test's own setup and checks."""
        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    @contextmanager
    def signed_by(self, actions: tuple[str, ...] = ("sns:*", "ses:*")) -> Iterator[tuple[str, str]]:
        """An IAM user allowed `actions`; while inside, moto refuses any request that is not
        signed with an allowed user's key (SignatureDoesNotMatch, InvalidClientTokenId,
        AccessDenied). Yields the user's (access key id, secret access key)."""
        iam = self.client("iam")
        name = f"tidings-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="send", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        with enable_iam_authentication():
            yield key["AccessKeyId"], key["SecretAccessKey"]


class SerialDynamoDB(MotoServer):
    """moto answers DynamoDB requests in parallel threads, and applies a transaction by
    copying the table and putting the copy back when a condition fails: a transaction failing
    beside one that commits can put back a table without the other's writes. DynamoDB
    serialises transactions on the same items; this server answers DynamoDB one request at a
    time (the two transactions still race: each reads, then both write)."""

    def _recording(self, app: Any) -> Callable[[dict[str, Any], Any], Any]:
        inner = super()._recording(app)
        one_at_a_time = threading.Lock()
        _copy_each_table_once()

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
                return inner(environ, start_response)
            with one_at_a_time:
                return list(inner(environ, start_response))

        return wsgi


def _copy_each_table_once() -> None:
    """moto backs a transaction up by deep-copying its table once for each of its (up to 100)
    items, so a transaction costs 100 copies of the whole table: a send to 1,000 users took
    gigabytes. One copy per table and transaction is the same backup."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    if getattr(models.DynamoDBBackend.transact_write_items, "once_per_table", False):
        return
    original = models.DynamoDBBackend.transact_write_items

    class _Copy:
        def __init__(self) -> None:
            self.made: dict[int, Any] = {}

        def deepcopy(self, obj: Any, memo: Any = None) -> Any:
            if not isinstance(obj, Table):
                return copy.deepcopy(obj, memo)
            if id(obj) not in self.made:
                self.made[id(obj)] = copy.deepcopy(obj, memo)
            return self.made[id(obj)]

    def transact_write_items(self: Any, transact_items: Any) -> None:
        # Requests reach DynamoDB one at a time here (the lock above): swapping the module's
        # `copy` for the length of one call is safe.
        models.copy = _Copy()  # type: ignore[assignment]
        try:
            original(self, transact_items)
        finally:
            models.copy = copy

    transact_write_items.once_per_table = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def sns_backend(region: str = "us-east-1") -> Any:
    """moto's SNS state (the server runs in this process): endpoints and what they were sent."""
    from moto.sns.models import sns_backends

    return sns_backends[ACCOUNT_ID][region]


def ses_backend(region: str = "us-east-1") -> Any:
    """moto's SES state, shared by SES v1 and v2: `sent_messages`."""
    from moto.ses.models import ses_backends

    return ses_backends[ACCOUNT_ID][region]


def query_map(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A query-protocol map read back as a dict: `<prefix>.entry.N.key` / `.value` (a string
    map, such as Attributes) or `<prefix>.entry.N.Name` / `.Value.*` (MessageAttributes)."""
    entries: dict[str, dict[str, str]] = {}
    for key, value in params.items():
        match = re.fullmatch(rf"{re.escape(prefix)}\.entry\.(\d+)\.(.+)", key)
        if match:
            entries.setdefault(match.group(1), {})[match.group(2)] = value
    out: dict[str, Any] = {}
    for entry in entries.values():
        name = entry.pop("Name", None) or entry.pop("key", "")
        if "value" in entry:  # a plain string map (Attributes)
            out[name] = entry["value"]
        else:  # a structure map (MessageAttributes)
            out[name] = {k.removeprefix("Value."): v for k, v in entry.items()}
    return out


def function_environment(monkeypatch: Any, region: str | None = None) -> None:
    """Credentials where a Lambda function finds them, in the environment (and no profile or
    file of the machine's to find first); the default region too, when given."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    if region is not None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
