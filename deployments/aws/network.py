"""Each region's network: a VPC of private subnets with VPC endpoints, and the peerings that join the regions.

Peering is a full mesh of VPC peerings (same account, so CloudFormation accepts them): Dask workers of one region
fetch from workers of another directly, and Transit Gateway peering is neither transitive nor accepted without a
custom resource. A peering lives in the earlier region's ``peering`` stack with that side's routes; the later
region's routes back live in its ``routes`` stack, which breaks the cycle of two stacks each needing the other's IDs.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from deployments.aws.config import _Site

# What ECS on EC2 and the containers reach without a NAT gateway: the image (ECR and its S3 layers), the ECS
# control plane (agent, telemetry), logs, TLS material and the instances' SSM parameters.
_INTERFACE_ENDPOINTS = {
    "Ecr": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
}


class NetworkStack(cdk.Stack):
    """One region's VPC: private subnets in two zones, VPC endpoints, flow logs.

    The client region also gets one NAT gateway: the autoscaler calls the ECS APIs of the other regions, and
    Prefect Cloud (when configured) is on the internet. Worker regions have no route out at all.
    """

    def __init__(self, scope: Construct, stack_id: str, *, site: _Site, egress: bool, **kw):
        super().__init__(scope, stack_id, **kw)
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.RETAIN
        )
        private = ec2.SubnetConfiguration(
            name="private",
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS if egress else ec2.SubnetType.PRIVATE_ISOLATED,
            cidr_mask=site.cidr.prefixlen + 2,
        )
        subnets = [private]
        if egress:
            subnets.insert(0, ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=28))
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(str(site.cidr)),
            availability_zones=site.zones,
            nat_gateways=1 if egress else 0,
            subnet_configuration=subnets,
            restrict_default_security_group=False,  # a custom resource otherwise; nothing uses the default group
            flow_logs={"all": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        # One group for every endpoint, admitting HTTPS from this VPC's range only (spelled out, not a token, so
        # the groups' rules can be checked before deployment).
        endpoint_sg = ec2.SecurityGroup(self, "EndpointSg", vpc=self.vpc, description="VPC interface endpoints")
        endpoint_sg.add_ingress_rule(ec2.Peer.ipv4(str(site.cidr)), ec2.Port.tcp(443), "HTTPS from this VPC")
        for name, service in _INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                name, service=service, private_dns_enabled=True, open=False, security_groups=[endpoint_sg]
            )
        self.cidr = str(site.cidr)

    @property
    def route_table_ids(self) -> list[str]:
        """The private subnets' route tables (the ones peer routes go into)."""
        subnets = self.vpc.private_subnets or self.vpc.isolated_subnets
        return [subnet.route_table.route_table_id for subnet in subnets]


class PeeringStack(cdk.Stack):
    """The peerings from one region to every later region, and this side's routes to them."""

    def __init__(self, scope: Construct, stack_id: str, *, local: NetworkStack, peers: dict[str, NetworkStack], **kw):
        super().__init__(scope, stack_id, **kw)
        self.peerings: dict[str, ec2.CfnVPCPeeringConnection] = {}
        for name, peer in peers.items():
            peering = ec2.CfnVPCPeeringConnection(
                self,
                f"To-{name}",
                vpc_id=local.vpc.vpc_id,
                peer_vpc_id=peer.vpc.vpc_id,
                peer_region=peer.region,
                peer_owner_id=peer.account,
            )
            self.peerings[name] = peering
            for i, table in enumerate(local.route_table_ids):
                ec2.CfnRoute(
                    self,
                    f"Route-{name}-{i}",
                    route_table_id=table,
                    destination_cidr_block=peer.cidr,
                    vpc_peering_connection_id=peering.ref,
                )


class RoutesStack(cdk.Stack):
    """A region's routes back to every earlier region, through the peerings those regions created."""

    def __init__(self, scope: Construct, stack_id: str, *, local: NetworkStack, peerings: dict[str, tuple], **kw):
        super().__init__(scope, stack_id, **kw)
        for name, (peer_cidr, peering_id) in peerings.items():
            for i, table in enumerate(local.route_table_ids):
                ec2.CfnRoute(
                    self,
                    f"Route-{name}-{i}",
                    route_table_id=table,
                    destination_cidr_block=peer_cidr,
                    vpc_peering_connection_id=peering_id,
                )
