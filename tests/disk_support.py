"""A directory on a full disk, for the ENOSPC tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class full_disk:
    """`path` on a filesystem with no space left: a 1 MiB tmpfs filled up (root), else every write
    under `path` fails with ENOSPC the way the kernel reports it."""

    def __init__(self, path: Path, monkeypatch):
        self.path, self.mp, self.mounted = Path(path), monkeypatch, False

    def __enter__(self):
        import shutil
        import tempfile

        self.path.mkdir(parents=True, exist_ok=True)
        keep = Path(tempfile.mkdtemp())
        shutil.copytree(self.path, keep / "c", dirs_exist_ok=True)
        if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.path)],
                                                check=False, capture_output=True).returncode == 0:
            self.mounted = True
            try:
                shutil.copytree(keep / "c", self.path, dirs_exist_ok=True)
            except BaseException:
                subprocess.run(["umount", str(self.path)], check=True)
                raise
            fd = os.open(self.path / ".filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            # what remains (fs blocks) is not enough for a metrics JSON
        else:
            import builtins
            import errno

            real_open, root = builtins.open, self.path.resolve()

            def full_open(file, mode="r", *a, **kw):
                p = Path(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else None
                if p is not None and any(c in mode for c in "wax") and root in p.resolve().parents:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))
                return real_open(file, mode, *a, **kw)

            self.real_open = real_open
            builtins.open = full_open
        shutil.rmtree(keep)
        return self

    def __exit__(self, *exc):
        import shutil
        import tempfile

        if self.mounted:
            (self.path / ".filler").unlink()
            keep = Path(tempfile.mkdtemp())
            shutil.copytree(self.path, keep / "c")
            subprocess.run(["umount", str(self.path)], check=True)
            shutil.copytree(keep / "c", self.path, dirs_exist_ok=True)
            shutil.rmtree(keep)
        else:
            import builtins

            builtins.open = self.real_open
        return False
