"""Install the Debian packages the test suite's real peers need, when they are missing.

Idempotent and quick when everything is there. Needs root (or sudo) only to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# command (or a file of the package) -> Debian package providing it
NEEDED = {
    "dovecot": "dovecot-imapd",  # IMAP sync, delete, Sent copies
    "/usr/lib/dovecot/pop3": "dovecot-pop3d",  # POP3 sync and delete (no command on PATH)
    "chromium": "chromium",  # Flower's pages loaded in a headless browser
}


def main() -> int:
    missing = sorted(
        {
            pkg
            for cmd, pkg in NEEDED.items()
            if shutil.which(cmd) is None and not os.path.exists(f"/usr/sbin/{cmd}")
        }
    )
    if not missing:
        return 0
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing test peers: {' '.join(missing)}", file=sys.stderr)
    try:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    except (subprocess.CalledProcessError, FileNotFoundError):
        print(
            f"Could not install {' '.join(missing)}: install them with apt-get as root.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
