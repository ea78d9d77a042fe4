"""Session setup for the fault suite: environment knobs, the shim, the binary.

Environment:
  RAFTKV_BIN            server to test (default <repo>/raftkv); copied once per
                        session so a rebuild during the run cannot mix versions
  FAULTS_SHIM           prebuilt shim/diskfault.so (the Makefile builds one);
                        without it the shim is compiled here with cc
  FAULTS_MODE           short (default) or long
  FAULTS_SEED           base seed (short default 1; long default: random,
                        printed); seed i of a long run is base + i
  FAULTS_CASE_SECONDS   short mode: nemesis time per fault kind (default 7)
  FAULTS_DURATION       long mode: total seconds to spend (default 600)
  FAULTS_ROUND          long mode: seconds of faults per seed (default 120)
  FAULTS_KINDS          comma-separated fault kinds to restrict to
  FAULTS_API            auto (default: probe the server), v1 or legacy
  FAULTS_ARTIFACTS      where run directories go (default <repo>/build/faults)
  FAULTS_KEEP=1         keep run directories of passing runs too
  RAFTKV_SANITIZED=1    the binary has ASan/UBSan (longer deadlines)

Tests that need hosts fail (with the reason) when not root or a tool
is missing; the checker's own tests always run.
"""

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hosts  # noqa: E402

REPO = HERE.parents[1]
MODE = os.environ.get("FAULTS_MODE", "short")
_seed_env = os.environ.get("FAULTS_SEED")
BASE_SEED = int(_seed_env) if _seed_env else (1 if MODE == "short" else
                                               random.SystemRandom().randrange(1, 10**6))
CASE_SECONDS = float(os.environ.get("FAULTS_CASE_SECONDS", "7"))
DURATION = float(os.environ.get("FAULTS_DURATION", "600"))
ROUND = float(os.environ.get("FAULTS_ROUND", "120"))
KINDS = [k for k in os.environ.get("FAULTS_KINDS", "").split(",") if k]


def pytest_collection_modifyitems(config, items):
    """Short mode runs test_fault[*], long mode test_long_mixed[*]: the other
    mode's tests are deselected, not skipped."""
    other = "test_long_mixed" if MODE == "short" else "test_fault["
    keep = [i for i in items if not i.name.startswith(other)]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


def pytest_report_header(config):
    return ("faults: mode %s, base seed %d, %s" % (
        MODE, BASE_SEED, ("%.0f s per fault kind" % CASE_SECONDS) if MODE == "short"
        else "%.0f s in rounds of %.0f s" % (DURATION, ROUND)))


@pytest.fixture(scope="session")
def env_ok():
    why = hosts.available()
    if why:
        pytest.fail("fault tests cannot run here: %s" % why, pytrace=False)
    hosts.cleanup_stale()
    return True


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def raftkv_bin(env_ok, session_dir):
    src = Path(os.environ.get("RAFTKV_BIN") or (REPO / "raftkv")).resolve()
    if not src.exists():
        pytest.fail("no raftkv binary at %s (run make)" % src, pytrace=False)
    dst = session_dir / "raftkv"
    shutil.copy2(src, dst)
    return dst


@pytest.fixture(scope="session")
def shim(env_ok, session_dir):
    pre = os.environ.get("FAULTS_SHIM")
    if pre:
        if not Path(pre).exists():
            pytest.fail("FAULTS_SHIM=%s does not exist" % pre)
        return Path(pre)
    out = session_dir / "diskfault.so"
    cc = os.environ.get("CC", "cc")
    p = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-o", str(out),
                        str(HERE / "shim" / "diskfault.c"), "-ldl"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        pytest.fail("building the diskfault shim failed:\n" + p.stdout.decode())
    return out


@pytest.fixture(scope="session")
def artifacts():
    base = Path(os.environ.get("FAULTS_ARTIFACTS") or (REPO / "build" / "faults"))
    base.mkdir(parents=True, exist_ok=True)
    return base


@pytest.fixture
def run_dir(artifacts, request):
    name = "%s-%s" % (time.strftime("%Y%m%d-%H%M%S"),
                      "".join(c if c.isalnum() or c in "-_" else "_"
                              for c in request.node.name)[:60])
    return artifacts / name
