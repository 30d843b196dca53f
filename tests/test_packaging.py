"""What reaches Dataflow: the sdist that `--setup_file` stages and workers
install, the wheel, and the Flex Template files (image, entry point, metadata)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import apache_beam
import pytest

from pipeline.local.samples import write_archive
from pipeline.options import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(REPO, 'pipeline', 'templates')
# What setup.py reads besides the packages themselves.
BUILD_FILES = ('setup.py', 'MANIFEST.in', 'README.md')
STAGES = ('core', 'segment', 'mapping', 'contacts', 'loops', 'delivery', 'state')


def checkout_packages() -> list:
    """Every package of the checkout (directories with an __init__.py), tests aside."""
    packages = []
    for top in sorted(os.listdir(REPO)):
        if top == 'tests' or not os.path.isfile(os.path.join(REPO, top, '__init__.py')):
            continue
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            if '__init__.py' in files:
                packages.append(os.path.relpath(folder, REPO).replace(os.sep, '/'))
    return packages


def expected_files() -> set:
    """Paths (relative to the package root) every distribution must hold:
    each package's modules and its Avro schemas."""
    wanted = set()
    for package in checkout_packages():
        for name in os.listdir(os.path.join(REPO, package)):
            if name.endswith(('.py', '.avsc')):
                wanted.add(f'{package}/{name}')
    return wanted


@pytest.fixture(scope='module')
def distributions(tmp_path_factory):
    """(sdist path, wheel path) built offline from a copy of the checkout."""
    source = tmp_path_factory.mktemp('source')
    for name in BUILD_FILES:
        shutil.copy(os.path.join(REPO, name), source)
    for package in {p.split('/')[0] for p in checkout_packages()}:
        shutil.copytree(os.path.join(REPO, package), source / package,
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    dist = tmp_path_factory.mktemp('dist')
    # No network here: no isolated build environment, the venv's setuptools.
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir', str(dist)],
                   cwd=source, check=True, capture_output=True)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', '--wheel-dir', str(dist), str(source)],
                   check=True, capture_output=True)
    (sdist,) = dist.glob('*.tar.gz')
    (wheel,) = dist.glob('*.whl')
    return sdist, wheel


def test_the_checkout_has_the_packages_workers_need():
    assert {'pipeline', 'pipeline/local', 'transforms', 'schemas'} | {
        f'transforms/{stage}' for stage in STAGES} <= set(checkout_packages())
    assert {'schemas/failure.avsc', 'schemas/segment_event.avsc'} <= expected_files()


def test_sdist_holds_every_package_module_and_schema(distributions):
    sdist, _ = distributions
    with tarfile.open(sdist) as archive:
        # <name>-<version>/<path>
        names = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
    assert expected_files() - names == set()
    assert 'setup.py' in names


def test_wheel_holds_every_package_module_schema_and_the_command(distributions):
    _, wheel = distributions
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith('.dist-info/entry_points.txt'))
    assert expected_files() - names == set()
    assert 'segment-loops = pipeline.cli:main' in entry_points


