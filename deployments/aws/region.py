"""A worker region: FSx for Lustre linked to the region's bucket, and ECS on EC2 workers that mount it.

ECS on EC2 rather than Fargate: Fargate tasks cannot mount Lustre. The instances install the Lustre client and mount
the file system with ``flock`` (the sync's run lock and the manifest need POSIX locks) before ECS places a task.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_fsx as fsx
from aws_cdk import aws_iam as iam
from constructs import Construct

from deployments.aws.common import TLS_ARGS, scheduler_address, service_logs, suppress, tls_secret, tls_secrets
from deployments.aws.config import DeploymentConfig, RegionConfig
from deployments.aws.network import NetworkStack

# Lustre's LNet port and the ports its clients connect from (AWS's FSx for Lustre security group guidance).
_LUSTRE_PORTS = ((988, 988), (1018, 1023))


def cluster_name(config: DeploymentConfig, region: str) -> str:
    """The ECS cluster of a region's workers (the autoscaler names it, so it is fixed, not generated)."""
    return f"{config.name}-{region}"


def worker_service_name(config: DeploymentConfig, region: str) -> str:
    """The ECS service of a region's workers."""
    return f"{config.name}-worker-{region}"


def worker_command(config: DeploymentConfig, region: str) -> list[str]:
    """The worker container's command: ``proximate worker`` of this region on the FSx mount, TLS to the scheduler.

    Examples:
        >>> worker_command(cfg, "era5")[:6]  # doctest: +SKIP
        ['proximate', 'worker', '--region', 'era5', '--root', '/fsx']
    """
    site = config.regions[region]
    return [
        "proximate",
        "worker",
        "--region",
        region,
        "--root",
        "/fsx",
        "--scheduler",
        scheduler_address(config),
        "--nthreads",
        str(site.threads_per_worker),
        "--memory-limit",
        f"{site.worker_memory_mib}MiB",
        *TLS_ARGS,
    ]


