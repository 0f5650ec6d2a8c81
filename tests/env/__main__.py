"""``python -m tests.env provision|up|down|status``: the test environment by hand.

``up`` prints shell exports: ``eval "$(python -m tests.env up)"``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from tests.env import provision, sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.env", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision", help="build and download every server into the cache, start nothing")
    start = sub.add_parser("up", help="start servers in the background and print their addresses as exports")
    start.add_argument("components", nargs="*", metavar="COMPONENT",
                       help=f"any of {', '.join(sandbox.COMPONENTS)} (default: all)")
    sub.add_parser("down", help="stop the servers that 'up' started and remove their data")
    sub.add_parser("status", help="which servers of the sandbox are running")
    args = parser.parse_args(argv)

    try:
        if args.command == "provision":
            provision.provision_all()
        elif args.command == "up":
            unknown = set(args.components) - set(sandbox.COMPONENTS)
            if unknown:
                parser.error(f"unknown component(s) {sorted(unknown)}: choose from {list(sandbox.COMPONENTS)}")
            state = sandbox.up(args.components or list(sandbox.COMPONENTS))
            print(f"export EVENTFERRY_SANDBOX={shlex.quote(str(state.directory))}")
            for key, value in state.exports.items():
                print(f"export {key}={shlex.quote(value)}")
            provision.progress("running; stop with: python -m tests.env down")
        elif args.command == "down":
            stopped = sandbox.down()
            provision.progress("stopped" if stopped else "no sandbox was running")
        elif args.command == "status":
            state = sandbox.SandboxState.load(sandbox.sandbox_dir())
            if state is None:
                print("no sandbox")
                return 1
            for name, running in state.alive().items():
                print(f"{name}: {'running' if running else 'STOPPED'}")
            for key, value in state.exports.items():
                print(f"export {key}={shlex.quote(value)}")
            return 0 if all(state.alive().values()) else 1
    except (provision.ProvisionError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
