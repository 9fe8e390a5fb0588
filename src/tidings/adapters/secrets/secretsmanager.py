"""Reading one secret's string from AWS Secrets Manager.

The serverless mode hands its functions the ARNs of the secret key's and the admin key's
secrets instead of the keys: a function's environment is readable by anyone allowed
`lambda:GetFunctionConfiguration`, the secrets only by whom their policy and the key's allow.
Secrets Manager decrypts the value with the secret's KMS key on the caller's behalf, so the
caller needs `kms:Decrypt` on that key as well as `secretsmanager:GetSecretValue`.
"""

from __future__ import annotations

from typing import Any

from ...domain.errors import NotConfigured
from ...domain.validation import SECRETS_MANAGER_ARN
from ..aws_client import new_session

_ARN = SECRETS_MANAGER_ARN


def region_of(arn: str) -> str:
    found = _ARN.match(arn)
    if found is None:
        raise NotConfigured(f"{arn!r} is not the ARN of a Secrets Manager secret "
                            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>)")
    return found.group(1)


async def read_secret(arn: str, *, region: str | None = None, endpoint_url: str | None = None,
                      client: Any = None) -> str:
    """The current string value of the secret `arn`. `client`: a Secrets Manager client to
    use (else one is opened for this call and closed: the value is read once per process);
    `region`: else the ARN's; `endpoint_url`: a local double of Secrets Manager."""
    region = region or region_of(arn)
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        failures: tuple[type[Exception], ...] = (ClientError, BotoCoreError, OSError, TimeoutError)
    except ImportError:  # no botocore: only a client handed in can answer
        failures = (OSError, TimeoutError)
    try:
        if client is not None:
            answer = await client.get_secret_value(SecretId=arn)
        else:
            answer = await _get(arn, region, endpoint_url)
    except failures as exc:  # AWS's refusals, and the network's
        raise NotConfigured(
            f"cannot read the secret {arn}: {_describe(exc)}. Check that the secret exists in "
            f"{region}, and that this function's role may call secretsmanager:GetSecretValue on "
            "it and kms:Decrypt with the KMS key that encrypts it") from exc
    value = answer.get("SecretString")
    if not isinstance(value, str) or not value:
        raise NotConfigured(f"the secret {arn} holds no string (SecretString); store the key as "
                            "the secret's string value")
    return value


async def _get(arn: str, region: str, endpoint_url: str | None) -> Any:
    try:
        from aiobotocore.config import AioConfig
    except ImportError as exc:
        raise NotConfigured("reading a key from Secrets Manager needs aiobotocore: "
                            "pip install 'tidings[aws]'") from exc
    config = AioConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                       read_timeout=10)
    async with new_session().create_client("secretsmanager", region_name=region,
                                           endpoint_url=endpoint_url, config=config) as client:
        return await client.get_secret_value(SecretId=arn)


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code, message = error.get("Code"), error.get("Message")
        if code:
            return f"{code}: {message}" if message else str(code)
    return f"{type(exc).__name__}: {exc}"
