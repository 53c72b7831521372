"""``python -m deployments.aws synth --config FILE --out DIR``: the stacks' templates, offline.

``python -m deployments.aws app --config FILE`` is the same app for the CDK CLI (``cdk deploy --all --app ...``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deployments.aws.config import ConfigError, load_config


def error_annotations(assembly) -> list[str]:
    """The error annotations of a synthesized cloud assembly (a construct's own refusal, e.g. a bad property).

    Args:
        assembly: what ``app.synth()`` returned.

    Returns:
        One line per error: the construct path and the message.

    Examples:
        >>> error_annotations(build_app(cfg).synth())  # doctest: +SKIP
        []
    """
    errors = []
    for stack in assembly.stacks:
        for message in stack.messages:
            if str(message.level).lower().endswith("error"):
                errors.append(f"{message.id}: {message.entry.data}")
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """Synthesize the deployment a config describes.

    Args:
        argv: the arguments (default: the process's).

    Returns:
        0 when every template was written; 1 when cdk-nag or an annotation refused the stacks (each finding
        listed); 2 for a refused config.

    Examples:
        >>> main(["synth", "--config", "deployments/aws/example.yaml", "--out", "cdk.out"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(prog="python -m deployments.aws", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write every stack's *.template.json to --out, without AWS credentials")
    synth.add_argument("--config", required=True, help="the deployment's YAML file")
    synth.add_argument("--out", required=True, help="the directory to write the cloud assembly to")
    app = sub.add_parser("app", help="the app, as the CDK CLI runs it (cdk deploy --all --app ...)")
    app.add_argument("--config", required=True)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from deployments.aws.app import build_app  # aws_cdk starts Node: only once the config is known to be good

    try:
        assembly = build_app(config, getattr(args, "out", None)).synth()
    except RuntimeError as exc:
        # cdk-nag (and CDK's own template validation) stop synthesis on a finding nobody acknowledged; the report
        # above names each construct and rule, and a copy is in the cloud assembly's validation-report.json.
        if "ValidationFailed" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    errors = error_annotations(assembly)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if args.command == "synth":
        written = sorted(s.template_file for s in assembly.stacks)
        print(f"{len(written)} templates in {assembly.directory}: {', '.join(written)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
