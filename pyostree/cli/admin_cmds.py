"""``admin`` commands (sysroot deployments) and the top-level ``deploy`` alias."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .. import deploy as dep
from ..errors import DeployError
from ..etcmerge import format_etc_diff
from ..sysroot import Sysroot, config_diff, iter_status_text, status_json
from .common import CommandError, print_json
from .progress import step


def _sysroot_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sysroot", default=argparse.SUPPRESS, metavar="PATH",
                   help="use system root PATH instead of /")
    p.add_argument("--print-current-dir", action="store_true", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)


def _add(sub: Any, name: str, func: Any, help_text: str,
         aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text,
                                                aliases=aliases)
    _sysroot_arg(p)
    p.set_defaults(func=func)
    return p


def _deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("revision", help="the revision to deploy: REF, REMOTE:REF or commit checksum")
    p.add_argument("--os", "--stateroot", dest="os",
                   help="the stateroot (OS name) to deploy into (default: the booted one)")
    p.add_argument("--karg", action="append", default=[], metavar="KEY=VALUE",
                   help="set a kernel argument, like root=/dev/sda1; this overrides any earlier "
                   "argument with the same name (repeatable)")
    p.add_argument("--karg-append", action="append", default=[], metavar="KEY=VALUE",
                   help="append kernel argument; useful with e.g. console= that can be used "
                   "multiple times (repeatable)")
    p.add_argument("--karg-delete", metavar="KEY=VALUE", help="delete kernel argument if it exists")
    p.add_argument("--karg-none", action="store_true",
                   help="do not import kernel arguments: start from an empty list")
    p.add_argument("--karg-proc-cmdline", action="store_true",
                   help="import the kernel arguments of the running system (/proc/cmdline)")
    p.add_argument("--no-merge", action="store_true",
                   help="do not apply configuration (/etc and kernel arguments) from the "
                   "booted deployment")
    p.add_argument("--no-prune", action="store_true", help="do not prune the repository when done")
    p.add_argument("--retain", action="store_true", help="do not delete previous deployments")
    p.add_argument("--retain-pending", action="store_true",
                   help="do not delete pending deployments")
    p.add_argument("--retain-rollback", action="store_true",
                   help="do not delete rollback deployments")
    p.add_argument("--not-as-default", action="store_true",
                   help="append rather than prepend the new deployment (it does not become the "
                   "default)")
    p.add_argument("--origin-file", metavar="FILENAME",
                   help="use this origin file for the new deployment")
    p.add_argument("--stage", action="store_true",
                   help="stage the deployment: complete it at OS shutdown")
    p.add_argument("--lock-finalization", action="store_true",
                   help="with --stage: do not finalize at shutdown until the lock is removed")


def register(sub: Any) -> None:
    p = sub.add_parser("admin", help="Manage the deployments of a sysroot (the bootable OS trees).",
                       description="Manage the deployments of a sysroot: deploy, upgrade, "
                       "roll back and clean up bootable OS trees.")
    _sysroot_arg(p)
    p.set_defaults(func=lambda a: _usage(p))
    asub = p.add_subparsers(dest="admin_command", metavar="SUBCOMMAND")

    q = _add(asub, "init-fs", cmd_init_fs,
             "Initialize an empty root filesystem with the directories a sysroot needs.")
    q.add_argument("path", metavar="PATH", help="the root directory to initialize")
    q.add_argument("--modern", action="store_true", help="only create /boot and /ostree")
    q = _add(asub, "os-init", cmd_os_init,
             "Initialize a stateroot (OS name): its deploy directory and shared /var.",
             aliases=("stateroot-init",))
    q.add_argument("osname", metavar="OSNAME", help="name of the new stateroot")
    q = _add(asub, "deploy", cmd_deploy,
             "Check out a revision as a new deployment and make it the default boot entry.")
    _deploy_options(q)
    q = _add(asub, "status", cmd_status,
             "List the deployments, marking the booted, pending and rollback ones.")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.add_argument("-V", "--verify", action="store_true",
                   help="print the commit verification status (GPG and signature engines) "
                   "of each deployment, against the remote of its origin")
    q.add_argument("-v", "--verbose", action="store_true",
                   help="accepted for ostree compatibility; prints the same")
    q = _add(asub, "undeploy", cmd_undeploy,
             "Delete the deployment at INDEX (as listed by status).")
    q.add_argument("index", type=int, metavar="INDEX", help="deployment index, 0 is the first")
    q = _add(asub, "set-default", cmd_set_default,
             "Make the deployment at INDEX the default boot entry.")
    q.add_argument("index", type=int, metavar="INDEX", help="deployment index, 0 is the first")
    q = _add(asub, "pin", cmd_pin, "Pin deployments so that they are never garbage collected.")
    q.add_argument("indexes", type=int, nargs="+", metavar="INDEX",
                   help="deployment index, 0 is the first")
    q.add_argument("-u", "--unpin", action="store_true", help="unset the pin")
    q = _add(asub, "cleanup", cmd_cleanup,
             "Delete leftover deployment data and repository objects no deployment uses.")
    q = _add(asub, "rollback", cmd_rollback,
             "Make the previous (rollback) deployment the default boot entry.")
    q = _add(asub, "boot-complete", cmd_boot_complete,
             "Mark the booted deployment as successfully booted (boot counting).")
    q = _add(asub, "finalize-staged", cmd_finalize,
             "Finalize a staged deployment: merge /etc and write boot entries.")
    q = _add(asub, "upgrade", cmd_upgrade,
             "Pull the booted deployment's origin ref and deploy the new commit.")
    q.add_argument("--os", metavar="OSNAME",
                   help="upgrade stateroot OSNAME instead of the booted one")
    q.add_argument("--pull-only", action="store_true",
                   help="do not create a deployment, just download")
    q.add_argument("--deploy-only", action="store_true", help="do not pull, only deploy")
    q.add_argument("--allow-downgrade", action="store_true",
                   help="permit deployment of chronologically older trees")
    q.add_argument("--override-commit", metavar="CHECKSUM",
                   help="deploy CHECKSUM instead of the latest tree")
    q.add_argument("--check", action="store_true",
                   help="only report whether an update exists (fetches commit metadata only)")
    q.add_argument("--stage", action="store_true",
                   help="stage the new deployment: finalize it at shutdown (needs a booted "
                   "system)")
    q.add_argument("--reboot", "-r", action="store_true", help="reboot after a successful upgrade")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q = _add(asub, "switch", cmd_switch,
             "Deploy another ref (branch) and make it the origin for future upgrades.")
    q.add_argument("ref", metavar="REF", help="the new ref, REF or REMOTE:REF")
    q.add_argument("--os", metavar="OSNAME",
                   help="switch stateroot OSNAME instead of the booted one")
    q.add_argument("--reboot", "-r", action="store_true", help="reboot after switching trees")
    q = _add(asub, "config-diff", cmd_config_diff,
             "List the changes of a deployment's /etc against its defaults in /usr/etc: "
             "M (modified), D (deleted) and A (added) paths.")
    q.add_argument("--os", metavar="OSNAME",
                   help="use the merge deployment of stateroot OSNAME instead of the booted one")
    q = _add(asub, "set-origin", cmd_set_origin,
             "Add a remote (if missing) and make REMOTENAME:BRANCH the origin of a deployment.")
    q.add_argument("remote", metavar="REMOTENAME", help="the remote to follow")
    q.add_argument("url", metavar="URL",
                   help="its URL, used only when the remote does not exist yet")
    q.add_argument("branch", metavar="BRANCH", nargs="?",
                   help="the branch to follow (default: the branch of the current origin)")
    q.add_argument("--index", type=int, default=-1, metavar="INDEX",
                   help="operate on the deployment INDEX, starting from zero (default: the "
                   "booted one)")
    q.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set config option KEY=VALUE for a new remote (repeatable)")
    q = _add(asub, "kargs", lambda a: _usage(q), "Change the kernel arguments of deployments.")
    ksub = q.add_subparsers(dest="kargs_command", metavar="SUBCOMMAND")
    k = _add(ksub, "edit-in-place", cmd_kargs,
             "Append kernel arguments to every deployment that lacks them.")
    k.add_argument("--append-if-missing", action="append", default=[], metavar="KEY=VALUE",
                   help="append kernel argument KEY=VALUE if it does not exist (repeatable)")

    top = _add(sub, "deploy", cmd_deploy,
               "Check out a revision as a new deployment (same as 'admin deploy').")
    _deploy_options(top)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 1


def _sysroot(args: argparse.Namespace) -> Sysroot:
    path = Path(getattr(args, "sysroot", None) or "/")
    if not (path / "ostree").is_dir():
        raise DeployError(f"{path} is not an OSTree sysroot (no ostree/ directory)")
    return Sysroot(path).load()


def cmd_init_fs(args: argparse.Namespace) -> int:
    dep.init_fs(args.path, modern=args.modern)
    return 0


def cmd_os_init(args: argparse.Namespace) -> int:
    dep.os_init(_sysroot(args), args.osname)
    print(f"ostree/deploy/{args.osname} initialized as OSTree root")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    # deploy() takes no progress callback: plain step lines, only on a terminal.
    step(f"Deploying {args.revision}...")
    new = dep.deploy(
        sysroot, args.os, args.revision, kargs=args.karg, karg_append=args.karg_append,
        karg_delete=args.karg_delete, karg_none=args.karg_none,
        karg_proc_cmdline=args.karg_proc_cmdline, no_merge=args.no_merge,
        no_prune=args.no_prune, retain=args.retain, retain_pending=args.retain_pending,
        retain_rollback=args.retain_rollback, not_as_default=args.not_as_default,
        origin_file=args.origin_file, stage=args.stage,
        lock_finalization=args.lock_finalization,
        origin_refspec=args.revision if ":" in args.revision else None,
    )
    print(f"Deployed {new.osname} {new.name}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    if args.json:
        print_json(status_json(sysroot))
        return 0
    # Deployment by deployment: what precedes one that fails to verify is printed, as ostree.
    for chunk in iter_status_text(sysroot, verify=args.verify):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    removed = dep.undeploy(_sysroot(args), args.index)
    print(f"Deleted deployment {removed.name}")
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    dep.set_default(_sysroot(args), args.index)
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    for index in args.indexes:
        changed = dep.pin(sysroot, index, unpin=args.unpin)
        word = "unpinned" if args.unpin else "pinned"
        state = "now" if changed else "already"
        print(f"Deployment {index} is {state} {word}")
        sysroot.load()
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    dep.cleanup(_sysroot(args))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    target = dep.rollback(_sysroot(args))
    print(f"Moving '{target.name}' to be first deployment")
    return 0


def cmd_boot_complete(args: argparse.Namespace) -> int:
    dep.boot_complete(_sysroot(args))
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    if not dep.finalize_staged(_sysroot(args)):
        print("No staged deployment")
    return 0


def _reboot() -> None:
    import subprocess

    subprocess.run(["systemctl", "reboot"], check=False)


def cmd_upgrade(args: argparse.Namespace) -> int:
    if args.pull_only and args.deploy_only:
        raise CommandError("--pull-only and --deploy-only conflict")
    from ..pull import PullOptions  # the network stack loads only for commands that use it
    from ..upgrade import upgrade

    result = upgrade(
        _sysroot(args), args.os, pull_only=args.pull_only, deploy_only=args.deploy_only,
        allow_downgrade=args.allow_downgrade, override_commit=args.override_commit,
        check_only=args.check, options=PullOptions(timestamp_check=False), stage=args.stage,
    )
    if args.json:
        print_json({"refspec": result.refspec, "current": result.current,
                    "target": result.target, "available": result.available,
                    "deployed": result.deployed, "version": result.version})
    elif args.check:
        if result.available:
            print(f"Update available: {result.target}"
                  + (f" (version {result.version})" if result.version else ""))
        else:
            print("No update available.")
    elif not result.available:
        print("No update available.")
    elif result.deployed:
        print(f"Deployed {result.target}; reboot to use it")
    else:
        print(f"Pulled {result.target}")
    if args.check:
        return 0 if result.available else 77
    if args.reboot and result.deployed:
        _reboot()
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    from ..upgrade import switch

    result = switch(_sysroot(args), args.ref, args.os)
    print(f"Deployed {result.target}" if result.deployed else "Already deployed")
    if args.reboot and result.deployed:
        _reboot()
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    text = format_etc_diff(config_diff(_sysroot(args), args.os))
    sys.stdout.flush()
    # file names are bytes: write back exactly what the directory holds
    sys.stdout.buffer.write(os.fsencode(text))
    sys.stdout.buffer.flush()
    return 0


def _key_values(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` options, in order (a repeated key keeps its first place)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError("Missing '=' in KEY=VALUE for --set")
        if not key:
            raise CommandError(f"Empty key in --set {item!r}")
        out[key] = value
    return out


def cmd_set_origin(args: argparse.Namespace) -> int:
    options = _key_values(args.set)
    dep.set_origin(_sysroot(args), args.remote, args.url, args.branch, index=args.index,
                   options=options)
    return 0


def cmd_kargs(args: argparse.Namespace) -> int:
    dep.kargs_edit_in_place(_sysroot(args), args.append_if_missing)
    return 0
