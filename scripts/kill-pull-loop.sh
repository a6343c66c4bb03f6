#!/bin/sh
# Many SIGKILL trials of pyostree pulls: an interrupted pull must always leave a consistent
# repository, and a plain rerun must finish it.
#
#   scripts/kill-pull-loop.sh [TRIALS [SEED]]      (default: 100 trials, seed 2)
#
# This runs tests/test_pull.py::test_sigkill_loop_long (marked slow, so the normal test run
# only does the 3-trial test_sigkill_loop). Each trial:
#   * makes a fresh client repository (archive and bare-user alternately) with a GPG-verifying
#     remote, pointing at tests/httpserver.py serving an archive repository built by the real
#     `ostree` (two signed commits; each object answered after a 5 ms delay);
#   * starts `python -m pyostree pull --depth=1 origin main` and SIGKILLs it after a random
#     number of server requests, once or twice;
#   * after every kill checks that the ref did not move (unless the pull had already finished)
#     and that both `pyostree fsck` and the real `ostree fsck` pass;
#   * reruns the pull, which must succeed without any cleanup, and compares `ostree ls -R`
#     with the server.
# At the end at least half as many kills as trials must have hit a running pull.
#
# Needs: the real ostree and gpg, pytest (the repo's test dependencies). Extra pytest
# arguments can be given in $PYTEST_ARGS (e.g. PYTEST_ARGS="-s -x").
set -eu
cd "$(dirname "$0")/.."
TRIALS=${1:-100}
SEED=${2:-2}
export PYOSTREE_KILL_TRIALS="$TRIALS" PYOSTREE_KILL_SEED="$SEED"
# shellcheck disable=SC2086
exec python -m pytest -p no:xdist -m slow -o timeout=0 -q \
    tests/test_pull.py -k test_sigkill_loop_long ${PYTEST_ARGS:-}
