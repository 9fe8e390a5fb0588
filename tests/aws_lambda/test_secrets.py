"""The keys of the AWS mode read from Secrets Manager (moto on loopback) by their ARNs, and the
ARN settings checked before anything is read."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from pydantic import ValidationError

from tests.aws_lambda.conftest import REGION
from tests.conftest import ADMIN_KEY, SECRET_KEY
from tests.fakes.moto_server import ACCOUNT_ID, MotoServer
from tidings.adapters.secrets.secretsmanager import read_secret
from tidings.domain.errors import NotConfigured
from tidings.entrypoints.aws_lambda.runtime import Runtime
from tidings.settings import Settings


def _secret(aws: MotoServer, name: str, value: str) -> str:
    key = aws.client("kms", region=REGION).create_key(Description="stack key")["KeyMetadata"]["Arn"]
    return str(aws.client("secretsmanager", region=REGION).create_secret(
        Name=name, KmsKeyId=key, SecretString=value)["ARN"])


def test_a_secret_is_read_by_its_arn(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = _secret(aws, "tidings/secret-key", "s3cr3t-value")
    # moto keeps secrets per region: the read finds it only in the region its ARN names.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert asyncio.run(read_secret(arn, endpoint_url=aws.url)) == "s3cr3t-value"
    (call,) = [c for c in aws.calls if c.service == "secretsmanager" and c.params.get("SecretId")]
    assert call.params["SecretId"] == arn
    with pytest.raises(NotConfigured, match="ResourceNotFoundException"):
        asyncio.run(read_secret(arn, region="eu-west-1", endpoint_url=aws.url))


def test_a_missing_secret_names_its_arn_and_what_to_check(aws: MotoServer) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:tidings/gone-AbCdEf"
    with pytest.raises(NotConfigured) as caught:
        asyncio.run(read_secret(arn, endpoint_url=aws.url))
    message = str(caught.value)
    assert arn in message
    assert "ResourceNotFoundException" in message
    assert "secretsmanager:GetSecretValue" in message and "kms:Decrypt" in message


def test_an_unreachable_secrets_manager_is_not_configured() -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:tidings/key-AbCdEf"

    class Refusing:
        async def get_secret_value(self, **kwargs: Any) -> dict[str, Any]:
            raise ConnectionRefusedError("connection refused")

    with pytest.raises(NotConfigured, match="tidings/key-AbCdEf"):
        asyncio.run(read_secret(arn, client=Refusing()))


def test_a_binary_secret_is_refused() -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:tidings/key-AbCdEf"

    class Binary:
        async def get_secret_value(self, **kwargs: Any) -> dict[str, Any]:
            return {"ARN": kwargs["SecretId"], "SecretBinary": b"\x00\x01"}

    with pytest.raises(NotConfigured, match="SecretString"):
        asyncio.run(read_secret(arn, client=Binary()))


@pytest.mark.parametrize("arn", [
    "tidings/secret-key",  # a name, not an ARN
    f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/tidings",  # another service
    f"arn:aws:secretsmanager:{REGION}:12345:secret:tidings-AbCdEf",  # not an account id
    f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:",  # no secret
    f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:a b",  # a space
])
@pytest.mark.parametrize("field", ["secret_key_arn", "admin_key_arn"])
def test_a_wrong_arn_is_refused_by_the_settings(field: str, arn: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**cast(dict[str, Any], {field: arn}))


@pytest.mark.parametrize("arn", [
    f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:tidings/key-AbCdEf",
    f"arn:aws-cn:secretsmanager:cn-north-1:{ACCOUNT_ID}:secret:SecretKeySecret-x1Y2z3",
    f"arn:aws-us-gov:secretsmanager:us-gov-west-1:{ACCOUNT_ID}:secret:a_b+c=d.e@f-g",
])
def test_secret_arns_of_every_partition_are_accepted(arn: str) -> None:
    settings = Settings(secret_key_arn=arn, admin_key_arn=arn)
    assert settings.secret_key_arn == settings.admin_key_arn == arn


def _runtime(aws: MotoServer, **settings: Any) -> Runtime:
    url = f"dynamodb://tidings-secrets?region={REGION}&endpoint_url={aws.url}"
    return Runtime(settings=Settings(database_url=url, **settings), json_logs=False)


def test_the_runtime_reads_both_keys_and_prefixes_the_admin_key(aws: MotoServer) -> None:
    rt = _runtime(aws, secret_key_arn=_secret(aws, "tidings/sk", SECRET_KEY),
                  admin_key_arn=_secret(aws, "tidings/ak", ADMIN_KEY.removeprefix("tda_")))
    try:
        container = rt.run(rt.container())
        assert container.settings is rt.settings
        assert rt.settings.secret_key is not None and rt.settings.admin_key is not None
        assert rt.settings.secret_key.get_secret_value() == SECRET_KEY
        assert rt.settings.admin_key.get_secret_value() == ADMIN_KEY
        assert "tda_" not in repr(rt.settings) and SECRET_KEY not in repr(rt.settings)
    finally:
        rt.close()


def test_a_key_set_in_the_environment_wins_over_its_arn(aws: MotoServer) -> None:
    rt = _runtime(aws, secret_key=SECRET_KEY,
                  secret_key_arn=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:none-AbCdEf")
    try:
        rt.run(rt.container())
        assert rt.settings.secret_key is not None
        assert rt.settings.secret_key.get_secret_value() == SECRET_KEY
        assert [c for c in aws.calls if c.service == "secretsmanager"] == []
    finally:
        rt.close()


def test_an_unreadable_key_stops_the_container_being_built(aws: MotoServer) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:tidings/none-AbCdEf"
    rt = _runtime(aws, secret_key_arn=arn)
    try:
        with pytest.raises(NotConfigured, match="tidings/none-AbCdEf"):
            rt.run(rt.container())
    finally:
        rt.close()