class RegionStack(cdk.Stack):
    """One worker region's file system, instances and worker service."""

    def __init__(
        self,
        scope: Construct,
        stack_id: str,
        *,
        config: DeploymentConfig,
        region: str,
        network: NetworkStack,
        peer_cidrs: list[str],
        **kw,
    ):
        super().__init__(scope, stack_id, **kw)
        site: RegionConfig = config.regions[region]
        vpc = network.vpc
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

        # Workers: admitted only from the scheduler's region, the other worker regions and their own VPC (workers
        # of one region fetch from each other too), only on the ports Dask listens on.
        self.worker_sg = ec2.SecurityGroup(self, "WorkerSg", vpc=vpc, description=f"{region} Dask workers")
        low, high = config.worker_ports
        for cidr in [str(site.cidr), *peer_cidrs]:
            self.worker_sg.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp_range(low, high), f"Dask from {cidr}")

        # The instances mount Lustre; only the file servers connect to them (tasks have their own interfaces).
        instance_sg = ec2.SecurityGroup(self, "InstanceSg", vpc=vpc, description=f"{region} ECS container instances")
        fsx_sg = ec2.SecurityGroup(self, "FsxSg", vpc=vpc, description=f"{region} FSx for Lustre")
        for first, last in _LUSTRE_PORTS:
            fsx_sg.add_ingress_rule(fsx_sg, ec2.Port.tcp_range(first, last), "Lustre between file servers")
            fsx_sg.add_ingress_rule(instance_sg, ec2.Port.tcp_range(first, last), "Lustre from the instances")
            # Lustre servers also call their clients back (AWS's client security group rules for FSx for Lustre).
            instance_sg.add_ingress_rule(fsx_sg, ec2.Port.tcp_range(first, last), "Lustre from the file servers")

        self.file_system = fsx.CfnFileSystem(
            self,
            "Lustre",
            file_system_type="LUSTRE",
            file_system_type_version="2.15",
            storage_capacity=site.fsx_storage_gib,
            storage_type="SSD",
            subnet_ids=[vpc.isolated_subnets[0].subnet_id],
            security_group_ids=[fsx_sg.security_group_id],
            lustre_configuration=fsx.CfnFileSystem.LustreConfigurationProperty(
                deployment_type="PERSISTENT_2",
                per_unit_storage_throughput=site.fsx_throughput_mbps_per_tib,
                data_compression_type="LZ4",
                automatic_backup_retention_days=0,  # the bucket is the source of truth: nothing here to back up
                weekly_maintenance_start_time="7:03:00",
            ),
            tags=[cdk.CfnTag(key="proximate:region", value=region)],
        )
        self.file_system.apply_removal_policy(cdk.RemovalPolicy.DESTROY)
        # "link": the bucket's prefix appears under /fsx; with auto-import, new and changed objects as they land.
        # "sync": nothing linked; the nightly sync mirrors the bucket into /fsx.
        if site.ingest == "link":
            self._link(site)

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=cluster_name(config, region),
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        instance_role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"ECS container instances of {region}",
        )
        user_data = ec2.UserData.for_linux()
        fs_dns = f"{self.file_system.ref}.fsx.{self.region}.amazonaws.com"
        mount = f"{fs_dns}@tcp:/{self.file_system.attr_lustre_mount_name}"
        user_data.add_commands(
            # The Lustre client from the distribution's repository (reached through the S3 gateway endpoint).
            "dnf install -y lustre-client",
            "mkdir -p /fsx",
            f"echo '{mount} /fsx lustre defaults,relatime,flock,_netdev,x-systemd.automount,"
            "x-systemd.requires=network.service 0 0' >> /etc/fstab",
            # ECS must not place a worker before the mount (the worker would write to the instance's disk): the
            # ECS agent starts after user data (it reads the cluster name user data writes), so wait here.
            "until mount /fsx; do sleep 10; done",
            "chown 10001:10001 /fsx",
        )
        launch_template = ec2.LaunchTemplate(
            self,
            "Instances",
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(),
            instance_type=ec2.InstanceType(site.instance_type),
            role=instance_role,
            security_group=instance_sg,
            user_data=user_data,
            require_imdsv2=True,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(60, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3),
                )
            ],
        )
        group = autoscaling.AutoScalingGroup(
            self,
            "Capacity",
            vpc=vpc,
            vpc_subnets=subnets,
            launch_template=launch_template,
            min_capacity=0,
            max_capacity=site.max_workers,
        )
        group_id = self.get_logical_id(group.node.default_child)
        hook = "aws-cdk-lib's instance drain hook (a Lambda and a topic it creates with every ECS capacity group)"
        suppress(
            group,
            {
                "AS3": "ECS's capacity provider scales this group; its events are in the ECS service's event log",
                "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": hook,
                "IAM5[Resource::*]": hook,
                f"IAM5[Resource::arn:<AWS::Partition>:autoscaling:{site.aws_region}:{config.account}:autoScalingGroup:"
                f"*:autoScalingGroupName/<{group_id}>]": hook,
                "L1": hook,
                "SNS3": hook + ": only the Auto Scaling service publishes to it",
            },
        )
        # ECS's managed draining moves tasks off an instance before it goes.
        capacity = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            auto_scaling_group=group,
            enable_managed_termination_protection=False,
            enable_managed_draining=True,
        )
        self.cluster.add_asg_capacity_provider(capacity)
        suppress(
            instance_role,
            {
                "IAM5[Action::ecs:Submit*]": "the ECS agent's own calls, as aws-cdk-lib grants them to instances",
                "IAM5[Resource::*]": "ecr:GetAuthorizationToken and the ECS agent's discovery take no resource ARN",
            },
        )

        self.tls = tls_secret(self, config, region)
        task = ecs.Ec2TaskDefinition(
            self,
            "WorkerTask",
            family=f"{config.name}-worker-{region}",
            network_mode=ecs.NetworkMode.AWS_VPC,
            volumes=[ecs.Volume(name="fsx", host=ecs.Host(source_path="/fsx"))],
        )
        # Least privilege on the data: read the source prefix only (the nightly sync and direct reads).
        bucket_arn = f"arn:{cdk.Aws.PARTITION}:s3:::{site.bucket}"
        task.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"], resources=[f"{bucket_arn}/{site.prefix}*"]
            )
        )
        task.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{site.prefix}*"]}} if site.prefix else None,
            )
        )
        suppress(
            task,
            {
                f"IAM5[Resource::arn:<AWS::Partition>:s3:::{site.bucket}/{site.prefix}*]": "objects under the "
                "region's source prefix only: the keys under it are not known in advance",
                "ECS2": "AWS_REGION only (aws-cdk-lib sets it); every secret comes from Secrets Manager",
            },
        )
        container = task.add_container(
            "worker",
            image=ecs.ContainerImage.from_registry(config.image_in(site.aws_region)),
            command=worker_command(config, region),
            memory_reservation_mib=site.worker_memory_mib,
            secrets=tls_secrets(self.tls),
            logging=service_logs(self, config, f"Worker{region.title().replace('-', '')}"),
        )
        container.add_mount_points(ecs.MountPoint(container_path="/fsx", source_volume="fsx", read_only=False))
        self.service = ecs.Ec2Service(
            self,
            "Workers",
            cluster=self.cluster,
            task_definition=task,
            service_name=worker_service_name(config, region),
            desired_count=site.min_workers,  # from then on `proximate autoscale` sets it
            security_groups=[self.worker_sg],
            vpc_subnets=subnets,
            min_healthy_percent=0,
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider=capacity.capacity_provider_name, weight=1)
            ],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )

    def _link(self, site: RegionConfig) -> None:
        """The data repository association of the file system's root with the region's source prefix."""
        fsx.CfnDataRepositoryAssociation(
            self,
            "SourceLink",
            file_system_id=self.file_system.ref,
            file_system_path="/",
            data_repository_path=site.source_url,
            batch_import_meta_data_on_create=True,
            imported_file_chunk_size=1024,
            s3=fsx.CfnDataRepositoryAssociation.S3Property(
                auto_import_policy=fsx.CfnDataRepositoryAssociation.AutoImportPolicyProperty(
                    events=["NEW", "CHANGED", "DELETED"]
                )
            )
            if site.auto_import
            else None,
        )
