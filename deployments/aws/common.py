"""What every service's container shares: TLS material from Secrets Manager, logs, the image, nag suppressions."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct

from deployments.aws.config import DeploymentConfig

# The image's entrypoint (docker/entrypoint.sh) writes these variables' PEM text to these files before the command
# runs: ECS injects secrets as environment variables, and the proximate and dask commands take TLS as file paths.
TLS_DIR = "/tmp/proximate-tls"
TLS_ENV = {"PROXIMATE_TLS_CA": "ca", "PROXIMATE_TLS_CERT": "cert", "PROXIMATE_TLS_KEY": "key"}
TLS_ARGS = [
    "--tls-ca-file",
    f"{TLS_DIR}/ca.pem",
    "--tls-cert",
    f"{TLS_DIR}/cert.pem",
    "--tls-key",
    f"{TLS_DIR}/key.pem",
]


def scheduler_address(config: DeploymentConfig) -> str:
    """The scheduler's address as every worker, the autoscaler and the flows dial it (Cloud Map private DNS).

    Examples:
        >>> scheduler_address(cfg)  # doctest: +SKIP
        'tls://scheduler.proximate.internal:8786'
    """
    return f"tls://scheduler.{namespace_name(config)}:{config.scheduler_port}"


def namespace_name(config: DeploymentConfig) -> str:
    """The Cloud Map private DNS namespace of the deployment."""
    return f"{config.name}.internal"


def tls_secret(scope: Construct, config: DeploymentConfig, site_name: str) -> secretsmanager.Secret:
    """The secret holding one site's TLS material as JSON ``{"ca", "cert", "key"}`` (PEM text).

    It is created holding placeholders; the operator writes the real material (docs/production.md) before the
    services start, and rotates it the same way.
    """
    secret = secretsmanager.Secret(
        scope,
        "TlsMaterial",
        secret_name=f"{config.name}/tls/{site_name}",
        description=f"TLS material of {config.name} in {site_name}: JSON with PEM ca, cert and key",
        generate_secret_string=secretsmanager.SecretStringGenerator(
            secret_string_template='{"ca": "REPLACE", "cert": "REPLACE"}', generate_string_key="key"
        ),
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    suppress(secret, {"SMG4": "the operator's CA issues this material; rotating it is docs/production.md's procedure"})
    return secret


def tls_secrets(secret: secretsmanager.ISecret) -> dict[str, ecs.Secret]:
    """The container secrets that put a site's TLS material into the variables the entrypoint reads."""
    return {env: ecs.Secret.from_secrets_manager(secret, field) for env, field in TLS_ENV.items()}


def service_logs(scope: Construct, config: DeploymentConfig, name: str) -> ecs.LogDriver:
    """A CloudWatch log group for one service, kept ``log_retention_days``, as the container's log driver."""
    group = logs.LogGroup(
        scope,
        f"{name}Logs",
        log_group_name=f"/{config.name}/{name.lower()}",
        retention=_retention(config.log_retention_days),
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    return ecs.LogDrivers.aws_logs(stream_prefix=name.lower(), log_group=group)


# CloudWatch's retention choices in days, in the order of logs.RetentionDays' members (INFINITE last).
_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


def _retention(days: int) -> logs.RetentionDays:
    """The shortest retention CloudWatch offers that keeps logs at least ``days``."""
    members = list(logs.RetentionDays)
    return next((m for d, m in zip(_RETENTION_DAYS, members, strict=False) if d >= days), members[-2])


def suppress(scope: IConstruct, reasons: dict[str, str]) -> None:
    """Acknowledge cdk-nag AwsSolutions findings on a construct, each with the reason the finding is accepted.

    Args:
        scope: the construct (acknowledgments reach its children).
        reasons: finding to reason; a finding is a rule (``"SMG4"``) or, for the rules that report one finding per
            action or resource, the rule and that detail (``"IAM5[Resource::*]"``), exactly as cdk-nag names it.

    Examples:
        >>> suppress(secret, {"SMG4": "rotated by the operator"})  # doctest: +SKIP
    """
    for finding, why in reasons.items():
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"AwsSolutions-{finding}", reason=why))
