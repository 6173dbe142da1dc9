#!/usr/bin/python3
"""A kernel without PSI (built without CONFIG_PSI, or booted with psi=0: no
/proc/pressure/memory): the daemon refuses to start, at once, with a message that names the
fix (psi=1, CONFIG_PSI=y), instead of running blind. The probed path is moved with the
test-only $AUTOBALLOON_TEST_PSI_PATH; with it present the daemon goes on (and fails later, for
want of a bus here, with another message). The unit asserts the same path."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402


def run(psi_path):
    exe = os.path.join(abtest.BUILDDIR, "controller/autoballoond")
    env = dict(os.environ, AUTOBALLOON_TEST_PSI_PATH=psi_path,
               DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent/autoballoon-test-bus")
    r = subprocess.run([exe, "--config=/dev/null"], env=env, capture_output=True, text=True, timeout=10)
    log("PSI probe %s: exit %d: %s" % (psi_path, r.returncode, r.stderr.strip()[-400:]))
    return r


def main():
    if not os.access(os.path.join(abtest.BUILDDIR, "controller/autoballoond"), os.X_OK):
        print("SKIP: no daemon built")
        sys.exit(abtest.SKIP)
    r = run("/nonexistent/pressure/memory")
    check(r.returncode == 1, "exit code %d without PSI, not 1" % r.returncode)
    for word in ("/nonexistent/pressure/memory", "psi=1", "CONFIG_PSI=y"):
        check(word in r.stderr, "the message does not name %r: %s" % (word, r.stderr))
    r = run("/proc/self/status")
    check("CONFIG_PSI" not in r.stderr, "refused although the PSI file exists: %s" % r.stderr)
    unit = open(os.path.join(abtest.SRCDIR, "units/autoballoond.service.in")).read()
    check("AssertPathExists=/proc/pressure/memory" in unit, "the unit does not assert /proc/pressure/memory")
    print("PASS: daemon-no-psi")


try:
    main()
except abtest.Fail as e:
    print("FAIL: %s" % e)
    sys.exit(1)
