"""Build `.venv-litert`: the main environment plus slimfg[litert] on top.

litert-torch pins typing-extensions below 4.13 while executorch's dependencies need 4.14,
so the two extras cannot share one environment. This one reuses the main environment's
packages (torch and the rest, through a .pth file, so nothing large is installed twice)
and installs litert-torch, the LiteRT interpreter and their pins in front of them.

Usage: .venv/bin/python scripts/litert_env.py [FOLDER]   (default .venv-litert)
"""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".venv-litert").resolve()
    venv.create(folder, with_pip=True, clear=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "slimfg-main-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    print("pip may warn that executorch's cattrs wants typing-extensions>=4.14: expected, not used here")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[litert]"], check=True)


if __name__ == "__main__":
    main()
