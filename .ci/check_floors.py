"""Check that the floor environment holds exactly the floors setup.cfg admits.

Every direct requirement in setup.cfg (install_requires and every extra) must
have a lower bound, .ci/floors.txt must pin each at that bound, and the running
Python must have that version installed. So the floors CI tests cannot drift
from the floors setup.cfg declares. Run with the floor environment's Python.
"""

import configparser
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
cfg = configparser.ConfigParser()
cfg.read(ROOT / "setup.cfg")
lines = cfg["options"]["install_requires"].splitlines()
for extra in cfg["options.extras_require"].values():
    lines += extra.splitlines()

floors = {}  # name -> lowest admitted version
for line in filter(None, (line.strip() for line in lines)):
    req = Requirement(line)
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
    if not lows:
        sys.exit(f"setup.cfg: {line!r} has no lower bound")
    name = canonicalize_name(req.name)
    floors[name] = max(floors.get(name, lows[0]), *lows)

pins = {}
for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
        req = Requirement(line)
        pins[canonicalize_name(req.name)] = Version(str(req.specifier).lstrip("="))

problems = []
for name, low in sorted(floors.items()):
    if pins.get(name) != low:
        problems.append(f"{name}: setup.cfg admits >={low}, .ci/floors.txt pins {pins.get(name)}")
    elif Version(Version(version(name)).public) != low:  # 2.13.0+cpu is torch 2.13.0
        problems.append(f"{name}: floor {low}, installed {version(name)}")
problems += [f"{name}: pinned in .ci/floors.txt but not a requirement in setup.cfg"
             for name in pins.keys() - floors.keys()]
low_python = Version(cfg["options"]["python_requires"].lstrip(">="))
if Version(".".join(map(str, sys.version_info[:2]))) != low_python:
    problems.append(f"python_requires >={low_python}, running Python {sys.version.split()[0]}")
if problems:
    sys.exit("floor environment does not match setup.cfg:\n  " + "\n  ".join(problems))
print(f"floor environment: {len(floors)} direct requirements at their setup.cfg floors, Python {low_python}")
