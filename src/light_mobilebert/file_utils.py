"""Writing output folders all at once: a command that fails half-way leaves nothing behind."""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


__all__ = ["staged_folder"]


@contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """
    Yields an empty folder next to `output` to write into, and renames it to `output` when the block succeeds.

    An existing `output` is replaced at that moment (callers refuse to overwrite before doing any work); if the block
    raises, the staging folder is removed and `output` is left as it was. The staging folder sits in the same parent
    folder, so the final rename does not copy anything.

    Args:
        output (`Path`):
            The folder to produce; its parent folders are created.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
