"""Proving, before a job sends anything, that it can write its outputs.

A job that cannot write its sync state, dead letter or files finds out only
when it first writes there, after it has sent requests whose record or
failures are then lost (and each retry sends them again). So every output
prefix is proven first: a small probe object is written where the job's
files go, then deleted, through the same Beam file system. A prefix that
cannot take it stops the job with one line naming the option, the path and
the error.
"""
import uuid
from typing import Mapping, Optional

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import UsageError
from transforms.core.sinks import output_prefix

PROBE_NAME = '.segment-loops-write-probe'


def probe_path(prefix: str, folder: bool) -> str:
    """Where the probe of an output goes: in the folder (`folder`, as the
    sync state is), else where the job's files go (`output_prefix`)."""
    name = f'{PROBE_NAME}-{uuid.uuid4().hex[:12]}'
    if folder:
        return FileSystems.join(prefix.rstrip('/') or '/', name)
    return output_prefix(prefix, name) if prefix.endswith('/') else f'{prefix}{name}'


def require_writable(options: PipelineOptions, outputs: Mapping[str, Optional[str]],
                     folders=('--state',)) -> None:
    """Writes and deletes a probe under each output (option -> prefix, None
    skipped) with the job's file system `options`; UsageError naming the
    first that cannot be written. Options in `folders` are folders (their
    files go inside)."""
    FileSystems.set_options(options)
    for option, prefix in outputs.items():
        if prefix:
            probe(option, prefix, option in folders)


def probe(option: str, prefix: str, folder: bool) -> None:
    path = probe_path(prefix, folder)
    try:
        with FileSystems.create(path, mime_type='text/plain') as out:
            out.write(b'segment-loops checks that it can write here; delete me if I stay.\n')
        FileSystems.delete([path])
    except Exception as error:   # any file system's, in its own words: the line says which
        raise UsageError(f'{option} {prefix}: cannot write there ({reason(error)}); nothing '
                         'was sent') from None


def reason(error: Exception) -> str:
    """The innermost error's text: Beam wraps a file system's error in
    BeamIOError with a dict of details."""
    if isinstance(error, BeamIOError) and error.exception_details:
        error = next(iter(error.exception_details.values()))
    while isinstance(error, Exception) and isinstance(error.__cause__, Exception):
        error = error.__cause__
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
