"""The client region: the scheduler behind Cloud Map, the autoscaler, the catalog domain and Prefect."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import custom_resources as cr
from constructs import Construct

from deployments.aws.common import (
    TLS_ARGS,
    namespace_name,
    scheduler_address,
    service_logs,
    suppress,
    tls_secret,
    tls_secrets,
)
from deployments.aws.config import DeploymentConfig
from deployments.aws.network import NetworkStack
from deployments.aws.region import cluster_name, worker_service_name

PREFECT_PORT = 4200
_ENV_REASON = "non-secret settings (addresses, names); every secret comes from Secrets Manager"


def scheduler_command(config: DeploymentConfig) -> list[str]:
    """The scheduler container's command: dask's scheduler with proximate's routing preload, TLS only.

    Examples:
        >>> scheduler_command(cfg)[:4]  # doctest: +SKIP
        ['dask', 'scheduler', '--preload', 'proximate.scheduler_plugin']
    """
    return [
        "dask",
        "scheduler",
        "--preload",
        "proximate.scheduler_plugin",
        "--protocol",
        "tls",
        "--port",
        str(config.scheduler_port),
        "--dashboard-address",
        ":8787",
        *TLS_ARGS,
    ]


def autoscale_command(config: DeploymentConfig) -> list[str]:
    """``proximate autoscale`` over every region's worker service, with each region's bounds from the config.

    Examples:
        >>> autoscale_command(cfg)[:2]  # doctest: +SKIP
        ['proximate', 'autoscale']
    """
    cmd = ["proximate", "autoscale", "--scheduler", scheduler_address(config)]
    for name, site in config.regions.items():
        cmd += [
            "--ecs-service",
            f"{name}={site.aws_region}:{cluster_name(config, name)}/{worker_service_name(config, name)}",
            "--min-workers",
            f"{name}={site.min_workers}",
            "--max-workers",
            f"{name}={site.max_workers}",
        ]
    threads = {site.threads_per_worker for site in config.regions.values()}
    if len(threads) == 1:  # the command takes one value for every region
        cmd += ["--threads-per-worker", str(threads.pop())]
    return [*cmd, *TLS_ARGS]


class ClientStack(cdk.Stack):
    """Everything of the client region but its network."""

    def __init__(
        self,
        scope: Construct,
        stack_id: str,
        *,
        config: DeploymentConfig,
        network: NetworkStack,
        worker_networks: dict[str, NetworkStack],
        **kw,
    ):
        super().__init__(scope, stack_id, **kw)
        self.config = config
        vpc = network.vpc
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        all_cidrs = [str(config.client.cidr), *(str(s.cidr) for s in config.regions.values())]

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=f"{config.name}-client",
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        namespace = servicediscovery.PrivateDnsNamespace(self, "Namespace", name=namespace_name(config), vpc=vpc)
        self._share_namespace(namespace, worker_networks)
        self.tls = tls_secret(self, config, "client")

        # The scheduler: admitted from every region's CIDR (workers) and this one (autoscaler, flows) on its port.
        scheduler_sg = ec2.SecurityGroup(self, "SchedulerSg", vpc=vpc, description="Dask scheduler")
        for cidr in all_cidrs:
            scheduler_sg.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(config.scheduler_port), f"Dask from {cidr}")
        scheduler_sg.add_ingress_rule(
            ec2.Peer.ipv4(str(config.client.cidr)), ec2.Port.tcp(8787), "dashboard, from the client region only"
        )
        self._service(
            "Scheduler",
            command=scheduler_command(config),
            cpu=config.client.scheduler_cpu,
            memory=config.client.scheduler_memory_mib,
            security_group=scheduler_sg,
            namespace=namespace,
            dns_name="scheduler",
            secrets=tls_secrets(self.tls),
        )

        # The autoscaler: may only read and resize the worker services this config names.
        autoscaler = self._service(
            "Autoscaler",
            command=autoscale_command(config),
            cpu=512,
            memory=1024,
            security_group=ec2.SecurityGroup(self, "AutoscalerSg", vpc=vpc, description="proximate autoscale"),
            secrets=tls_secrets(self.tls),
        )
        autoscaler.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ecs:UpdateService", "ecs:DescribeServices"],
                resources=[
                    f"arn:{cdk.Aws.PARTITION}:ecs:{site.aws_region}:{config.account}:service/"
                    f"{cluster_name(config, name)}/{worker_service_name(config, name)}"
                    for name, site in config.regions.items()
                ],
            )
        )

        flow_role = iam.Role(
            self,
            "FlowRunRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Prefect flow runs (ECS work pool): the catalog and the client's TLS material",
        )
        self.tls.grant_read(flow_role)
        self.catalog = self._catalog(vpc, all_cidrs, flow_role)
        self._prefect(vpc, namespace, flow_role)

    def _share_namespace(self, namespace: servicediscovery.PrivateDnsNamespace, worker_networks) -> None:
        """Associate the namespace's private zone with every worker VPC, so workers resolve the scheduler's name.

        CloudFormation has no resource for associating a zone it did not create with another region's VPC: an SDK
        call in a custom resource does it (and undoes it on delete).
        """
        for name, net in worker_networks.items():
            vpc_ref = {"VPCId": net.vpc.vpc_id, "VPCRegion": net.region}
            association = cr.AwsCustomResource(
                self,
                f"ZoneIn-{name}",
                on_create=cr.AwsSdkCall(
                    service="Route53",
                    action="associateVPCWithHostedZone",
                    parameters={"HostedZoneId": namespace.namespace_hosted_zone_id, "VPC": vpc_ref},
                    physical_resource_id=cr.PhysicalResourceId.of(f"zone-{name}"),
                ),
                on_delete=cr.AwsSdkCall(
                    service="Route53",
                    action="disassociateVPCFromHostedZone",
                    parameters={"HostedZoneId": namespace.namespace_hosted_zone_id, "VPC": vpc_ref},
                ),
                policy=cr.AwsCustomResourcePolicy.from_statements(
                    [
                        iam.PolicyStatement(
                            actions=["route53:AssociateVPCWithHostedZone", "route53:DisassociateVPCFromHostedZone"],
                            resources=[
                                f"arn:{cdk.Aws.PARTITION}:route53:::hostedzone/{namespace.namespace_hosted_zone_id}"
                            ],
                        ),
                        # Route 53 checks the VPC with this call; it takes no resource ARN.
                        iam.PolicyStatement(actions=["ec2:DescribeVpcs"], resources=["*"]),
                    ]
                ),
                install_latest_aws_sdk=False,
            )
            suppress(association, {"IAM5[Resource::*]": "ec2:DescribeVpcs takes no resource ARN"})

    def _service(
        self,
        name: str,
        *,
        command: list[str],
        cpu: int,
        memory: int,
        security_group: ec2.SecurityGroup,
        namespace: servicediscovery.PrivateDnsNamespace | None = None,
        dns_name: str | None = None,
        secrets: dict[str, ecs.Secret] | None = None,
        environment: dict[str, str] | None = None,
        port: int | None = None,
    ) -> ecs.FargateTaskDefinition:
        """One always-on Fargate service of the client region, with its own log group."""
        task = ecs.FargateTaskDefinition(
            self, f"{name}Task", family=f"{self.config.name}-{name.lower()}", cpu=cpu, memory_limit_mib=memory
        )
        task.add_container(
            name.lower(),
            image=ecs.ContainerImage.from_registry(self.config.image_in(self.region)),
            command=command,
            secrets=secrets or {},
            environment=environment,
            logging=service_logs(self, self.config, name),
            port_mappings=[ecs.PortMapping(container_port=port)] if port else None,
        )
        if environment:
            suppress(task, {"ECS2": _ENV_REASON})
        ecs.FargateService(
            self,
            name,
            cluster=self.cluster,
            task_definition=task,
            service_name=f"{self.config.name}-{name.lower()}",
            desired_count=1,
            security_groups=[security_group],
            vpc_subnets=self.subnets,
            cloud_map_options=ecs.CloudMapOptions(
                name=dns_name, cloud_map_namespace=namespace, dns_ttl=cdk.Duration.seconds(10)
            )
            if namespace
            else None,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        return task

    def _catalog(self, vpc: ec2.IVpc, all_cidrs: list[str], flow_role: iam.Role) -> opensearch.Domain:
        """The catalog's OpenSearch domain: in the VPC, encrypted, HTTPS only, fine-grained access control."""
        site = self.config.client
        catalog_sg = ec2.SecurityGroup(self, "CatalogSg", vpc=vpc, description="the catalog OpenSearch domain")
        catalog_sg.add_ingress_rule(ec2.Peer.ipv4(str(site.cidr)), ec2.Port.tcp(443), "HTTPS from the client region")
        zones = min(site.catalog_instance_count, len(site.zones), 3)
        domain = opensearch.Domain(
            self,
            "Catalog",
            version=opensearch.EngineVersion.OPENSEARCH_2_19,
            vpc=vpc,
            vpc_subnets=[ec2.SubnetSelection(subnets=vpc.private_subnets[:zones])],
            security_groups=[catalog_sg],
            capacity=opensearch.CapacityConfig(
                data_nodes=site.catalog_instance_count,
                data_node_instance_type=site.catalog_instance_type,
                multi_az_with_standby_enabled=False,
            ),
            ebs=opensearch.EbsOptions(volume_size=site.catalog_volume_gib, volume_type=ec2.EbsDeviceVolumeType.GP3),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=zones > 1, availability_zone_count=zones)
            if zones > 1
            else None,
            node_to_node_encryption=True,
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(master_user_arn=flow_role.role_arn),
            logging=opensearch.LoggingOptions(
                app_log_enabled=True, slow_search_log_enabled=True, slow_index_log_enabled=True, audit_log_enabled=True
            ),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        domain.grant_read_write(flow_role)
        domain_id = self.get_logical_id(domain.node.default_child)
        suppress(
            domain,
            {
                "OS4": "a small catalog (two data nodes): dedicated masters would triple its cost for no benefit",
                "OS3": "in a VPC behind a security group admitting the client CIDR only, with fine-grained access",
                "OS5": "anonymous access is denied by fine-grained access control (IAM master user) in the VPC",
                "IAM5[Resource::*]": "aws-cdk-lib's custom resource that lets the domain write its logs: "
                "logs:PutResourcePolicy takes no resource ARN",
            },
        )
        suppress(
            flow_role,
            {f"IAM5[Resource::<{domain_id}.Arn>/*]": "the catalog's indexes: paths under this domain's own ARN"},
        )
        cdk.CfnOutput(self, "CatalogEndpoint", value=f"https://{domain.domain_endpoint}")
        return domain

    def _prefect(self, vpc: ec2.IVpc, namespace, flow_role: iam.Role) -> None:
        """The Prefect API (a server on ECS with RDS PostgreSQL, or Prefect Cloud) and the ECS work pool worker."""
        prefect = self.config.prefect
        client_cidr = str(self.config.client.cidr)
        api_secrets: dict[str, ecs.Secret] = {}
        if prefect.mode == "cloud":
            api_url = prefect.api_url
            key = secretsmanager.Secret.from_secret_name_v2(self, "PrefectApiKey", prefect.api_key_secret_name)
            api_secrets["PREFECT_API_KEY"] = ecs.Secret.from_secrets_manager(key)
        else:
            api_url = f"http://prefect.{namespace_name(self.config)}:{PREFECT_PORT}/api"
            db_sg = ec2.SecurityGroup(self, "PrefectDbSg", vpc=vpc, description="Prefect PostgreSQL")
            server_sg = ec2.SecurityGroup(self, "PrefectServerSg", vpc=vpc, description="Prefect server")
            server_sg.add_ingress_rule(ec2.Peer.ipv4(client_cidr), ec2.Port.tcp(PREFECT_PORT), "the Prefect API")
            db_sg.add_ingress_rule(server_sg, ec2.Port.tcp(5432), "PostgreSQL from the Prefect server")
            database = rds.DatabaseInstance(
                self,
                "PrefectDb",
                engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_16_9),
                instance_type=ec2.InstanceType(prefect.database_instance_type),
                vpc=vpc,
                vpc_subnets=self.subnets,
                security_groups=[db_sg],
                credentials=rds.Credentials.from_generated_secret("prefect"),
                database_name="prefect",
                storage_encrypted=True,
                allocated_storage=20,
                backup_retention=cdk.Duration.days(7),
                deletion_protection=True,
                multi_az=False,
                removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            )
            suppress(
                database,
                {
                    "RDS3": "run history only: the daily snapshots are its recovery; multi-AZ would double its cost",
                    "RDS11": "in private subnets behind a group admitting only the Prefect server",
                    "SMG4": "rotating the password means restarting the Prefect server: the operator does it",
                },
            )
            secret = database.secret
            db_secrets = {
                "PREFECT_SERVER_DATABASE_HOST": ecs.Secret.from_secrets_manager(secret, "host"),
                "PREFECT_SERVER_DATABASE_USER": ecs.Secret.from_secrets_manager(secret, "username"),
                "PREFECT_SERVER_DATABASE_PASSWORD": ecs.Secret.from_secrets_manager(secret, "password"),
            }
            self._service(
                "PrefectServer",
                command=["prefect", "server", "start", "--host", "0.0.0.0", "--port", str(PREFECT_PORT)],
                cpu=1024,
                memory=2048,
                security_group=server_sg,
                namespace=namespace,
                dns_name="prefect",
                secrets=db_secrets,
                port=PREFECT_PORT,
                environment={
                    "PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg",
                    "PREFECT_SERVER_DATABASE_PORT": "5432",
                    "PREFECT_SERVER_DATABASE_NAME": "prefect",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_UI_API_URL": api_url,
                },
            )

        worker = self._service(
            "PrefectWorker",
            command=["prefect", "worker", "start", "--pool", prefect.work_pool, "--type", "ecs"],
            cpu=512,
            memory=1024,
            security_group=ec2.SecurityGroup(self, "PrefectWorkerSg", vpc=vpc, description="Prefect ECS worker"),
            secrets=api_secrets,
            environment={"PREFECT_API_URL": api_url},
        )
        # The ECS worker registers a task definition per deployment and runs flow runs in this cluster only.
        worker.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "ecs:RegisterTaskDefinition",
                    "ecs:DeregisterTaskDefinition",
                    "ecs:DescribeTaskDefinition",
                    "ecs:ListTaskDefinitions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeVpcs",
                ],
                resources=["*"],
            )
        )
        worker.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks", "ecs:TagResource"],
                resources=["*"],
                conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}},
            )
        )
        worker.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"], resources=[flow_role.role_arn, worker.obtain_execution_role().role_arn]
            )
        )
        worker.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:GetLogEvents"],
                resources=[
                    f"arn:{cdk.Aws.PARTITION}:logs:{self.region}:{self.account}:log-group:/{self.config.name}/*"
                ],
            )
        )
        logs_arn = f"arn:<AWS::Partition>:logs:{self.region}:{self.account}:log-group:/{self.config.name}/*"
        suppress(
            worker,
            {
                "IAM5[Resource::*]": "task definition and subnet calls take no resource ARN (AWS's service "
                "authorization reference); RunTask/StopTask/DescribeTasks are limited to this cluster by condition",
                f"IAM5[Resource::{logs_arn}]": "reads the flow runs' logs, in this deployment's log groups only",
            },
        )
        cdk.CfnOutput(self, "FlowRunRoleArn", value=flow_role.role_arn)
        cdk.CfnOutput(self, "ClusterArn", value=self.cluster.cluster_arn)
        cdk.CfnOutput(self, "PrefectApiUrl", value=api_url)