def test_installed_wheel_loads_its_schemas_away_from_the_checkout(distributions, tmp_path):
    _, wheel = distributions
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--target', str(target), str(wheel)], check=True, capture_output=True)
    script = ('import schemas, pipeline.backfill, pipeline.stream\n'
              'print(schemas.__file__)\n'
              'print(schemas.load_schema("failure")["name"], '
              'schemas.load_schema("segment_event")["name"])\n')
    # -I: isolated mode, so neither the checkout nor the editable install is on sys.path.
    result = subprocess.run([sys.executable, '-I', '-c', f'import sys; sys.path.insert(0, '
                             f'{str(target)!r})\n' + script],
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    location, names = result.stdout.splitlines()
    assert location.startswith(str(target))
    assert names == 'segment_loops.Failure segment_loops.SegmentEvent'


# ---- Flex Templates

@pytest.fixture(scope='module')
def templates():
    """pipeline/templates' scripts, imported as modules (they are not a package)."""
    sys.path.insert(0, TEMPLATES)
    try:
        import launch
        import metadata
        yield metadata, launch
    finally:
        sys.path.remove(TEMPLATES)


@pytest.mark.parametrize('command', ['backfill', 'stream'])
def test_metadata_files_are_generated_from_the_current_options(templates, command):
    metadata, launch = templates
    with open(metadata.metadata_path(command), encoding='utf-8') as f:
        written = f.read()

    assert written == metadata.metadata_text(command), (
        'stale: run `python pipeline/templates/metadata.py`')
    parser = metadata.TEMPLATES[command].parser()
    parameters = {p['name']: p for p in json.loads(written)['parameters']}
    options = {a.option_strings[0]: a for a in launch.job_options(parser)}
    assert {f'--{name}' for name in parameters} == set(options)
    for name, parameter in parameters.items():
        assert parameter['helpText'].startswith(' '.join(options[f'--{name}'].help.split()))
        assert parameter['label'] and isinstance(parameter['isOptional'], bool)


def test_metadata_marks_required_inputs_and_validates_values(templates):
    metadata, _ = templates
    backfill = {p['name']: p for p in metadata.template_metadata(
        metadata.TEMPLATES['backfill'])['parameters']}
    stream = metadata.template_metadata(metadata.TEMPLATES['stream'])

    assert [n for n, p in backfill.items() if not p['isOptional']] == ['input']
    assert backfill['resubscribe']['regexes'] == ['^(true|false)$']
    assert backfill['unknown_properties']['regexes'] == ['^(send|drop|fail)$']
    assert re.match(backfill['write_shards']['regexes'][0], '4')
    assert not re.match(backfill['rate_limit']['regexes'][0], 'ten')
    assert backfill['loops_api_key_secret']['label'] == 'Loops API key secret'
    assert stream['streaming'] is True and all(p['isOptional'] for p in stream['parameters'])


@pytest.mark.parametrize('argv, expected', [
    (['--input=gs://b/*.gz'], ['--input=gs://b/*.gz', '--runner=DataflowRunner']),
    (['--a_flag=true', '--project=p'], ['--a_flag', '--project=p', '--runner=DataflowRunner']),
    (['--a_flag=FALSE'], ['--runner=DataflowRunner']),
    (['--a_flag'], ['--a_flag', '--runner=DataflowRunner']),
    (['--resubscribe=true'], ['--resubscribe=true', '--runner=DataflowRunner']),
    (['--runner=DirectRunner'], ['--runner=DirectRunner']),
    (['--runner', 'DirectRunner'], ['--runner', 'DirectRunner']),
])
def test_template_arguments_become_job_arguments(templates, argv, expected):
    _, launch = templates
    assert launch.template_argv(argv, frozenset({'--a_flag'})) == expected


def test_a_flag_with_another_value_is_a_usage_error(templates):
    _, launch = templates
    with pytest.raises(UsageError, match='--a_flag: expected true or false'):
        launch.template_argv(['--a_flag=yes'], frozenset({'--a_flag'}))


@pytest.mark.parametrize('command, argv, message', [
    ('backfill', ['--dry_run=gs://b/out'], '--input is required'),
    ('stream', ['--types=page'], '--subscription (or --topic) is required'),
    ('replay', [], 'SEGMENT_LOOPS_COMMAND must be one of backfill, stream'),
])
def test_launcher_reports_usage_errors_with_status_2(templates, capsys, command, argv,
                                                     message):
    _, launch = templates
    assert launch.main(argv, command=command) == 2
    assert message in capsys.readouterr().err


def test_launcher_submits_a_backfill_with_template_style_arguments(templates, tmp_path, capsys):
    _, launch = templates
    archive = write_archive(str(tmp_path / 'archive'), users=4, days=1, seed=3)
    out = tmp_path / 'out'

    # The local runner stands in for Dataflow: it runs the job inside run().
    status = launch.main([f'--input={archive.root}/segment-logs/*/*/*.gz',
                          '--types=identify', '--resubscribe=true', f'--dry_run={out}/requests',
                          f'--dead_letter={out}/dl/', '--runner=FnApiRunner'],
                         command='backfill')

    assert status == 0 and 'job submitted' in capsys.readouterr().out
    requests = [json.loads(line) for path in out.glob('requests*') for line in open(path)]
    # --resubscribe=true reached the job: the subscribed: true of the first
    # generated user (a backfill holds it back by default) is sent.
    assert 0 < len(requests)
    assert any(r['body'].get('subscribed') is True for r in requests)


def dockerfile() -> str:
    with open(os.path.join(TEMPLATES, 'Dockerfile'), encoding='utf-8') as f:
        return f.read()


def test_image_uses_the_beam_version_the_package_pins():
    sdk_images = re.findall(r'^FROM apache/beam_python3\.11_sdk:(\S+)', dockerfile(), re.M)
    assert sdk_images == [apache_beam.__version__]


def test_image_copies_every_package_and_points_the_launcher_at_real_files():
    text = dockerfile()
    workdir = re.search(r'^ARG WORKDIR=(\S+)', text, re.M).group(1)
    copied = set(re.findall(r'^COPY (\w+) \1$', text, re.M))
    assert {p.split('/')[0] for p in checkout_packages()} <= copied
    for name in BUILD_FILES:
        assert re.search(rf'^COPY .*\b{re.escape(name)}\b', text, re.M)
    for variable in ('FLEX_TEMPLATE_PYTHON_PY_FILE', 'FLEX_TEMPLATE_PYTHON_SETUP_FILE'):
        path = re.search(rf'{variable}=\$\{{WORKDIR\}}/(\S+)', text).group(1)
        assert os.path.isfile(os.path.join(REPO, path)), (variable, workdir, path)
