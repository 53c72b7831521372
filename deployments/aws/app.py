"""The CDK app: every stack of a deployment, built from the operator's config alone.

Stacks, each in its own AWS region:

- ``<name>-net-<site>``: each site's VPC (``client`` and every worker region);
- ``<name>-peering-<site>`` / ``<name>-routes-<site>``: the full mesh of VPC peerings and the routes over them;
- ``<name>-<region>``: a worker region's FSx for Lustre and ECS workers;
- ``<name>-client``: the scheduler, the autoscaler, the catalog and Prefect.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from deployments.aws.client import ClientStack
from deployments.aws.common import suppress
from deployments.aws.config import DeploymentConfig
from deployments.aws.network import NetworkStack, PeeringStack, RoutesStack
from deployments.aws.region import RegionStack

# Paths of the Lambda functions CDK itself writes for its custom resources (AwsCustomResource, the VPC flow logs'
# and OpenSearch's log policies): their roles and runtimes are CDK's, not this app's.
_CDK_PROVIDERS = ("AWS679f53fac002430cb0da5b7982bd2287", "CustomResourceProvider", "LogRetention")
_PROVIDER_REASONS = {
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": "a CDK-provided "
    "custom resource's Lambda role (logs only)",
    "L1": "the Lambda runtime is chosen by aws-cdk-lib for its own custom resources",
}


def build_app(config: DeploymentConfig, outdir: str | None = None) -> cdk.App:
    """Every stack of the deployment, checked by cdk-nag's AwsSolutions pack when synthesized.

    Args:
        config: the checked deployment config.
        outdir: where ``synth`` writes the cloud assembly (default: the CDK CLI's, or ``cdk.out``).

    Returns:
        The app, ready for ``app.synth()``.

    Examples:
        >>> from deployments.aws.config import load_config
        >>> app = build_app(load_config("deployments/aws/example.yaml"), "cdk.out")  # doctest: +SKIP
        >>> sorted(s.stack_name for s in app.synth().stacks)[:2]  # doctest: +SKIP
        ['proximate-client', 'proximate-cmip6']
    """
    app = cdk.App(outdir=outdir, analytics_reporting=False)
    name = config.name
    sites = {"client": config.client, **config.regions}

    def env(aws_region: str) -> cdk.Environment:
        return cdk.Environment(account=config.account, region=aws_region)

    common = {"cross_region_references": True}
    nets = {
        site: NetworkStack(
            app, f"{name}-net-{site}", site=cfg, egress=site == "client", env=env(cfg.aws_region), **common
        )
        for site, cfg in sites.items()
    }
    order = list(sites)
    peerings: dict[str, dict[str, tuple]] = {site: {} for site in order}
    for i, site in enumerate(order):
        later = {peer: nets[peer] for peer in order[i + 1 :]}
        if not later:
            continue
        stack = PeeringStack(
            app, f"{name}-peering-{site}", local=nets[site], peers=later, env=env(sites[site].aws_region), **common
        )
        for peer, peering in stack.peerings.items():
            peerings[peer][site] = (nets[site].cidr, peering.ref)
    for site in order[1:]:
        RoutesStack(
            app,
            f"{name}-routes-{site}",
            local=nets[site],
            peerings=peerings[site],
            env=env(sites[site].aws_region),
            **common,
        )

    all_cidrs = [str(cfg.cidr) for cfg in sites.values()]
    for region, cfg in config.regions.items():
        RegionStack(
            app,
            f"{name}-{region}",
            config=config,
            region=region,
            network=nets[region],
            peer_cidrs=[c for c in all_cidrs if c != str(cfg.cidr)],
            env=env(cfg.aws_region),
            **common,
        )
    ClientStack(
        app,
        f"{name}-client",
        config=config,
        network=nets["client"],
        worker_networks={r: nets[r] for r in config.regions},
        env=env(config.client.aws_region),
        **common,
    )
    _suppress_cdk_providers(app)
    # Violations interrupt synthesis; acknowledged ones are written into each resource's metadata with their reason.
    cdk.Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True)
    )
    cdk.Tags.of(app).add("proximate:deployment", name)
    return app


def _suppress_cdk_providers(app: cdk.App) -> None:
    """Accept cdk-nag's findings on the custom resource handlers that aws-cdk-lib generates (not this app's code)."""
    for construct in app.node.find_all():
        if any(marker in construct.node.path for marker in _CDK_PROVIDERS):
            suppress(construct, _PROVIDER_REASONS)
