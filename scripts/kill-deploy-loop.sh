#!/bin/sh
# Many SIGKILL trials of pyostree deploys: an interrupted deploy must always leave a default
# boot entry that boots a complete deployment, and a plain rerun must succeed and clean up.
#
#   scripts/kill-deploy-loop.sh [TRIALS [SEED]]     (default: 100 trials, seed 1234)
#
# This runs tests/test_deploy.py::test_kill_9_during_deploy_many_trials (marked slow, so the
# normal test run only does the 5-trial test_kill_9_during_deploy_keeps_a_bootable_default).
# It builds a sysroot (admin init-fs, os-init) whose repository holds two OS commits with
# different kernels (usr/lib/modules/KVER/vmlinuz), deploys both once and times the deploy.
# Each trial then:
#   * starts a child process deploying 1.0 or 2.0 alternately and SIGKILLs it after a random
#     delay between 0 and 1.1 x the measured deploy time;
#   * checks that the default entry (boot/loader/entries) names a kernel and initrd that exist
#     and are non-empty under /boot, that its ostree= bootlink resolves to the default
#     deployment, and that this deployment is complete (its /usr/bin/hello and /etc/os.conf
#     belong to its version) with an .origin file;
#   * reruns the deploy in-process, which must succeed, make the requested version the
#     default, keep exactly two deployments, and leave no stray deployment directories,
#     boot directories or the other loader.N behind.
# At least one kill must have hit a running deploy.
#
# Needs: pytest (the repo's test dependencies); no real ostree. Extra pytest arguments can
# be given in $PYTEST_ARGS (e.g. PYTEST_ARGS="-s -x").
set -eu
cd "$(dirname "$0")/.."
TRIALS=${1:-100}
SEED=${2:-1234}
export PYOSTREE_KILL_TRIALS_SLOW="$TRIALS" PYOSTREE_KILL_SEED="$SEED"
# shellcheck disable=SC2086
exec python -m pytest -p no:xdist -m slow -o timeout=0 -q \
    tests/test_deploy.py -k test_kill_9_during_deploy_many_trials ${PYTEST_ARGS:-}
